"""One AMQP connection to the broker (pika's ``TwistedProtocolConnection``) and
the mailboxes the backend sends and receives its messages through.

pika does the AMQP 0-9-1 framing; Twisted dials the broker (a client endpoint
made from the URL's host and port, TLS for ``amqps``).  A :class:`BrokerLink`
tells its owner once, through ``on_lost``, that the connection is gone.

A :class:`Mailbox` is one channel with publisher confirms: :meth:`Mailbox.send`
publishes one logical message (split into parts of at most :data:`PART` bytes,
so any value fits under the broker's frame and message limits) and fires when
the broker confirmed its last part; a message no queue takes (``mandatory``)
fails with :class:`Unroutable`.  :meth:`Mailbox.consume` delivers whole
messages, parts joined again, in the order they were published.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import pika
from pika.adapters.twisted_connection import TwistedChannel, TwistedProtocolConnection
from pika.exceptions import NackError, UnroutableError
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire.endpoints import client_from_string
from workerwire.errors import ConnectionLost, ProtocolError
from workerwire.parts import Reassembly, split

from . import wire
from .address import BrokerURL

__all__ = ["BrokerLink", "Mailbox", "Message", "Unroutable", "PART", "connect"]

_log = Logger()

#: Largest body of one AMQP message we publish; a larger logical message goes
#: as several (pika splits each into frames of the negotiated frame_max).
PART = 1024 * 1024


class Unroutable(ConnectionLost):
    """The queue a message was addressed to does not exist: its owner is gone."""


class Message:
    """One logical message as received: its kind, properties and whole body
    (or, from a consumer that does not join parts, one part: :attr:`more`
    says that more parts follow)."""

    __slots__ = ("kind", "reply_to", "correlation_id", "body", "more")

    def __init__(self, kind: str, reply_to: str | None, correlation_id: str | None, body: bytes,
                 more: bool = False):
        self.kind = kind
        self.reply_to = reply_to
        self.correlation_id = correlation_id
        self.body = body
        self.more = more


class _Protocol(TwistedProtocolConnection):
    def __init__(self, parameters: pika.ConnectionParameters, link: "BrokerLink"):
        super().__init__(parameters)
        self.link = link

    def connectionLost(self, reason: Failure | None = None) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.link._transport_lost(reason)


class BrokerLink:
    """One connection to the broker."""

    def __init__(self, broker: BrokerURL, reactor: Any, name: str):
        self.broker = broker
        self.reactor = reactor
        self.name = name
        self.proto: _Protocol | None = None
        self.lost: str | None = None
        self._on_lost: list[Callable[[str], None]] = []

    def describe(self) -> str:
        return f"{self.broker.host}:{self.broker.port}"

    def on_lost(self, callback: Callable[[str], None]) -> None:
        if self.lost is not None:
            self.reactor.callLater(0, callback, self.lost)
        else:
            self._on_lost.append(callback)

    async def open(self) -> "BrokerLink":
        params = self.broker.parameters()
        params.client_properties = {"connection_name": self.name, "product": "workerwire-amqp"}
        scheme = "tls" if self.broker.tls else "tcp"
        endpoint = client_from_string(self.reactor, f"{scheme}:host={self.broker.host}:port={self.broker.port}")
        factory = Factory.forProtocol(lambda: _Protocol(params, self))
        proto = await endpoint.connect(factory)
        self.proto = proto
        ready = proto.ready
        if ready is not None:
            await ready
        return self

    async def channel(self) -> TwistedChannel:
        if self.proto is None or self.lost is not None:
            raise ConnectionLost(f"no connection to the broker at {self.describe()}: {self.lost}")
        return await self.proto.channel()

    def _transport_lost(self, reason: Failure | None) -> None:
        if self.lost is not None:
            return
        why = reason.getErrorMessage() if reason is not None else "closed"
        self.lost = f"connection to the broker at {self.describe()} lost: {why}"
        callbacks, self._on_lost = self._on_lost, []
        for cb in callbacks:
            try:
                cb(self.lost)
            except Exception:
                _log.failure("on_lost callback of {name} raised", name=self.name)

    def close(self) -> None:
        """AMQP close (the broker then closes the socket)."""
        if self.proto is not None and self.lost is None:
            try:
                self.proto.close()
            except Exception:
                self.abort()

    def abort(self) -> None:
        """Drop the socket at once (a peer believed dead)."""
        transport = getattr(self.proto, "transport", None)
        if transport is not None and self.lost is None:
            transport.abortConnection()


async def connect(broker: BrokerURL, reactor: Any, name: str) -> BrokerLink:
    return await BrokerLink(broker, reactor, name).open()


class Mailbox:
    """A channel with publisher confirms that sends and receives whole messages."""

    def __init__(self, channel: TwistedChannel, max_message_size: int, owner: str):
        self.channel = channel
        self.max_message_size = max_message_size
        self.owner = owner
        #: Messages arriving in parts, by sender (``reply_to``).
        self._partial: dict[str | None, Reassembly] = {}
        self.closed = False
        #: Called with every ``seen`` header received (paused or not).
        self.on_seen: Callable[[int], None] | None = None
        #: Deliveries are held (unacked, so the broker keeps the rest) while paused.
        self.paused = False
        self._held: list[tuple[Any, _Consumer]] = []

    @classmethod
    async def open(cls, link: BrokerLink, max_message_size: int, owner: str) -> "Mailbox":
        channel = await link.channel()
        await channel.confirm_delivery()
        return cls(channel, max_message_size, owner)

    # -- sending ---------------------------------------------------------------

    def send(self, queue: str, kind: str, body: bytes, correlation_id: str | None = None,
             reply_to: str | None = None, seen: int | None = None,
             expires: float | None = None) -> Deferred[None]:
        """Publish one message to *queue* (default exchange, mandatory, transient);
        *seen* goes in its ``seen`` header (the sender's receipt count); a
        message not taken within *expires* seconds is dropped by the broker
        (the AMQP ``expiration`` property)."""
        expiration = None if expires is None else str(max(1, int(expires * 1000)))
        if self.closed or not self.channel.is_open:
            return _failed(ConnectionLost(f"{self.owner}: the channel to the broker is closed"))
        pieces = [bytes(part) for part in split(body, PART)] if len(body) > PART else [body]
        count = len(pieces)
        last: Deferred[Any] = succeed(None)
        try:
            for index, piece in enumerate(pieces):
                headers: dict[str, Any] | None = {"more": index + 1 < count} if count > 1 else None
                if seen is not None:
                    headers = dict(headers or {}, seen=seen)
                props = pika.BasicProperties(
                    type=kind, correlation_id=correlation_id, reply_to=reply_to, delivery_mode=1,
                    headers=headers, expiration=expiration)
                last = self.channel.basic_publish("", queue, piece, props, mandatory=True)
                if index + 1 < count:
                    last.addErrback(lambda f: None)  # the last part's confirm reports the message
        except Exception as e:
            return _failed(ConnectionLost(f"{self.owner}: cannot publish: {e}"))
        return last.addCallbacks(lambda _: None, self._publish_failed, errbackArgs=(queue,))

    def _publish_failed(self, failure: Failure, queue: str) -> Failure:
        if failure.check(UnroutableError):
            return Failure(Unroutable(f"{self.owner}: queue {queue} is gone (its owner left the broker)"))
        if failure.check(NackError):
            return Failure(ConnectionLost(f"{self.owner}: the broker refused a message for {queue}"))
        if failure.check(ConnectionLost):
            return failure
        return Failure(ConnectionLost(f"{self.owner}: {failure.getErrorMessage() or type(failure.value).__name__}"))

    # -- receiving ---------------------------------------------------------------

    def consume(self, queue: str, prefetch: int, deliver: Callable[[Message], None],
                on_error: Callable[[str], None], join_parts: bool = True) -> Deferred[None]:
        """Consume *queue*; whole messages go to *deliver* in order.  A protocol
        error (oversized or malformed parts) goes to *on_error*.  With
        *join_parts* false, every AMQP message goes to *deliver* as it came,
        parts not joined (``Message.more``) and of any size: the receiver
        bounds them (the login queue, whose senders are not logged in)."""
        return ensureDeferred(self._consume(queue, prefetch, _Consumer(deliver, on_error, join_parts)))

    async def _consume(self, queue: str, prefetch: int, consumer: "_Consumer") -> None:
        await self.channel.basic_qos(prefetch_count=prefetch)
        incoming, _tag = await self.channel.basic_consume(queue=queue, auto_ack=False)
        ensureDeferred(self._pump(incoming, consumer)).addErrback(
            lambda f: _log.failure("{owner}: consumer of {queue} failed", f, owner=self.owner, queue=queue))

    async def _pump(self, incoming: Any, consumer: "_Consumer") -> None:
        while True:
            try:
                received = await incoming.get()
            except Exception:
                return  # the channel closed; its owner hears it from the link
            headers = received.properties.headers or {}
            seen = headers.get("seen")
            if isinstance(seen, int) and not isinstance(seen, bool) and self.on_seen is not None:
                self.on_seen(seen)
            if received.properties.type == wire.SEEN:
                self.channel.basic_ack(received.method.delivery_tag)
                continue  # a receipt report only: nothing to deliver, even while paused
            if self.paused or self._held:
                self._held.append((received, consumer))
                continue
            self._take(received, consumer)

    def pause(self) -> None:
        """Deliver nothing more (receipt reports still count) until :meth:`resume`."""
        self.paused = True

    def resume(self) -> None:
        """Deliver what was held, in order, unless delivering pauses again."""
        self.paused = False
        while self._held and not self.paused and not self.closed:
            received, consumer = self._held.pop(0)
            self._take(received, consumer)

    def _take(self, received: Any, consumer: "_Consumer") -> None:
        """Ack one delivery and deliver its message (once its last part is in)."""
        if self.closed or not self.channel.is_open:
            return
        self.channel.basic_ack(received.method.delivery_tag)
        props = received.properties
        key = props.reply_to
        headers = props.headers or {}
        body = received.body
        deliver, on_error = consumer.deliver, consumer.on_error
        if not consumer.join_parts:
            self._deliver(deliver, on_error, Message(props.type or "", props.reply_to, props.correlation_id, body,
                                                     bool(headers.get("more"))))
            return
        if "more" in headers or key in self._partial:
            partial = self._partial.setdefault(key, Reassembly(self.max_message_size))
            try:
                partial.add(body)
            except ProtocolError as e:
                del self._partial[key]
                on_error(f"{e} (max_message_size)")
                return
            if headers.get("more"):
                return
            body = self._partial.pop(key).join()
        elif len(body) > self.max_message_size:
            on_error(f"message of {len(body)} bytes exceeds max_message_size {self.max_message_size}")
            return
        self._deliver(deliver, on_error, Message(props.type or "", props.reply_to, props.correlation_id, body))

    def _deliver(self, deliver: Callable[[Message], None], on_error: Callable[[str], None], msg: Message) -> None:
        try:
            deliver(msg)
        except ProtocolError as e:
            on_error(str(e))
        except Exception:
            _log.failure("{owner}: handling a {kind} message raised", owner=self.owner, kind=msg.kind)

    def close(self) -> None:
        self.closed = True
        if self.channel.is_open:
            try:
                self.channel.close()
            except Exception:
                pass


class _Consumer(NamedTuple):
    """Where one consumer's messages go (see :meth:`Mailbox.consume`)."""

    deliver: Callable[[Message], None]
    on_error: Callable[[str], None]
    join_parts: bool


def _failed(error: BaseException) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    d.errback(Failure(error))
    return d
