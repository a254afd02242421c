"""The amqp backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
``basic.publish`` frames built by hand, written to a broker connection as
they are.

**Logged in** (:class:`AMQPRawFrames` of a connector): the worker's broker
connection taken over from its connector.  pika parses nothing more on it:
every byte the broker delivers (the master's answers, the broker's publisher
confirms) is only counted.  What the test writes goes on the session's
channel to the master's session queue with the worker's ``reply_to`` (so the
master takes it as the worker's message).

**Before the login** (:func:`raw_connect`): an amqp master holds no
connection of a worker, only what comes through the pool's login queue, so
the fresh link is a raw AMQP client of its own (pika, as the backend's) with
a reply queue, that has *started a login request*: its first part
(``headers.more``, the first byte of a login map) is in the login queue, and
the master holds it as a TCP master holds a connection that has not finished
its login (``workerwire_amqp.login_queue``).  The kinds go to the login
queue with the same ``reply_to``: ``garbage`` is the request's last part,
not MessagePack; ``oversized`` more parts past the pre-login limit; ``update``
a message of another kind; ``login`` the rest of the request.  The master
"closes" the link by answering ``refused`` to the reply queue (the end of
the attempt, as for a worker): then :attr:`closed` fires and the client
closes its broker connection.

The unit of the dialect is the AMQP message: "garbage" is a message whose body
is not the dialect's encoding (bytes that break AMQP's own framing reach the
broker, which closes the connection, not the master).
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import pika
from pika import frame, spec
from twisted.internet.defer import Deferred, ensureDeferred

from workerwire.conformance.raw_frames import TransportRawFrames, noise
from workerwire.login_guard import MAX_LOGIN_INPUT

from . import wire
from .address import parse_dial, queue_name
from .broker import BrokerLink, Mailbox, Message, connect

__all__ = ["AMQPRawFrames", "raw_connect"]

#: Body bytes per content frame: 4096 (the smallest ``frame_max`` a broker
#: may negotiate) minus the frame's own 8 bytes, so any broker takes them.
BODY_FRAME = 4096 - 8
#: The first part of the fresh link's login request: a map of 4 entries so far.
OPENING = b"\x84"


class AMQPRawFrames(TransportRawFrames):
    """Takes over ``connector._session.link`` (its input is only counted), or
    none (*connector* ``None``: :func:`raw_connect` sets it up)."""

    def __init__(self, connector: Any = None):
        super().__init__()
        self._ids = itertools.count(10_000_000)
        #: A fresh link (not logged in): writes go to the pool's login queue.
        self.fresh = connector is None
        self.link: BrokerLink | None = None
        if connector is None:
            return
        session = getattr(connector, "_session", None)
        if session is None or getattr(session, "master_queue", None) is None:
            raise RuntimeError("the amqp connector has not logged in")
        self.proto = session.link.proto
        self.transport = self.proto.transport
        self.channel_number: int = session.box.channel.channel_number
        self.master_queue: str = session.master_queue
        self.reply_to: str = session.queue
        self.proto.dataReceived = self.count  # pika parses nothing more on this connection
        self.proto.connectionLost = self.closing_too(self.proto.connectionLost)

    def _publish(self, kind: str, body: bytes, more: bool | None = None) -> bytes:
        """``basic.publish`` + content header + body frames of one message
        (*more*: a part of a larger one, ``headers.more``)."""
        props = pika.BasicProperties(type=kind, correlation_id=str(next(self._ids)), reply_to=self.reply_to,
                                     delivery_mode=1, headers=None if more is None else {"more": more})
        n = self.channel_number
        frames = [frame.Method(n, spec.Basic.Publish(exchange="", routing_key=self.master_queue)).marshal(),
                  frame.Header(n, len(body), props).marshal()]
        for start in range(0, len(body), BODY_FRAME):
            frames.append(frame.Body(n, body[start:start + BODY_FRAME]).marshal())
        return b"".join(frames)

    def request(self, name: str) -> bytes:
        return self._publish(wire.UPDATE, msgpack.packb([name, []]))

    def nested_update(self, command_id: str, depth: int) -> bytes:
        value = b"\x91" * (depth - 1) + b"\x90"
        body = b"\x92" + msgpack.packb(command_id) + b"\x91\x92" + msgpack.packb("stdout") + value
        return self._publish(wire.UPDATE, body)

    def login(self, name: str, password: str) -> bytes:
        body = msgpack.packb({"name": name, "password": password, "peer": "raw", "version": wire.PROTOCOL_VERSION})
        if self.fresh:  # the rest of the request under way (its first byte was the opening)
            assert body[:1] == OPENING
            return self._publish(wire.LOGIN, body[1:], more=False)
        return self._publish(wire.LOGIN, body)

    def update(self, command_id: str, payload_size: int) -> bytes:
        return self._publish(wire.UPDATE, msgpack.packb([command_id, [["stdout", "x" * payload_size]]]))

    def complete(self, command_id: str) -> bytes:
        return self._publish(wire.COMPLETE, msgpack.packb([command_id, None]))

    def oversized(self, size: int) -> bytes:
        # A map entry whose string announces *size* bytes: valid so far, and more parts to come.
        body = msgpack.packb("name") + b"\xdb" + size.to_bytes(4, "big") + b"x" * size
        return self._publish(wire.LOGIN if self.fresh else wire.UPDATE, body, more=True)

    def garbage(self, n: int) -> bytes:
        body = b"\xc1" + noise(n)  # 0xc1: never used in MessagePack
        if self.fresh:  # the login request's last part
            return self._publish(wire.LOGIN, body, more=False)
        return self._publish(wire.UPDATE, body)

    # -- the fresh link's answers ------------------------------------------------

    def _answer(self, msg: Message) -> None:
        """What the master answers to the reply queue: counted; ``refused``
        (or ``bye``) ends the attempt."""
        self.count(msg.body)
        if msg.kind in (wire.REFUSED, wire.BYE):
            self.link_closed()
            if self.link is not None:
                self.link.close()


async def _connect_fresh(address: str, reactor: Any) -> AMQPRawFrames:
    dial = parse_dial(address)
    frames = AMQPRawFrames()
    link = await connect(dial.broker, reactor, f"workerwire raw client pool {dial.pool}")
    try:
        # No publisher confirms on this channel: the broker acks nothing pika did not publish.
        channel = await link.channel()
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
        frames.link = link
        frames.proto = link.proto
        frames.transport = link.proto.transport if link.proto is not None else None
        frames.channel_number = channel.channel_number
        frames.master_queue = queue_name(dial.pool, "login")
        frames.reply_to = declared.method.queue
        link.on_lost(frames.link_closed)
        await Mailbox(channel, MAX_LOGIN_INPUT, "raw amqp client").consume(
            frames.reply_to, 16, frames._answer, lambda why: frames.link_closed())
    except BaseException:
        link.abort()
        raise
    frames.write(frames._publish(wire.LOGIN, OPENING, more=True))
    return frames


def raw_connect(address: str, reactor: Any) -> Deferred[AMQPRawFrames]:
    """A raw client of the broker at *address* that has started a login request (see the module)."""
    return ensureDeferred(_connect_fresh(address, reactor))
