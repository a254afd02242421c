"""The chunking extension: values larger than one banana frame allows.

Banana refuses a string over 640 KiB and a list over 640 K items, so a 16 MiB
``stdout`` update cannot travel as one jelly value.  When both ends are
workerwire brokers of the same extension version (each publishes an object
named ``workerwire`` and asks the other for its ``features`` when the link
opens; a stock PB peer answers "Invalid Object ID" without logging anything),
a value that does not fit goes as core's parts (:mod:`workerwire.parts`):

1. the sender encodes the call's arguments with the core codec
   (:func:`workerwire.values.encode`, MessagePack) and sends the bytes as a
   numbered transfer in parts of at most :data:`PART_SIZE` bytes:
   ``workerwire.part(transfer_id, offset, total, data)``, without answers;
2. then it calls ``workerwire_call(method, transfer_id, refs)`` on the target
   object, where *refs* maps argument positions to the PB references that
   cannot be encoded (the command reference of ``startCommand``);
3. the receiver reassembles the transfer in a
   :class:`~workerwire.parts.TransferPool` (which checks offsets, totals and
   the byte budget), claims it by id, decodes it and calls
   ``remote_<method>`` exactly as if the arguments had come as jelly.

A result too large for one frame is sent the same way, in the other
direction, and the call is answered with a ``WorkerwireTransfer`` error naming
the transfer; the caller's broker claims it and delivers the value.  A stock
peer never sees any of this: against it, a value that does not fit fails
with :class:`~workerwire.errors.UnsupportedValue`.  So does a workerwire peer
that answers another extension version (version 1 sent
``piece(transfer_id, data, last)``): each end treats the other as a stock
peer (see docs/protocols/pb.md, section 7).
"""

from __future__ import annotations

from twisted.spread import pb

__all__ = ["EXT_NAME", "EXT_CALL", "FEATURES", "PART_SIZE", "WorkerwireTransfer"]

#: Name under which every workerwire broker publishes its extension object.
EXT_NAME = b"workerwire"
#: The method a chunked call arrives as.
EXT_CALL = "workerwire_call"
#: What a workerwire broker answers to ``features``: the extension's version
#: (``protocol``; a peer answering another one is treated as a stock peer),
#: ``parts``: it takes ``workerwire.part``; ``packed_updates``: its command
#: references also answer ``packedUpdate([bytes, ...])``, each item the
#: MessagePack encoding of ``[[key, value], ...]`` (see docs/protocols/pb.md).
FEATURES = {"protocol": 2, "parts": True, "packed_updates": True}
#: Bytes per part (well under banana's 640 KiB string limit).
PART_SIZE = 256 * 1024


class WorkerwireTransfer(pb.Error):
    """The answer to a call whose result travelled as transfer ``str(self)``."""
