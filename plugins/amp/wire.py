"""The dialect's box layer, shared by both ends: limits, chunks, dispatch, errors.

:class:`WireProtocol` speaks AMP's box format (``AmpBox``, ``Command`` and
its argument types, error codes: AMP's public API) with its own box parser
and its own request dispatch, in place of ``BinaryBoxProtocol`` and
``BoxDispatcher`` (whose private state a subclass had to reach into); it

* caps every box at :data:`MAX_KEYS` keys while parsing it (AMP itself caps
  keys at 255 bytes and values at 65,535), so a box never costs more than
  about 2 MiB whatever the peer sends;
* lets a subclass refuse commands by connection state (nothing but the login
  before the login), and refuses unknown commands;
* carries ``Value`` arguments inline (in one AMP value, or in consecutive
  *parts* of one box when the peer announced ``parts``) or through ``Chunk``
  transfers (:mod:`workerwire.parts`), bounded by ``max_message_size``;
* answers every failing command with an error box whose code is the error's
  type name (:mod:`workerwire_amp.errors`);
* turns any malformed or out-of-place input into one logged protocol error
  that closes the connection: no traceback, no exception escapes into Twisted.

The transport's plumbing (peer name, TCP options, send budget and its pause,
pre-login input limit, closing, aborting) is core's
:class:`~workerwire.stream_link.StreamLink` (:attr:`WireProtocol.stream`);
the requests waiting for answers are core's
:class:`~workerwire.pending.PendingRequests`.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, ClassVar

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from workerwire.backend import LinkOptions
from workerwire.errors import MAX_ECHO, ConnectionLost, ProtocolError, UnsupportedValue
from workerwire.parts import IN_PARTS, Encoded, OutgoingValues, Part, TransferIds, Transfers, split, split_pieces, too_large
from workerwire.pending import PendingRequests, serve_request
from workerwire.speedups.socket_write import write_pieces
from workerwire.stream_link import StreamLink
from workerwire.values import decode, encode

from .commands import TRANSFER_SUFFIX, Chunk, Integer, WireCommand
from .errors import error_answer

__all__ = ["WireProtocol", "MAX_KEYS", "MAX_CHUNK", "ABORT_AFTER"]

_log = Logger()

#: Most keys one box may have (the dialect's largest box has 7, and the parts
#: of large Values).
MAX_KEYS = 32
#: Largest chunk (and largest inline Value, or part of one): the AMP value limit.
MAX_CHUNK = amp.MAX_VALUE_LENGTH
#: Longest key (AMP's limit).
MAX_KEY_LENGTH = 255
#: Seconds a closing connection may take to flush before it is aborted.
ABORT_AFTER = 10.0

_KIND_OK: dict[type, tuple[type, ...]] = {list: (list, tuple), dict: (dict,), str: (str,), type(None): (type(None),)}
_parse_int = Integer().fromString
_H = struct.Struct("!H").pack


class WireProtocol(Protocol):
    """One end of an amp connection (subclassed per side)."""

    #: ``"master"`` or ``"worker"``, for log lines.
    side: ClassVar[str] = "?"
    #: Commands this side answers: wire name -> (command, responder method name).
    responders: ClassVar[dict[bytes, tuple[type[WireCommand], str]]] = {}

    def __init__(self, options: LinkOptions, clock: Any, stats: Any = None):
        self.options = options
        self.clock = clock
        #: The transport's plumbing (see the module docstring); a graceful
        #: close is aborted after :data:`ABORT_AFTER` s; the budget's pause
        #: stops parsing at the next box, its resume parses what was read.
        #: *stats*: the counters the budget adds to (a master's listener's).
        self.stream = StreamLink(options, clock, f"amp {self.side}", stats, resumed=lambda: self.dataReceived(b""),
                                 abort_after=ABORT_AFTER)
        self.assembler = Transfers(options.max_message_size, "Chunk")
        self._transfer_ids = TransferIds()
        self._outgoing: OutgoingValues | None = None
        #: The peer's declared limit (from the handshake); we never send more.
        self.peer_max_message_size = options.max_message_size
        #: The peer announced the ``parts`` capability: large Values may go
        #: inline in consecutive keys of one box (set by the handshake).
        self.peer_parts = False
        self._box_keys = 0
        #: The box parser's state: input not parsed yet, and the box being parsed.
        self._unprocessed = b""
        self._current_key: bytes | None = None
        self._current_box: amp.AmpBox | None = None
        #: Requests sent and not answered yet, by ``_ask`` tag (hex from 1).
        self.requests: PendingRequests[bytes] = PendingRequests(b"%x".__mod__, first=1)
        #: A long value still arriving: its pieces, their length, the length needed.
        self._pieces: list[Any] = []
        self._pieces_len = 0
        self._need = 0
        #: Bytes of the Values parsed so far in the current box.
        self.box_value_bytes = 0
        #: Called for every box that arrives.
        self.on_traffic: Callable[[], None] = lambda: None

    # -- subclass hooks -----------------------------------------------------

    def refuses(self, command: type[WireCommand]) -> str | None:
        """Why *command* may not arrive now, or ``None`` when it may."""
        return None

    def link_lost(self, reason: Failure) -> None:
        """The connection is gone (called once, after pending calls failed)."""

    @property
    def peer(self) -> str:
        """``"host:port"`` of the other end."""
        return self.stream.peer

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        self.stream.made(self.transport)

    def close(self, abort: bool = False) -> None:
        """Stop reading and close the connection; a graceful close is aborted
        after :data:`ABORT_AFTER` s."""
        self.stream.closing = True
        self.stream.close(abort)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        stream = self.stream
        if stream.lost:
            return
        if not stream.closing and (self._unprocessed or self._need or self._current_box is not None):
            stream.log_protocol_error("connection closed in the middle of a box", "amp", "")
        stream.gone()
        self.assembler.clear()
        self.requests.fail_all(reason)
        self.transport = None
        self.link_lost(reason)

    def protocol_error(self, error: ProtocolError, box: amp.AmpBox | None = None) -> None:
        """Log *error*, answer the offending command with it if it asked, close."""
        stream = self.stream
        if stream.closing:
            return
        stream.log_protocol_error(str(error), "amp")
        stream.closing = True
        if box is not None and amp.ASK in box and amp.COMMAND in box and not stream.lost:
            description = str(error).encode("utf-8", "replace")[:MAX_ECHO]
            try:
                self.sendBox(amp.AmpBox({
                    amp.ERROR: box[amp.ASK], amp.ERROR_CODE: b"ProtocolError",
                    amp.ERROR_DESCRIPTION: description,
                }))
            except Exception:
                pass
        self.close()

    # -- parsing limits -----------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Boxes from AMP's length-prefixed strings, as ``BinaryBoxProtocol``
        builds them, but walked by offset (no copy of the rest of the buffer
        per string), with a long value's pieces joined once it is whole, and
        without a method dispatch per string; the box is capped at
        :data:`MAX_KEYS` keys while it is parsed."""
        stream = self.stream
        if not stream.read(data, lambda why: self.protocol_error(ProtocolError(why))):
            return  # closing (a refused or closing peer's further input is dropped unread), or over the pre-login limit
        if self._need:
            pieces = self._pieces
            missing = self._need - self._pieces_len
            if len(data) < missing:
                pieces.append(data)
                self._pieces_len += len(data)
                return
            pieces.append(memoryview(data)[:missing] if missing < len(data) else data)
            string = b"".join(pieces)
            self._pieces, self._pieces_len, self._need = [], 0, 0
            self._unprocessed = b""
            self._take_string(string)
            buf, pos = data, missing
        elif self._unprocessed:
            buf, pos = self._unprocessed + data, 0
        else:
            buf, pos = data, 0
        n = len(buf)
        take = self._take_string
        while n - pos >= 2 and not stream.closing and not stream.paused:
            length = (buf[pos] << 8) | buf[pos + 1]
            start = pos + 2
            end = start + length
            if end > n:
                if length > 4096 and self._current_key is not None:
                    # A long value: keep its pieces (no copy yet), join them once.
                    self._pieces, self._pieces_len, self._need = [memoryview(buf)[start:]], n - start, length
                    self._unprocessed = buf[pos:start]
                    return
                if length > MAX_KEY_LENGTH and self._current_key is None:
                    self._unprocessed = buf[pos:]
                    self.lengthLimitExceeded(length)
                    return
                break
            pos = end
            if not take(buf[start:end]):
                self._unprocessed = buf[pos:]
                return
        self._unprocessed = buf[pos:] if pos < n else b""

    def _take_string(self, string: bytes) -> bool:
        """One key or value of the box being parsed; False to stop parsing."""
        key = self._current_key
        if key is not None:
            self._box_keys += 1
            if self._box_keys > MAX_KEYS:
                self.protocol_error(ProtocolError(f"box with more than {MAX_KEYS} keys"))
                return False
            box = self._current_box
            assert box is not None, "a key is set only while a box is being parsed"
            box[key] = string
            self._current_key = None
            return True
        if len(string) > MAX_KEY_LENGTH:
            self.lengthLimitExceeded(len(string))
            return False
        box = self._current_box
        if string:
            if box is None:
                self._current_box = amp.AmpBox()
                self._box_keys = 0
            self._current_key = string
            return True
        self._current_box = None
        self.ampBoxReceived(box if box is not None else amp.AmpBox())
        return True

    def lengthLimitExceeded(self, length: int) -> None:
        self.protocol_error(ProtocolError(f"key of {length} bytes; AMP keys are 1 to 255 bytes"))

    # -- receiving ----------------------------------------------------------

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        if self.stream.closing:
            return
        self.on_traffic()
        try:
            self._box_received(box)
        except ProtocolError as e:
            self.protocol_error(e, box)
        except (KeyError, ValueError, TypeError, UnicodeError, amp.AmpError) as e:
            self.protocol_error(ProtocolError(f"malformed box: {type(e).__name__}: {e}"), box)
        self.stream.after_read()  # over the budget's limit: parsing stops here (stream.paused)

    def _box_received(self, box: amp.AmpBox) -> None:
        name = box.get(amp.COMMAND)
        if name is not None:
            if amp.ANSWER in box or amp.ERROR in box:
                raise ProtocolError("a box may not be both a command and an answer")
            entry = self.responders.get(name)
            if entry is None:
                raise ProtocolError(f"unknown command {name[:60]!r}")
            command = entry[0]
            why = self.refuses(command)
            if why is not None:
                raise ProtocolError(why)
            if command is Chunk:
                if amp.ASK in box:
                    raise ProtocolError("Chunk boxes are never answered and may not carry _ask")
                self.assembler.part(**self._parse(Chunk, box, Chunk.arguments))
                return
            if amp.ASK not in box:
                raise ProtocolError(f"{command.__name__} without _ask; every command but Chunk is answered")
        elif amp.ANSWER not in box and amp.ERROR not in box:
            raise ProtocolError("box is neither a command nor an answer")
        self.assembler.begin_message()
        self.box_value_bytes = 0
        if name is not None:
            self._command_received(box)
        else:
            self._answer_received(box)
        if not self.stream.closing:
            self.assembler.end_message()

    def _answer_received(self, box: amp.AmpBox) -> None:
        """An answer or an error answer: it fires the request it answers (as AMP's dispatcher would)."""
        error = amp.ERROR in box
        request = self.requests.answered(box[amp.ERROR if error else amp.ANSWER],
                                         "an error answer to request" if error else "an answer to request")
        if not error:
            request.callback(box)
            return
        if amp.ERROR_CODE not in box or amp.ERROR_DESCRIPTION not in box:
            raise ProtocolError("error box without _error_code or _error_description")
        code, description = box[amp.ERROR_CODE], box[amp.ERROR_DESCRIPTION].decode("utf-8", "replace")
        request.errback(Failure(amp.PROTOCOL_ERRORS.get(code, amp.RemoteAmpError)(code, description)))

    def _command_received(self, box: amp.AmpBox) -> None:
        """A command (not ``Chunk``): run its responder (core's request
        serving); its result (a dict of the answer's fields, or anything for a
        command whose answer has none) goes back as the answer, a failure as
        the error answer, under the command's ``_ask``."""
        command, method = self.responders[box[amp.COMMAND]]
        kw = self._parse(command, box, command.arguments)
        ask = box[amp.ASK]
        serve_request(lambda: getattr(self, method)(**kw), lambda objects: self._answer(ask, command, objects),
                      lambda exc: self._answer_error(ask, exc))

    def _answer(self, ask: bytes, command: type[WireCommand], objects: Any) -> None:
        box = self._make_response(objects, command)
        box[amp.ANSWER] = ask
        self._emit(box)

    def _answer_error(self, ask: bytes, exc: BaseException) -> None:
        error = exc if isinstance(exc, amp.RemoteAmpError) else error_answer(exc, self.options.send_tracebacks)
        text = error.description
        try:
            self._emit(amp.AmpBox({amp.ERROR: ask, amp.ERROR_CODE: error.errorCode, amp.ERROR_DESCRIPTION:
                                   text.encode("utf-8", "replace") if isinstance(text, str) else text}))
        except Exception:
            _log.failure("amp {side}: answering {peer} failed; closing the connection", side=self.side,
                         peer=self.stream.who())
            self.close(abort=True)

    def _emit(self, box: amp.AmpBox) -> None:
        try:
            self.sendBox(box)
        except net_error.ConnectionLost:
            pass  # the connection closed while the responder ran

    def _parse(self, command: type[WireCommand], box: amp.AmpBox, schema: list[Any]) -> dict[str, Any]:
        try:
            parsed: dict[str, Any] = {}
            strings = dict(box)
            for name, argument in schema:
                argument.fromBox(name, strings, parsed, self)
            return parsed
        except ProtocolError:
            raise
        except KeyError as e:
            raise ProtocolError(f"{command.__name__}: missing argument {e}") from None
        except (ValueError, TypeError, UnicodeError, amp.AmpError) as e:
            raise ProtocolError(f"{command.__name__}: malformed argument: {type(e).__name__}: {e}") from None

    def take_value(self, key: bytes, strings: dict[bytes, bytes], kinds: tuple[type, ...]) -> Any:
        """Decode a ``Value`` argument (the ``ValueCarrier`` protocol)."""
        ref_key = key + TRANSFER_SUFFIX
        inline = strings.pop(key, None)
        ref = strings.pop(ref_key, None)
        if (inline is None) == (ref is None):
            raise ProtocolError(f"exactly one of {key.decode()!r} and {ref_key.decode()!r} must be present")
        part_key = key + b".1"
        if part_key in strings:
            if inline is None:
                raise ProtocolError(f"{part_key.decode()!r} without {key.decode()!r}")
            data = self._join_parts(key, inline, strings)
        elif ref is not None:
            data = self.assembler.take(_parse_int(ref))
        else:
            assert inline is not None
            data = inline
        self.box_value_bytes += len(data)
        if self.box_value_bytes > self.options.max_message_size:
            raise too_large(self.box_value_bytes, self.options.max_message_size)
        # An Update's pairs are framing: its values count their nesting from
        # themselves, as they do on every backend.
        value = decode(data, self.options.max_message_size, 2 if key == b"updates" else 0)
        if object not in kinds and type(value) not in kinds:
            raise ProtocolError(f"argument {key.decode()!r} must be {_kinds(kinds)}, not {type(value).__name__}")
        return value

    @staticmethod
    def _join_parts(key: bytes, first: bytes, strings: dict[bytes, bytes]) -> bytes:
        """The Value of *key* from its parts ``key``, ``key.1``, ``key.2``...:
        each but the last exactly one full AMP value, the last not empty."""
        parts = [first]
        n = 1
        while True:
            piece = strings.pop(key + b".%d" % n, None)
            if piece is None:
                break
            if len(parts[-1]) != MAX_CHUNK or not piece:
                raise ProtocolError(
                    f"parts of {key.decode()!r}: every part but the last must be {MAX_CHUNK} bytes, "
                    "the last not empty")
            parts.append(piece)
            n += 1
        return b"".join(parts)

    # -- sending ------------------------------------------------------------

    @property
    def outgoing_limit(self) -> int:
        """Largest message this end sends: its own and the peer's limit."""
        return min(self.options.max_message_size, self.peer_max_message_size)

    def put_value(self, key: bytes, strings: dict[bytes, Any], value: Any) -> None:
        """Encode a ``Value`` argument (the ``ValueCarrier`` protocol)."""
        assert self._outgoing is not None, "Values are only sent through call() and answers"
        pieces: list[bytes] | None = None
        if isinstance(value, Encoded):
            data, pieces, size = value.data, value.pieces, value.size
        else:
            data = encode(value, where=key.decode())
            size = len(data)
        how = self._outgoing.plan(size)
        if how is IN_PARTS:
            parts: list[Any] = split(data, MAX_CHUNK) if data is not None else split_pieces(pieces, size, MAX_CHUNK)  # type: ignore[arg-type]
            for n, part in enumerate(parts):
                strings[key + b".%d" % n if n else key] = part
            return
        if data is None:
            data = b"".join(pieces)  # type: ignore[arg-type]
        if how is None:
            strings[key] = data
        else:
            strings[key + TRANSFER_SUFFIX] = b"%d" % self._outgoing.transfer(data)

    def sendBox(self, box: amp.AmpBox) -> None:
        """As AMP sends a box, but writing a Value's parts without joining
        their pieces first (:mod:`workerwire.speedups.socket_write`)."""
        if self.transport is None:
            raise net_error.ConnectionLost("the amp connection is closed")
        out: list[Any] = []
        for key, value in sorted(box.items()):
            if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_LENGTH:
                raise amp.TooLong(True, True, key, None)
            out.append(_H(len(key)))
            out.append(key)
            if type(value) is Part:
                out.append(_H(value.size))
                out.extend(value.buffers)
            else:
                if type(value) is str or len(value) > MAX_CHUNK:
                    raise amp.TooLong(False, True, value, key)
                out.append(_H(len(value)))
                out.append(value)
        out.append(b"\x00\x00")
        self.stream.link_bytes.sent += sum(map(len, out))
        write_pieces(self.transport, self.stream.socket, out)

    @staticmethod
    def _check_kinds(schema: list[tuple[bytes, Any]], objects: dict[str, Any]) -> None:
        """Refuse to send a Value the peer would reject for its top-level type."""
        for name, kinds, ok in _kind_checks(schema):
            value = objects.get(name)
            if not isinstance(value, ok):
                raise UnsupportedValue(f"{name} must be {_kinds(kinds)}, not {type(value).__name__}")

    def _build(self, make: Callable[[dict[str, Any], Any], amp.AmpBox], objects: dict[str, Any],
               keys: int) -> amp.AmpBox:
        """Build a box of at most *keys* keys (AMP's and the arguments') with
        ``make(objects, self)``, then send the transfers its Values need."""
        extra = MAX_KEYS - keys if self.peer_parts else 0
        self._outgoing = OutgoingValues(self.outgoing_limit, MAX_CHUNK, self._transfer_ids, extra)
        try:
            box = make(objects, self)
        finally:
            out, self._outgoing = self._outgoing, None
        self._send_transfers(out)
        return box

    def _send_transfers(self, out: OutgoingValues) -> None:
        """Send the ``Chunk`` boxes of the transfers a box being built needs."""
        for tid, data in out.transfers:
            total = b"%d" % len(data)
            for offset, piece in out.pieces(data):
                self._send_command(Chunk.commandName, amp.AmpBox({
                    b"transfer": b"%d" % tid, b"offset": b"%d" % offset, b"total": total, b"data": piece,
                }), requires_answer=False)

    def _send_command(self, name: bytes, box: amp.AmpBox, requires_answer: bool = True
                      ) -> Deferred[amp.AmpBox] | None:
        """Send *box* as command *name*; with an answer expected, the Deferred
        that fires with the answer box (or fails with the error answer, as
        ``RemoteAmpError``, or with the reason the connection closed)."""
        box[amp.COMMAND] = name
        if not requires_answer:
            self.sendBox(box)
            return None
        tag = box[amp.ASK] = self.requests.new_tag()
        self.sendBox(box)
        return self.requests.wait(tag)

    def call(self, command: type[WireCommand], **kw: Any) -> Deferred[dict[str, Any]]:
        """Send *command*; fires with its parsed answer.

        Fails with the peer's error answer as an ``amp.RemoteAmpError``, a
        Twisted connection error, or a core error raised here (too large,
        unsupported value); callers translate with
        :func:`~workerwire_amp.errors.translate_failure`.
        """
        if self.stream.closing or self.transport is None:
            return fail(ConnectionLost("the connection is closed"))
        try:
            box = amp.AmpBox()
            if command.arguments:
                self._check_kinds(command.arguments, kw)
                box = self._build(command.makeArguments, kw, 2 + len(command.arguments))
            sent = self._send_command(command.commandName, box, command.requiresAnswer)
        except Exception:
            return fail()
        if sent is None:
            return succeed({})
        result: Deferred[dict[str, Any]] = Deferred()
        # The request's Deferred always ends in None: no failure is left unhandled.
        sent.addCallbacks(self._answered, result.errback, callbackArgs=(command, result))
        return result

    def call_encoded(self, command: type[WireCommand], values: list[tuple[bytes, Encoded]]) -> Deferred[Any]:
        """:meth:`call` for a command whose arguments are all ``Value``
        arguments, given as :class:`Encoded` in the order of
        ``command.arguments``, and whose answer has no fields (``Update``):
        the box is built without AMP's per-argument machinery, and the
        Deferred fires with the answer box (or fails as :meth:`call`'s does)."""
        if self.stream.closing or self.transport is None:
            return fail(ConnectionLost("the connection is closed"))
        assert not command.response and command.requiresAnswer and len(values) == len(command.arguments)
        box = amp.AmpBox()
        try:
            extra = MAX_KEYS - 2 - len(values) if self.peer_parts else 0
            out = self._outgoing = OutgoingValues(self.outgoing_limit, MAX_CHUNK, self._transfer_ids, extra)
            try:
                for key, value in values:
                    self.put_value(key, box, value)
            finally:
                self._outgoing = None
            if out.transfers:
                self._send_transfers(out)
            sent = self._send_command(command.commandName, box)
        except Exception:
            return fail()
        assert sent is not None
        return sent

    def _answered(self, answer: amp.AmpBox, command: type[WireCommand], result: Deferred[dict[str, Any]]) -> None:
        if not command.response:
            result.callback({})
            return
        try:
            parsed = self._parse(command, answer, command.response)
        except ProtocolError as e:
            self.protocol_error(ProtocolError(f"answer to {command.__name__}: {e}"))
            result.errback(Failure(e))
        else:
            result.callback(parsed)

    def _make_response(self, objects: dict[str, Any] | None, command: type[WireCommand]) -> amp.AmpBox:
        if not command.response:
            return amp.AmpBox()
        objects = dict(objects or {})
        self._check_kinds(command.response, objects)
        return self._build(command.makeResponse, objects, 1 + len(command.response))


_KIND_CHECKS: dict[int, tuple[Any, list[tuple[str, tuple[type, ...], tuple[type, ...]]]]] = {}


def _kind_checks(schema: list[tuple[bytes, Any]]) -> list[tuple[str, tuple[type, ...], tuple[type, ...]]]:
    """``(name, kinds, accepted Python types)`` of *schema*'s restricted Values (cached)."""
    entry = _KIND_CHECKS.get(id(schema))
    if entry is None or entry[0] is not schema:
        checks = []
        for key, arg in schema:
            kinds = getattr(arg, "kinds", None)
            if kinds is None or object in kinds or getattr(arg, "optional", False):
                continue
            checks.append((key.decode(), kinds, tuple(ok for k in kinds for ok in _KIND_OK[k]) + (Encoded,)))
        entry = _KIND_CHECKS[id(schema)] = (schema, checks)
    return entry[1]


def _kinds(kinds: tuple[type, ...]) -> str:
    names = {type(None): "nil", str: "a str", list: "a list", dict: "a dict"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)

