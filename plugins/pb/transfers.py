"""The chunking extension: values larger than one banana frame allows.

Banana refuses a string over 640 KiB and a list over 640 K items, so a 16 MiB
``stdout`` update cannot travel as one jelly value.  When both ends are
workerwire brokers (each publishes an object named ``workerwire`` and asks
the other for its ``features`` when the link opens; a stock PB peer answers
"Invalid Object ID" without logging anything), a value that does not fit goes
like this:

1. the sender encodes the call's arguments with the core codec
   (:func:`workerwire.values.encode`, MessagePack) and sends the bytes as
   pieces of :data:`PIECE_SIZE` bytes: ``workerwire.piece(transfer_id, data,
   last)``, without answers;
2. then it calls ``workerwire_call(method, transfer_id, refs)`` on the target
   object, where *refs* maps argument positions to the PB references that
   cannot be encoded (the command reference of ``startCommand``);
3. the receiver reassembles the transfer (PB delivers messages in order, so
   every piece is there), decodes it and calls ``remote_<method>`` exactly as
   if the arguments had come as jelly.

A result too large for one frame is sent the same way, in the other
direction, and the call is answered with a ``WorkerwireTransfer`` error naming
the transfer; the caller's broker claims it and delivers the value.  A stock
peer never sees any of this: against it, a value that does not fit fails
with :class:`~workerwire.errors.UnsupportedValue`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.spread import pb

from workerwire.errors import ProtocolError
from workerwire.values import decode

__all__ = ["EXT_NAME", "EXT_CALL", "FEATURES", "PIECE_SIZE", "WorkerwireTransfer", "TransferSink", "pieces"]

#: Name under which every workerwire broker publishes its extension object.
EXT_NAME = b"workerwire"
#: The method a chunked call arrives as.
EXT_CALL = "workerwire_call"
#: What a workerwire broker answers to ``features``.  ``packed_updates``: its
#: command references also answer ``packedUpdate([bytes, ...])``, each item
#: the MessagePack encoding of ``[[key, value], ...]`` (see docs/protocols/pb.md).
FEATURES = {"protocol": 1, "chunks": True, "packed_updates": True}
#: Bytes per piece (well under banana's 640 KiB string limit).
PIECE_SIZE = 256 * 1024


class WorkerwireTransfer(pb.Error):
    """The answer to a call whose result travelled as transfer ``str(self)``."""


def pieces(payload: bytes, size: int = PIECE_SIZE) -> list[tuple[bytes, bool]]:
    """Split *payload* into ``(piece, last)`` pairs (at least one)."""
    if not payload:
        return [(b"", True)]
    out = []
    for start in range(0, len(payload), size):
        out.append((payload[start:start + size], start + size >= len(payload)))
    return out


@dataclass
class _Incoming:
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    complete: bool = False


class TransferSink:
    """Reassembles the transfers one peer sends, within a byte budget.

    :param limit: most bytes held for unclaimed transfers at any time; more is
        a :class:`~workerwire.errors.ProtocolError`.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.accepting = False
        self._incoming: dict[int, _Incoming] = {}
        self._held = 0

    def piece(self, transfer_id: Any, data: Any, last: Any) -> None:
        """Add one piece.

        :raises ProtocolError: malformed piece, piece after the last one,
            pieces before the peer may send any, or over the byte budget.
        """
        if not self.accepting:
            raise ProtocolError("transfer pieces before the login")
        if type(transfer_id) is not int or type(data) is not bytes or type(last) is not bool:
            raise ProtocolError("a transfer piece is (int id, bytes data, bool last)")
        entry = self._incoming.setdefault(transfer_id, _Incoming())
        if entry.complete:
            raise ProtocolError(f"piece for transfer {transfer_id}, which is already complete")
        entry.parts.append(data)
        entry.size += len(data)
        self._held += len(data)
        if self._held > self.limit:
            raise ProtocolError(f"transfers of more than {self.limit} bytes are waiting to be claimed")
        entry.complete = last

    def claim(self, transfer_id: Any) -> Any:
        """Remove a complete transfer and return its decoded value.

        :raises ProtocolError: no such complete transfer, or its content is
            not a valid encoding of a contract value.
        """
        entry = self._incoming.get(transfer_id) if type(transfer_id) is int else None
        if entry is None or not entry.complete:
            raise ProtocolError(f"transfer {transfer_id!r} is unknown or incomplete")
        del self._incoming[transfer_id]
        self._held -= entry.size
        data = b"".join(entry.parts)
        entry.parts.clear()  # released before decoding: the encoding and the value, not the pieces too
        return decode(data, self.limit)

    @property
    def held(self) -> int:
        return self._held
