"""Values of any size over a wire whose frames are smaller: splitting on send, bounded reassembly on receive.

Protocol-neutral.  A backend whose frame (an AMP value, a WebSocket message,
an AMQP message under the broker's limit) is smaller than
``LinkOptions.max_message_size`` splits a large encoding into *parts* and joins
them again on the other end; this module has the splitting, the limits and
their errors, and the backend only frames its parts:

* :func:`split` and :func:`split_pieces` cut an encoding (one buffer, or the
  pieces an encoder produced, see :class:`Encoded`) into parts of at most a
  given size without copying it;
* :class:`Reassembly` collects the parts of one message and refuses, with a
  :class:`~workerwire.errors.ProtocolError`, the part that takes it past the
  limit -- before keeping it (``msgpack`` and ``amqp`` use it as it is);
* :class:`TransferPool` reassembles parts that travel as numbered
  *transfers* ahead of the message that claims them by id (``pb``'s
  ``workerwire.part`` calls): offsets, declared totals, a budget for every
  transfer held; :class:`Transfers` is its stricter form (``amp``'s ``Chunk``
  boxes): one transfer at a time, every finished transfer used by the next
  message;
* on the sending side, :class:`TransferIds` numbers transfers,
  :func:`numbered_parts` cuts one into ``(offset, part)`` and
  :class:`OutgoingValues` plans, for the message being built, which Values
  go inline, inline in parts, or as transfers.

So a receiver never holds more than ``max_message_size`` bytes of parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .errors import ProtocolError

__all__ = ["Encoded", "split", "Part", "split_pieces", "Reassembly", "TransferPool", "Transfers", "TransferIds",
           "OutgoingValues", "numbered_parts", "IN_PARTS", "TRANSFER", "MAX_TRANSFERS", "too_large"]

#: What :meth:`OutgoingValues.plan` answers for a Value that goes inline in
#: parts (a sentinel, never equal to a transfer id or to ``None``).
IN_PARTS = object()
#: What :meth:`OutgoingValues.plan` answers for a Value that needs a transfer.
TRANSFER = object()
#: Most transfers a :class:`TransferPool` holds at once, by default.
MAX_TRANSFERS = 32


def too_large(size: int, limit: int) -> ProtocolError:
    """The error for a message of *size* bytes over a limit of *limit* bytes."""
    return ProtocolError(f"message of {size} bytes exceeds the limit of {limit} bytes")


class Encoded:
    """A value already encoded with :func:`workerwire.values.encode`.

    Passing it where a backend expects a value sends these bytes without
    encoding again (the worker's flow-control window sizes updates before
    sending).  With *pieces* (and their total *size*) instead of *data*, the
    encoding is their concatenation, which :func:`split_pieces` cuts into
    parts without joining them.
    """

    __slots__ = ("data", "pieces", "size")

    def __init__(self, data: bytes | None = None, pieces: list[bytes] | None = None, size: int = 0):
        if (data is None) == (pieces is None):
            raise TypeError("Encoded takes data or pieces")
        self.data = data
        self.pieces = pieces
        self.size = len(data) if data is not None else size


def split(data: bytes, part_size: int) -> list[memoryview]:
    """*data* as consecutive parts of *part_size* bytes (the last may be
    shorter), without copying."""
    view = memoryview(data)
    return [view[off:off + part_size] for off in range(0, len(data), part_size)]


class Part:
    """One part made of several buffers written back to back (a part of a
    value encoded as pieces): never joined before the frame is written."""

    __slots__ = ("buffers", "size")

    def __init__(self, buffers: list[bytes | memoryview], size: int):
        self.buffers = buffers
        self.size = size

    def __len__(self) -> int:
        return self.size


def split_pieces(pieces: list[bytes], size: int, part_size: int) -> list[Part]:
    """The concatenation of *pieces* (*size* bytes in all) as consecutive parts
    of *part_size* bytes (the last may be shorter), without copying."""
    parts: list[Part] = []
    current: list[bytes | memoryview] = []
    room = part_size
    for piece in pieces:
        view: memoryview | None = None
        start, n = 0, len(piece)
        while n - start > room:
            if view is None:
                view = memoryview(piece)
            current.append(view[start:start + room])
            start += room
            parts.append(Part(current, part_size))
            current, room = [], part_size
        if start < n:
            current.append(piece if start == 0 else (view if view is not None else memoryview(piece))[start:])
            room -= n - start
    if current:
        parts.append(Part(current, part_size - room))
    return parts


class Reassembly:
    """The parts of one message, received so far, bounded by *limit* bytes in all."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, limit: int):
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        """Keep one more part.

        :raises ProtocolError: the parts would exceed the limit (the part is not kept).
        """
        if self.size + len(data) > self.limit:
            raise too_large(self.size + len(data), self.limit)
        self.parts.append(data)
        self.size += len(data)

    def join(self) -> bytes:
        """The whole message; the reassembly starts empty again."""
        whole = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts, self.size = [], 0
        return whole


@dataclass
class _Transfer:
    total: int
    parts: list[bytes] = field(default_factory=list)
    received: int = 0

    @property
    def done(self) -> bool:
        return self.received == self.total


class TransferPool:
    """Numbered transfers of one direction of one link, each held until it is
    claimed by its id.

    For a wire where a transfer travels ahead of the message that names it
    and may be claimed later than the next message (``pb``: a call's
    arguments before the call, a result before the error answer naming it,
    with PB's ``decref`` free to come in between).  The rules (each
    violation is a :class:`~workerwire.errors.ProtocolError` the backend
    answers by closing the link):

    * a part is ``(int transfer, int offset, int total, bytes data)``,
      *transfer* positive, *data* never empty; no part is taken while
      :attr:`accepting` is false (before the peer logged in);
    * a transfer starts with offset 0 and a declared total of at most
      *max_message_size* together with the totals of every transfer held
      (finished or not, until claimed), and while fewer than *max_transfers*
      are held (each costs some memory however small); it is refused at that
      first part, before any data is kept;
    * its parts arrive in order, each at the offset where the previous one
      ended, with the same total, never past it; parts of other transfers
      may come in between;
    * :meth:`take` claims a finished transfer once.

    :param what: names a part in errors (``"Chunk"`` for amp).
    :param accepting: whether parts are taken yet.
    :param max_transfers: most transfers held at once (the default is amp's
        most keys in one box, so at most one transfer per Value of a message).
    """

    def __init__(self, max_message_size: int, what: str = "part", accepting: bool = True,
                 max_transfers: int = MAX_TRANSFERS):
        self.max_message_size = max_message_size
        self.what = what
        self.accepting = accepting
        self.max_transfers = max_transfers
        self._transfers: dict[int, _Transfer] = {}

    @property
    def buffered(self) -> int:
        """Bytes held for transfers that no message has used yet."""
        return sum(t.received for t in self._transfers.values())

    def part(self, transfer: int, offset: int, total: int, data: bytes) -> None:
        """Take one part of *transfer*.

        :raises ProtocolError: the part breaks a rule above.
        """
        what = self.what
        if not self.accepting:
            raise ProtocolError(f"{what}: transfer parts before the login")
        if type(transfer) is not int or type(offset) is not int or type(total) is not int or type(data) is not bytes:
            raise ProtocolError(f"{what}: a part is (int transfer, int offset, int total, bytes data)")
        if transfer < 1:
            raise ProtocolError(f"{what}: transfer id {transfer} must be positive")
        if not data:
            raise ProtocolError(f"{what}: empty data")
        self._check_turn(transfer, offset)
        t = self._transfers.get(transfer)
        if offset == 0:
            if t is not None:
                raise ProtocolError(f"{what}: transfer id {transfer} is already in use")
            if total < 1:
                raise ProtocolError(f"{what}: total {total} must be positive")
            if len(self._transfers) >= self.max_transfers:
                raise ProtocolError(f"{what}: transfer {transfer} starts while {len(self._transfers)} transfers, "
                                    "the most allowed, wait to be claimed")
            waiting = sum(held.total for held in self._transfers.values())
            if waiting + total > self.max_message_size:
                raise too_large(waiting + total, self.max_message_size)
            self._transfers[transfer] = t = _Transfer(total)
        else:
            if t is None or t.done:
                raise ProtocolError(f"{what}: offset {offset} of transfer {transfer}, which is not in progress")
            if total != t.total:
                raise ProtocolError(f"{what}: transfer {transfer} declared total {t.total}, now {total}")
            if offset != t.received:
                raise ProtocolError(f"{what}: transfer {transfer} expected offset {t.received}, got {offset}")
        if offset + len(data) > t.total:
            raise ProtocolError(f"{what}: transfer {transfer} runs past its declared total of {t.total} bytes")
        t.parts.append(data)
        t.received += len(data)
        self._turn_taken(transfer, t.done)

    def _check_turn(self, transfer: int, offset: int) -> None:
        """Hook: refuse a part of *transfer* at *offset* out of turn."""

    def _turn_taken(self, transfer: int, done: bool) -> None:
        """Hook: a part of *transfer* was kept (*done*: it was the last)."""

    def take(self, transfer: int) -> bytes:
        """The bytes of a finished transfer, which is then forgotten.

        :raises ProtocolError: no such finished transfer.
        """
        t = self._transfers.get(transfer) if type(transfer) is int else None
        if t is None or not t.done:
            raise ProtocolError(f"message names transfer {transfer!r}, which was not received")
        del self._transfers[transfer]
        return b"".join(t.parts)

    def clear(self) -> None:
        self._transfers.clear()


class Transfers(TransferPool):
    """The stricter :class:`TransferPool` for a wire whose transfers are all
    used by the very next message (``amp``'s ``Chunk`` boxes).

    Beyond the pool's rules: one transfer at a time (its parts back to back),
    and the next message must use every finished transfer (:meth:`take`)
    and find none unfinished (:meth:`begin_message`, :meth:`end_message`).
    """

    def __init__(self, max_message_size: int, what: str = "part"):
        super().__init__(max_message_size, what)
        self._open: int | None = None  # the unfinished transfer, if any

    def _check_turn(self, transfer: int, offset: int) -> None:
        if self._open is None or transfer == self._open:
            return
        if offset == 0:
            raise ProtocolError(f"{self.what}: transfer {transfer} starts while transfer {self._open} is unfinished")
        raise ProtocolError(f"{self.what}: offset {offset} of transfer {transfer}, which is not in progress")

    def _turn_taken(self, transfer: int, done: bool) -> None:
        self._open = None if done else transfer

    def begin_message(self) -> None:
        """A message (not a part) arrived; no transfer may be unfinished.

        :raises ProtocolError:
        """
        if self._open is not None:
            raise ProtocolError(f"a message arrived while transfer {self._open} was unfinished")

    def end_message(self) -> None:
        """The message was parsed; every finished transfer must have been used.

        :raises ProtocolError:
        """
        if self._transfers:
            ids = ", ".join(str(i) for i in sorted(self._transfers))
            self._transfers.clear()
            raise ProtocolError(f"transfer(s) {ids} were sent but not used by the next message")

    def clear(self) -> None:
        super().clear()
        self._open = None


class TransferIds:
    """Transfer ids of one direction: 1, 2, 3, ..."""

    def __init__(self) -> None:
        self._n = 0

    def __call__(self) -> int:
        self._n += 1
        return self._n


class OutgoingValues:
    """The Values of one message being built: size budget, parts and planned transfers.

    :param limit: most bytes of Values in the message (the smaller of both
        ends' ``max_message_size``).
    :param part_size: the largest part (and largest Value sent whole).
    :param extra_parts: parts beyond one per Value the message may carry
        inline (amp: keys left in the box, when the peer takes parts).
    """

    def __init__(self, limit: int, part_size: int, next_id: TransferIds, extra_parts: int = 0):
        self.limit = limit
        self.part_size = part_size
        self.size = 0
        self.extra_parts = extra_parts
        self.transfers: list[tuple[int, bytes]] = []
        self._next_id = next_id

    def plan(self, size: int) -> None | object:
        """Account for one Value of *size* bytes; say how it travels: ``None``
        whole, :data:`IN_PARTS` inline in consecutive parts, or
        :data:`TRANSFER` (then call :meth:`transfer`).

        :raises ProtocolError: the message's Values together exceed *limit*.
        """
        self.size += size
        if self.size > self.limit:
            raise too_large(self.size, self.limit)
        if size <= self.part_size:
            return None
        more = (size - 1) // self.part_size  # parts beyond the Value's own
        if more <= self.extra_parts:
            self.extra_parts -= more
            return IN_PARTS
        return TRANSFER

    def transfer(self, data: bytes) -> int:
        """Plan *data* as a transfer; its id."""
        tid = self._next_id()
        self.transfers.append((tid, data))
        return tid

    def pieces(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """``(offset, part)`` for each part of *data*, made one at a time."""
        return numbered_parts(data, self.part_size)


def numbered_parts(data: bytes, part_size: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, part)`` for each part of *data* (parts of *part_size* bytes,
    the last may be shorter), each a copy made when it is reached."""
    view = memoryview(data)
    for off in range(0, len(data), part_size):
        yield off, bytes(view[off:off + part_size])
