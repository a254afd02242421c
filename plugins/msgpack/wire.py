"""One msgpack-over-WebSocket link: requests by ``seq_number``, their answers,
the workerwire extension's parts, and closing (``docs/protocols/msgpack.md``).

:class:`MessageLink` is mixed into an autobahn protocol (server or client);
the master's and the worker's protocols give their handlers in the class
table :attr:`MessageLink.handlers` (``op`` -> function taking the protocol and
the message and returning the result, a Deferred of it, or raising).

Every WebSocket message is one MessagePack map, binary.  Between two
workerwire ends (negotiated in the HTTP upgrade, see :data:`DIALECT_HEADER`)
an encoded message larger than :data:`PART_SIZE` travels as ``ww_part``
messages of at most that many bytes each, reassembled up to
``LinkOptions.max_message_size``; a stock Buildbot peer never sees a part.

What the link does with its transport is core's
:class:`~workerwire.stream_link.StreamLink` (:attr:`MessageLink.stream`),
as on every stream backend; autobahn owns the transport's callbacks, so
MessageLink calls the stream from them: ``made`` when the connection is
made, ``take`` and ``after_read`` around each read (not each message),
``gone`` when it is lost.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import msgpack
from autobahn.wamp.types import TransportDetails
from txaio.tx import make_logger
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from workerwire.backend import LinkOptions
from workerwire.errors import ConnectionLost, ProtocolError
from workerwire.parts import Reassembly, split
from workerwire.pending import PendingRequests, serve_request
from workerwire.stream_link import StreamLink
from workerwire.values import decode

from .errors import RemoteError, describe_loss, error_fields, error_from_answer

__all__ = [
    "MessageLink",
    "DIALECT_HEADER",
    "DIALECT_VERSION",
    "WINDOW_HEADER",
    "MAX_MESSAGE_HEADER",
    "PART_SIZE",
    "PART_OP",
    "CLOSE_REFUSED",
    "CLOSE_PROTOCOL_ERROR",
    "FRAMING_LEVELS",
]

#: Request and answer header of the workerwire extension; its value is the version.
DIALECT_HEADER = "X-Workerwire-Dialect"
DIALECT_VERSION = "1"
#: Answer header: the master's flow-control window in bytes.
WINDOW_HEADER = "X-Workerwire-Window"
#: Request and answer header: the largest message (reassembled) the sender accepts.
MAX_MESSAGE_HEADER = "X-Workerwire-Max-Message-Size"
#: Largest WebSocket message one workerwire end sends another.
PART_SIZE = 1024 * 1024
#: Slack above PART_SIZE for a part's own map and keys.
_PART_SLACK = 1024
PART_OP = "ww_part"
#: WebSocket close code: the login was refused after the upgrade (the reason says why).
CLOSE_REFUSED = 4003
#: WebSocket close code: the peer broke the dialect.
CLOSE_PROTOCOL_ERROR = 4002
#: Levels of a message that are its framing, not contract values: the map,
#: an update's ``args`` list and each ``[key, value]`` pair in it.  They do not
#: count toward the nesting limit, so an update's value may nest 256 levels
#: counted from itself, as on every backend (``workerwire.values.decode``).
#: One allowance for every message, as the null backend has: a value in a
#: shallower field (a command's ``args`` map) gets the levels it does not use.
FRAMING_LEVELS = 3


#: What autobahn keeps of the HTTP upgrade and reads only during it.
_UPGRADE_LEFTOVERS = ("http_headers", "http_request_data", "http_response_data", "http_status_line",
                      "http_request_params")

#: One packer for every message (``msgpack.packb`` builds one per call); it
#: resets itself after each message, also when packing fails.
_pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack


class _AutobahnLog:
    """autobahn's per-connection log, errors only.

    autobahn logs every failed upgrade and unclean drop (``warn`` / ``info``):
    under a flood of bad logins that is a line per connection, bypassing the
    login guard's rate-limited log, which already says what matters.
    """

    def __init__(self) -> None:
        self._log = make_logger()  # txaio.make_logger once autobahn chose Twisted

    def __getattr__(self, level: str) -> Any:
        if level in ("error", "critical", "failure"):
            return getattr(self._log, level)
        return _ignore


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


class MessageLink:
    """Requests, answers and parts over an autobahn WebSocket protocol."""

    log = _AutobahnLog()

    side = "?"
    #: What this side answers: ``op`` -> function of (the protocol, the
    #: message) returning the result, a Deferred of it, or raising.  One
    #: table per class, not per connection (a master holds thousands).
    handlers: ClassVar[dict[str, Callable[[Any, dict[str, Any]], Any]]] = {}
    #: Set from the upgrade: the peer speaks the workerwire extension.
    extended = False
    #: Called for every read from the peer (keepalive bookkeeping).
    on_traffic: Callable[[], None] = staticmethod(lambda: None)

    # Set by the autobahn protocol this is mixed into (declared for the type checker).
    #: A TCP transport or workerwire.tls's wrapper: both abort and pause.
    transport: Any
    #: As autobahn's Twisted adapter declares them.  Its generic WebSocketProtocol
    #: declares them otherwise (``peer: str``, an Optional ``_transport_details``),
    #: so a protocol mixing this in ignores that [misc] conflict between autobahn's bases.
    peer: str | None
    _transport_details: TransportDetails

    def link_setup(self, options: LinkOptions, clock: Any, stats: Any = None) -> None:
        """Call it from the protocol's ``__init__``; *stats*: the counters the
        send budget adds to (a master passes its listener's ``login_guard.stats``)."""
        self.options = options
        self.clock = clock
        #: The transport's plumbing: the peer's name, TCP keepalive and no
        #: delay, the allocator primed, a plain TCP socket read 256 KiB at a
        #: time from the start (a 1 MiB update message arrives in 4 reads
        #: instead of 16, each one pass of autobahn's frame parser), the send
        #: budget, a master's pre-login input limit (``stream.ticket``) and the
        #: link's byte counter (WebSocket framing and HTTP upgrade included);
        #: the login is HTTP, so an HTTP client is not named as foreign.
        self.stream = StreamLink(options, clock, f"msgpack {self.side}", stats, large_reads=True, carrier="http")
        self.peer_max_message_size = options.max_message_size
        self.lost: str | None = None
        self._waiting: PendingRequests[int] = PendingRequests(int)
        #: Requests in _waiting whose answer's result is dropped (request_done);
        #: made at the first one (a connection that is never called has none).
        self._results_dropped: set[int] | None = None
        self._parts = Reassembly(options.max_message_size)
        self._pongs: list[Deferred[None]] = []
        #: Bytes of the encoding of the message being dispatched.
        self.message_size = 0

    def who(self) -> str:
        return self.stream.who()

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # autobahn's one way to its transport (frames, pings, the upgrade).
        self.stream.link_bytes.sent += len(data)
        super().sendData(data, sync, chopsize)  # type: ignore[misc]

    # -- autobahn hooks --------------------------------------------------------

    def connectionMade(self) -> None:
        # autobahn's own connectionMade reads TLS details (channel id, peer
        # certificate) straight from the transport, which fails on
        # workerwire.tls's wrapper; its checks are workerwire.tls's anyway, so
        # describe the transport without them and start the WebSocket.
        self.stream.made(self.transport)
        self.made = True
        self._transport_details = TransportDetails(
            channel_type=TransportDetails.CHANNEL_TYPE_TCP,
            channel_framing=TransportDetails.CHANNEL_FRAMING_WEBSOCKET,
            peer=self.stream.peer, is_server=self.side == "master", is_secure=False)
        self.peer = self.stream.peer
        self._connectionMade()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.stream.gone()
        if not getattr(self, "made", False):
            # A wrapper (TLS) that fails before it connected us: autobahn never
            # set up, so only our own end is reported.
            self._loss = reason
            self.onClose(False, None, None)
            return
        self._loss = reason
        super().connectionLost(reason)  # type: ignore[misc]

    def _onOpen(self) -> None:
        # autobahn would read the TLS channel id and peer certificate from the
        # transport here; ours may be workerwire.tls's wrapper, and neither is
        # used (the certificate checks are workerwire.tls's).
        self.onOpen()  # type: ignore[attr-defined]

    def link_opened(self) -> None:
        """The upgrade is done: bound what one WebSocket message may hold, and
        let go of the upgrade's HTTP text, which autobahn keeps but does not
        read again (~2.5 KiB per connection on a master)."""
        limit = PART_SIZE + _PART_SLACK if self.extended else self.options.max_message_size
        self.maxMessagePayloadSize = limit
        self.maxFramePayloadSize = limit
        for name in _UPGRADE_LEFTOVERS:
            if name in self.__dict__:
                setattr(self, name, None)
        if not getattr(self, "utf8validateIncoming", True):
            self.utf8validator = None  # made for every connection, used for text messages only

    # -- sending ----------------------------------------------------------------

    def request(self, op: str, **fields: Any) -> Deferred[Any]:
        """Send a request; the Deferred fires with the answer's ``result`` or
        fails with :class:`RemoteError` / :class:`ConnectionLost`."""
        return self._request(op, fields, True)

    def request_done(self, op: str, **fields: Any) -> Deferred[None]:
        """:meth:`request` for a call whose result is not wanted: the Deferred
        fires with None once the answer came (no callback per call to drop it)."""
        return self._request(op, fields, False)

    def _request(self, op: str, fields: dict[str, Any], want_result: bool) -> Deferred[Any]:
        if self.lost is not None or self.stream.closing:
            return fail(ConnectionLost(f"link to {self.who()} is {'lost: ' + self.lost if self.lost else 'closing'}"))
        seq = self._waiting.new_tag()
        msg = {"op": op, "seq_number": seq}
        msg.update(fields)
        try:
            data = _pack(msg)
        except Exception as e:
            return fail(ProtocolError(f"cannot encode {op!r}: {e}"))
        if len(data) > self.peer_max_message_size:
            return fail(ProtocolError(
                f"{op} message of {len(data)} bytes exceeds the peer's limit of {self.peer_max_message_size} bytes"))
        d = self._waiting.wait(seq)
        if not want_result:
            if self._results_dropped is None:
                self._results_dropped = set()
            self._results_dropped.add(seq)
        self._send_bytes(data)
        return d

    def answer(self, msg: dict[str, Any], result: Any) -> None:
        if self.lost is not None:
            return
        reply = {"op": "response", "seq_number": msg["seq_number"], "result": result}
        try:
            data = _pack(reply)
        except Exception as e:
            return self.answer_error(msg, ProtocolError(f"cannot encode the result of {msg['op']}: {e}"))
        if len(data) > self.peer_max_message_size:
            return self.answer_error(msg, ProtocolError(
                f"the answer to {msg['op']} ({len(data)} bytes) exceeds the peer's limit of "
                f"{self.peer_max_message_size} bytes"))
        self._send_bytes(data)

    def answer_error(self, msg: dict[str, Any], exc: BaseException) -> None:
        if self.lost is not None:
            return
        reply = {"op": "response", "seq_number": msg["seq_number"]}
        reply.update(error_fields(exc, self.extended, self.options.send_tracebacks))
        self._send_bytes(_pack(reply))

    def _send_bytes(self, data: bytes) -> None:
        if getattr(self, "state", None) != self.STATE_OPEN:  # type: ignore[attr-defined]
            return  # closing: the peer learns from the close (pending requests fail then)
        if self.extended and len(data) > PART_SIZE:
            parts = split(data, PART_SIZE)
            for n, piece in enumerate(parts, 1):
                part = {"op": PART_OP, "data": bytes(piece), "last": n == len(parts)}
                self.sendMessage(_pack(part), isBinary=True)  # type: ignore[attr-defined]
        else:
            self.sendMessage(data, isBinary=True)  # type: ignore[attr-defined]

    def ping(self) -> Deferred[None]:
        """A WebSocket ping; fires at the pong (every peer answers one)."""
        if self.lost is not None:
            return fail(ConnectionLost(f"link to {self.who()} is lost: {self.lost}"))
        d: Deferred[None] = Deferred()
        self._pongs.append(d)
        self.sendPing()  # type: ignore[attr-defined]
        return d

    def onPong(self, payload: bytes) -> None:
        if self._pongs:
            self._pongs.pop(0).callback(None)

    # -- receiving ----------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.stream.closing or self.lost is not None:
            return
        if not isBinary:
            return self.protocol_error(ProtocolError("a text message; the dialect uses binary MessagePack messages"))
        try:
            msg = decode(payload, framing=FRAMING_LEVELS)
        except ProtocolError as e:
            return self.protocol_error(e)
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            return self.protocol_error(ProtocolError("a message that is not a map with an 'op' string"))
        if msg["op"] == PART_OP and self.extended:
            return self._part(msg)
        self.message_size = len(payload)
        self._dispatch(msg)

    def dataReceived(self, data: bytes) -> None:
        # Once per read (not per message): the bytes counted and, on a master,
        # held to the pre-login limit; the peer is alive; and after every
        # message in the read was handled (and answered), the send budget.
        # Not stream.read(): that drops input while closing, and autobahn
        # must still read the peer's close frame to finish the close handshake.
        stream = self.stream
        stream.link_bytes.received += len(data)
        if not stream.take(data):
            stream.protocol_error(stream.too_much_before_login(), "msgpack")  # before any WebSocket: aborted
            return
        self.on_traffic()
        super().dataReceived(data)  # type: ignore[misc]
        stream.after_read()

    def _part(self, msg: dict[str, Any]) -> None:
        data = msg.get("data")
        if not isinstance(data, bytes) or not isinstance(msg.get("last"), bool):
            return self.protocol_error(ProtocolError("a ww_part needs 'data' (bytes) and 'last' (bool)"))
        try:
            self._parts.add(data)
        except ProtocolError as e:
            return self.protocol_error(e)
        if not msg["last"]:
            return
        whole = self._parts.join()
        try:
            inner = decode(whole, framing=FRAMING_LEVELS)
        except ProtocolError as e:
            return self.protocol_error(e)
        if not isinstance(inner, dict) or not isinstance(inner.get("op"), str) or inner["op"] == PART_OP:
            return self.protocol_error(ProtocolError("parts that do not make one message"))
        self.message_size = len(whole)
        self._dispatch(inner)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        seq = msg.get("seq_number")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return self.protocol_error(ProtocolError(f"{op} message without an integer seq_number"))
        if op == "response":
            try:
                d = self._waiting.answered(seq, "an answer to seq_number")
            except ProtocolError as e:
                return self.protocol_error(e)
            dropped = self._results_dropped
            if dropped and seq in dropped:
                dropped.discard(seq)
                result = None
            else:
                result = msg.get("result")
            if msg.get("is_exception"):
                d.errback(Failure(RemoteError(error_from_answer(msg))))
            else:
                d.callback(result)
            return
        handler = self.handlers.get(op)
        if handler is None:
            # What Buildbot answers too.
            return self.answer_error(msg, ProtocolError(f"Command {op} does not exist."))
        serve_request(lambda: handler(self, msg), lambda value: self.answer(msg, value),
                      lambda exc: self.answer_error(msg, exc))

    # -- closing ------------------------------------------------------------------

    def protocol_error(self, error: ProtocolError) -> None:
        """The peer broke the dialect: log it (the stream's line) and close
        with :data:`CLOSE_PROTOCOL_ERROR`."""
        if self.stream.closing:
            return
        self.stream.log_protocol_error(str(error), "msgpack")
        self.close_with(CLOSE_PROTOCOL_ERROR, str(error))

    def close_with(self, code: int, reason: str) -> None:
        """Close with a WebSocket close code and reason (at most 123 bytes of UTF-8)."""
        if self.stream.closing or self.lost is not None:
            return
        self.stream.closing = True
        self.sendClose(code=code, reason=reason.encode("utf-8")[:120].decode("utf-8", "ignore"))  # type: ignore

    def close(self, abort: bool = False) -> None:
        """Close the link: *abort* drops it at once; else a WebSocket close
        once open (before, the TCP connection is closed)."""
        if self.lost is not None:
            return
        stream = self.stream
        if abort:
            stream.closing = True
            stream.close(abort=True)
            return
        if stream.closing:
            return
        stream.closing = True
        if getattr(self, "state", None) == self.STATE_OPEN:  # type: ignore[attr-defined]
            self.sendClose(code=1000)  # type: ignore[attr-defined]
        else:
            stream.close()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.lost is not None:
            return
        self.lost = self.describe_close(wasClean, code, reason)
        error = ConnectionLost(f"link to {self.who()} lost: {self.lost}")
        self._results_dropped = None
        self._waiting.fail_all(Failure(error))
        pongs, self._pongs = self._pongs, []
        for d in pongs:
            d.errback(Failure(error))
        self.link_lost(self.lost, code, reason)

    def describe_close(self, wasClean: bool, code: int | None, reason: str | None) -> str:
        if code in (CLOSE_REFUSED, CLOSE_PROTOCOL_ERROR) and reason:
            return reason
        if self.stream.drop_reason is not None:
            return self.stream.drop_reason  # this end dropped it (the send budget's verdict, the pre-login limit)
        if wasClean:
            return "connection closed"
        loss = getattr(self, "_loss", None)
        if loss is not None and not loss.check(ConnectionDone):
            return describe_loss(loss)  # e.g. why TLS failed, from workerwire.tls
        why = getattr(self, "wasNotCleanReason", None)
        return f"connection lost: {why}" if why else "connection lost"

    def link_lost(self, reason: str, code: int | None, text: str | None) -> None:
        """The link is gone (subclasses report it)."""
