"""Banana, the byte layer under PB, decoded and encoded with less copying.

:class:`FastBanana` replaces ``twisted.spread.banana.Banana``'s
``dataReceived`` and ``sendEncoded`` in a broker class; the bytes on the wire
and the items handed to ``callExpressionReceived`` are exactly Twisted's (the
tests compare both against the stock code), and so are its security limits
(prefix length, ``SIZE_LIMIT`` for strings and lists).

Why: the stock decoder copies the rest of its buffer once per item
(``rest = buffer[pos + 1:]``) and re-concatenates a long string's buffer on
every read while waiting for its end, so the receiving side of a stream of
64 KiB updates (about 24 items each in Buildbot's update form) spends most of
its time copying; this one walks the buffer by offset and joins a long
string's pieces once.  The stock encoder writes every token to a ``BytesIO``
and looks every string (64 KiB of output included) up in the PB vocabulary;
this one collects the tokens in a list and looks up only strings short
enough to be a vocabulary word.

A message of at least :data:`DIRECT_MIN` bytes on a plain TCP transport
whose write buffer is empty goes to the socket with one scatter-gather
``sendmsg`` of its tokens and strings (:mod:`workerwire.speedups.socket_write`): the same bytes,
without joining them and without Twisted joining its write buffer again.

It also enforces the broker's message size limit while decoding (see
:attr:`FastBanana.max_message_size`): what an unfinished message holds is
counted (bytes of strings, 8 for any other item), so no message, however it
is split into lists, grows past the limit.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Callable

from twisted.spread import banana

from workerwire.errors import ProtocolError
from workerwire.link_bytes import LinkBytes
from workerwire.speedups.socket_write import direct_socket, write_pieces

__all__ = ["FastBanana", "b128", "DIRECT_MIN"]

_LIST, _INT, _STRING, _NEG, _FLOAT, _LONGINT, _LONGNEG, _VOCAB = range(0x80, 0x88)
_SIZE_LIMIT = banana.SIZE_LIMIT
#: See :attr:`FastBanana.max_list_depth`.
MAX_LIST_DEPTH = 2 * 256 + 16
_unpack_double = struct.Struct("!d").unpack_from
_pack_double = struct.Struct("!d").pack

_ITEM_RE: dict[int, Callable[..., Any]] = {}


def _item_matcher(prefix_limit: int) -> Callable[..., Any]:
    """``match(buf, pos)``: a prefix of at most *prefix_limit* bytes below 0x80, then a type byte."""
    match = _ITEM_RE.get(prefix_limit)
    if match is None:
        match = _ITEM_RE[prefix_limit] = re.compile(b"[\\x00-\\x7f]{0,%d}[\\x80-\\xff]" % prefix_limit,
                                                     re.DOTALL).match
    return match


_SMALL = [bytes((i,)) for i in range(128)]

#: Smallest message sent with ``sendmsg`` at once; smaller ones (calls,
#: answers) are joined and left to the transport, which sends all that one
#: reactor turn wrote with one ``send``.
DIRECT_MIN = 32 * 1024

_NOTHING: Any = object()


def b128(n: int) -> bytes:
    """Banana's base-128 prefix of the non-negative int *n* (least significant first)."""
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n:
        out.append(n & 0x7F)
        n >>= 7
    return bytes(out)


class FastBanana:
    """Mixin that goes before ``banana.Banana`` (or ``pb.Broker``) in the bases."""

    #: Largest message accepted while decoding, in counted bytes (see the module).
    max_message_size: int = banana.SIZE_LIMIT * 100
    #: Deepest list nesting accepted while decoding: jelly spends up to two
    #: banana lists per level of a value (a dict is ``[b"dictionary", [k, v],
    #: ...]``), so a contract value (256 levels) and a message's framing fit;
    #: deeper input is a protocol error here, before jelly's recursive
    #: unjelly could overflow the stack.
    max_list_depth: int = MAX_LIST_DEPTH
    #: What the unfinished message holds so far (counted bytes).
    _partial = 0
    #: A long string still arriving: its pieces, their length, and the length needed.
    _pieces: list[bytes | memoryview] | None = None
    _pieces_len = 0
    _need = 0
    _max_symbol = -1
    #: Bytes read and written: the broker sets its connection's counter
    #: (see :mod:`workerwire.link_bytes`); this shared one, never read, is
    #: what a bare codec (tests) adds to.
    link_bytes: LinkBytes = LinkBytes()

    # Provided by banana.Banana.
    buffer: bytes
    listStack: list[tuple[int, list[Any]]]
    prefixLimit: Any
    currentDialect: bytes | None
    incomingVocabulary: dict[int, bytes]
    outgoingSymbols: dict[bytes, int]
    transport: Any
    _smallestLongInt: int
    _smallestInt: int
    _largestInt: int
    _largestLongInt: int
    callExpressionReceived: Callable[[Any], None]

    # -- decoding -----------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes received and not yet part of a finished item."""
        return len(self.buffer) + self._pieces_len

    def dataReceived(self, chunk: bytes) -> None:
        if self._need:
            # The rest of a long string: collect it, join it once it is whole.
            pieces = self._pieces
            assert pieces is not None
            missing = self._need - self._pieces_len
            if len(chunk) < missing:
                pieces.append(chunk)
                self._pieces_len += len(chunk)
                return
            pieces.append(memoryview(chunk)[:missing] if missing < len(chunk) else chunk)
            item = b"".join(pieces)
            self._pieces, self._pieces_len, self._need = None, 0, 0
            self.buffer = b""
            self._decode(chunk, missing, item)
        elif self.buffer:
            self._decode(self.buffer + chunk, 0, _NOTHING)
        else:
            self._decode(chunk, 0, _NOTHING)

    def _decode(self, buf: bytes, pos: int, item: Any) -> None:
        """Decode *buf* from *pos*; *item* (unless ``_NOTHING``) is a whole
        item that came before it."""
        n = len(buf)
        stack = self.listStack
        limit = self.prefixLimit
        match = _item_matcher(limit)
        max_size = self.max_message_size
        partial = self._partial
        try:
            while True:
                if item is _NOTHING:
                    if pos >= n:
                        break
                    m = match(buf, pos)
                    if m is None:
                        if n - pos > limit:
                            raise banana.BananaError(f"Security precaution: more than {limit} bytes of prefix")
                        break
                    end = m.end()
                    kind = buf[end - 1]
                    if end - pos == 2:
                        num = buf[pos]
                    elif end - pos == 1:
                        num = 0
                    else:
                        num, shift = 0, 0
                        for k in range(pos, end - 1):
                            num |= buf[k] << shift
                            shift += 7
                    if kind == _STRING:
                        if num > _SIZE_LIMIT:
                            raise banana.BananaError("Security precaution: String too long.")
                        stop = end + num
                        if stop > n:
                            if num > 4096:
                                # A long string: keep its pieces (no copy yet)
                                # and join them once it is whole.
                                self._pieces = [memoryview(buf)[end:]]
                                self._pieces_len, self._need = n - end, num
                                self.buffer = buf[pos:end]
                                self._partial = partial
                                return
                            break
                        item = buf[end:stop]
                        pos = stop
                    elif kind == _LIST:
                        if num > _SIZE_LIMIT:
                            raise banana.BananaError("Security precaution: List too long.")
                        if len(stack) >= self.max_list_depth:
                            raise ProtocolError(f"lists nested deeper than {self.max_list_depth} levels")
                        stack.append((num, []))
                        pos = end
                        if num:
                            continue
                        item = stack.pop()[1]
                    elif kind == _INT or kind == _LONGINT:
                        item = num
                        pos = end
                    elif kind == _NEG or kind == _LONGNEG:
                        item = -num
                        pos = end
                    elif kind == _VOCAB:
                        item = self.incomingVocabulary[num]
                        if self.currentDialect != b"pb":
                            raise NotImplementedError(f"Invalid item for pb protocol {item!r}")
                        pos = end
                    elif kind == _FLOAT:
                        if end + 8 > n:
                            break
                        item = _unpack_double(buf, end)[0]
                        pos = end + 8
                    else:
                        raise NotImplementedError(f"Invalid Type Byte {bytes((kind,))!r}")
                # The item is whole: into the open list (and its parents, as
                # they fill up), or out as an expression.
                while True:
                    if stack:
                        partial += len(item) if type(item) is bytes else 8
                        if partial > max_size:
                            raise ProtocolError(f"a message larger than the limit of {max_size} bytes")
                        top = stack[-1]
                        top[1].append(item)
                        if len(top[1]) != top[0]:
                            break
                        item = stack.pop()[1]
                    else:
                        partial = 0
                        self._partial = 0
                        self.callExpressionReceived(item)
                        break
                item = _NOTHING
        except BaseException:
            self._partial = partial
            self.buffer = buf[pos:]
            raise
        self._partial = partial
        self.buffer = buf[pos:] if pos < n else b""

    # -- encoding -----------------------------------------------------------------

    def sendEncoded(self, obj: Any) -> None:
        parts: list[bytes] = []
        if self._max_symbol < 0:
            self._max_symbol = max((len(s) for s in self.outgoingSymbols), default=0)
        self._encode_into(obj, parts.append, self.currentDialect == b"pb")
        transport = self.transport
        size = sum(map(len, parts))
        self.link_bytes.sent += size
        if size >= DIRECT_MIN:
            write_pieces(transport, direct_socket(transport), parts)
        else:
            transport.write(b"".join(parts))

    def _encode_into(self, obj: Any, write: Callable[[bytes], Any], vocab: bool) -> None:
        kind = type(obj)
        if kind is bytes:
            if vocab and len(obj) <= self._max_symbol and obj in self.outgoingSymbols:
                write(b128(self.outgoingSymbols[obj]) + b"\x87")
                return
            if len(obj) > _SIZE_LIMIT:
                raise banana.BananaError("byte string is too long to send (%d)" % (len(obj),))
            write(b128(len(obj)) + b"\x82")
            write(obj)
        elif kind is list or kind is tuple or isinstance(obj, (list, tuple)):
            if len(obj) > _SIZE_LIMIT:
                raise banana.BananaError("list/tuple is too long to send (%d)" % (len(obj),))
            write(b128(len(obj)) + b"\x80")
            for elem in obj:
                self._encode_into(elem, write, vocab)
        elif isinstance(obj, int):
            if obj < self._smallestLongInt or obj > self._largestLongInt:
                raise banana.BananaError("int is too large to send (%d)" % (obj,))
            if obj < self._smallestInt:
                write(b128(-obj) + b"\x86")
            elif obj < 0:
                write(b128(-obj) + b"\x83")
            elif obj <= self._largestInt:
                write(b128(obj) + b"\x81")
            else:
                write(b128(obj) + b"\x85")
        elif isinstance(obj, float):
            write(b"\x84")
            write(_pack_double(obj))
        elif isinstance(obj, bytes):
            # A bytes subclass: as the stock encoder does.
            if vocab and obj in self.outgoingSymbols:
                write(b128(self.outgoingSymbols[obj]) + b"\x87")
                return
            if len(obj) > _SIZE_LIMIT:
                raise banana.BananaError("byte string is too long to send (%d)" % (len(obj),))
            write(b128(len(obj)) + b"\x82")
            write(obj)
        else:
            raise banana.BananaError(
                f"Banana cannot send {type(obj).__module__}.{type(obj).__qualname__} objects: {obj!r}")
