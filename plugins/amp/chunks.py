"""Values larger than one AMP value: splitting on send, bounded reassembly on receive.

A Value whose MessagePack encoding fits in one AMP value (65,535 bytes) travels
inline.  A larger one is sent as a *transfer*: ``Chunk`` boxes carrying
consecutive pieces, immediately followed by the box that uses it, which names
the transfer under ``<argument>.transfer``.  The rules the receiver enforces
(each violation is a :class:`~workerwire.errors.ProtocolError` that closes the
connection) are those of ``docs/protocols/amp.md``, "Chunking":

* a transfer starts with ``offset`` 0 and a declared ``total`` of at most the
  receiver's ``max_message_size`` (together with the other transfers already
  waiting for the same box); it is refused at that first chunk, before any
  data is kept;
* its chunks arrive back to back, each at the offset where the previous one
  ended, with the same ``total``, never past it, never empty;
* the next non-``Chunk`` box must use every finished transfer, and none may
  still be unfinished when it arrives.

So a receiver never holds more than ``max_message_size`` bytes of chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from workerwire.errors import ProtocolError

__all__ = ["MAX_CHUNK", "IN_PARTS", "TRANSFER", "Assembler", "Outgoing", "Part", "TransferIds", "split_parts",
           "split_pieces"]

#: Largest chunk (and largest inline Value, or part of one): the AMP value limit.
MAX_CHUNK = 0xFFFF
#: What :meth:`Outgoing.plan` answers for a Value that goes inline in parts
#: (a sentinel, never equal to a transfer id or to ``None``).
IN_PARTS = object()
#: What :meth:`Outgoing.plan` answers for a Value that needs a transfer.
TRANSFER = object()


@dataclass
class _Transfer:
    total: int
    parts: list[bytes] = field(default_factory=list)
    received: int = 0

    @property
    def done(self) -> bool:
        return self.received == self.total


class Assembler:
    """Reassembles the transfers of one direction of one connection."""

    def __init__(self, max_message_size: int):
        self.max_message_size = max_message_size
        self._transfers: dict[int, _Transfer] = {}
        self._open: int | None = None  # the unfinished transfer, if any

    @property
    def buffered(self) -> int:
        """Bytes held for transfers that no box has used yet."""
        return sum(t.received for t in self._transfers.values())

    def chunk(self, transfer: int, offset: int, total: int, data: bytes) -> None:
        """Take one ``Chunk`` box's fields.

        :raises ProtocolError: the chunk breaks a rule above.
        """
        if transfer < 1:
            raise ProtocolError(f"Chunk: transfer id {transfer} must be positive")
        if not data:
            raise ProtocolError("Chunk: empty data")
        if offset == 0:
            if self._open is not None:
                raise ProtocolError(
                    f"Chunk: transfer {transfer} starts while transfer {self._open} is unfinished")
            if transfer in self._transfers:
                raise ProtocolError(f"Chunk: transfer id {transfer} is already in use")
            if total < 1:
                raise ProtocolError(f"Chunk: total {total} must be positive")
            waiting = sum(t.total for t in self._transfers.values())
            if waiting + total > self.max_message_size:
                raise ProtocolError(
                    f"message of {waiting + total} bytes exceeds the limit of {self.max_message_size} bytes")
            self._transfers[transfer] = t = _Transfer(total)
            self._open = transfer
        else:
            if transfer != self._open:
                raise ProtocolError(f"Chunk: offset {offset} of transfer {transfer}, which is not in progress")
            t = self._transfers[transfer]
            if total != t.total:
                raise ProtocolError(f"Chunk: transfer {transfer} declared total {t.total}, now {total}")
            if offset != t.received:
                raise ProtocolError(f"Chunk: transfer {transfer} expected offset {t.received}, got {offset}")
        if offset + len(data) > t.total:
            raise ProtocolError(
                f"Chunk: transfer {transfer} runs past its declared total of {t.total} bytes")
        t.parts.append(data)
        t.received += len(data)
        if t.done:
            self._open = None

    def begin_box(self) -> None:
        """A non-``Chunk`` box arrived; no transfer may be unfinished.

        :raises ProtocolError:
        """
        if self._open is not None:
            raise ProtocolError(f"a box arrived while transfer {self._open} was unfinished")

    def take(self, transfer: int) -> bytes:
        """The bytes of a finished transfer, which is then forgotten.

        :raises ProtocolError: no such finished transfer.
        """
        t = self._transfers.get(transfer)
        if t is None or not t.done:
            raise ProtocolError(f"box names transfer {transfer}, which was not received")
        del self._transfers[transfer]
        return b"".join(t.parts)

    def end_box(self) -> None:
        """The box was parsed; every finished transfer must have been used.

        :raises ProtocolError:
        """
        if self._transfers:
            ids = ", ".join(str(i) for i in sorted(self._transfers))
            self._transfers.clear()
            raise ProtocolError(f"transfer(s) {ids} were sent but not used by the next box")

    def clear(self) -> None:
        self._transfers.clear()
        self._open = None


class Outgoing:
    """Values of one box being built: size budget, parts and planned transfers.

    :param extra_keys: keys the box may spend on the parts of large Values
        (0 unless the peer announced the ``parts`` capability).
    """

    def __init__(self, limit: int, next_id: "TransferIds", extra_keys: int = 0):
        self.limit = limit
        self.size = 0
        self.extra_keys = extra_keys
        self.transfers: list[tuple[int, bytes]] = []
        self._next_id = next_id

    def plan(self, size: int) -> None | object:
        """Account for one Value of *size* bytes; say how it travels: ``None``
        inline in one value, :data:`IN_PARTS` inline in consecutive parts (the
        box has keys left for them), or :data:`TRANSFER` (then call
        :meth:`transfer`).

        :raises ProtocolError: the box's Values together exceed *limit*.
        """
        self.size += size
        if self.size > self.limit:
            raise ProtocolError(
                f"message of {self.size} bytes exceeds the limit of {self.limit} bytes")
        if size <= MAX_CHUNK:
            return None
        more = (size - 1) // MAX_CHUNK  # keys beyond the Value's own
        if more <= self.extra_keys:
            self.extra_keys -= more
            return IN_PARTS
        return TRANSFER

    def transfer(self, data: bytes) -> int:
        """Plan *data* as a transfer; its id."""
        tid = self._next_id()
        self.transfers.append((tid, data))
        return tid

    @staticmethod
    def pieces(data: bytes) -> Iterator[tuple[int, bytes]]:
        """``(offset, piece)`` for each chunk of *data*, made one at a time."""
        view = memoryview(data)
        for off in range(0, len(data), MAX_CHUNK):
            yield off, bytes(view[off:off + MAX_CHUNK])


class TransferIds:
    """Transfer ids of one direction: 1, 2, 3, ..."""

    def __init__(self) -> None:
        self._n = 0

    def __call__(self) -> int:
        self._n += 1
        return self._n


def split_parts(data: bytes) -> list[memoryview]:
    """*data* as consecutive parts of :data:`MAX_CHUNK` bytes (the last may be
    shorter), without copying."""
    view = memoryview(data)
    return [view[off:off + MAX_CHUNK] for off in range(0, len(data), MAX_CHUNK)]


class Part:
    """One AMP value made of several buffers written back to back (a part of a
    Value encoded as pieces): never joined before the box is."""

    __slots__ = ("buffers", "size")

    def __init__(self, buffers: list[bytes | memoryview], size: int):
        self.buffers = buffers
        self.size = size

    def __len__(self) -> int:
        return self.size


def split_pieces(pieces: list[bytes], size: int) -> list[Part]:
    """The concatenation of *pieces* (*size* bytes in all) as consecutive parts
    of :data:`MAX_CHUNK` bytes (the last may be shorter), without copying."""
    parts: list[Part] = []
    current: list[bytes | memoryview] = []
    room = MAX_CHUNK
    for piece in pieces:
        view: memoryview | None = None
        start, n = 0, len(piece)
        while n - start > room:
            if view is None:
                view = memoryview(piece)
            current.append(view[start:start + room])
            start += room
            parts.append(Part(current, MAX_CHUNK))
            current, room = [], MAX_CHUNK
        if start < n:
            current.append(piece if start == 0 else (view if view is not None else memoryview(piece))[start:])
            room -= n - start
    if current:
        parts.append(Part(current, MAX_CHUNK - room))
    return parts
