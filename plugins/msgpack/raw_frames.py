"""The msgpack backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
MessagePack maps built by hand, sent as binary WebSocket messages through a
worker's real autobahn link taken over from its connector.

autobahn frames (and masks) each message as it would any other; only the
MessagePack inside is hand-built, so a message may carry what our encoder
refuses to build.  What the master sends is counted as raw bytes (WebSocket
framing included), never parsed.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack

from workerwire.budget import transport_queued
from workerwire.conformance.raw_frames import RawFrames

__all__ = ["MsgpackRawFrames"]

#: seq_numbers of hand-built requests start here, far from the link's own.
_FIRST_SEQ = 10_000_000


class MsgpackRawFrames(RawFrames):
    """Takes over ``connector._session.proto``: its input is only counted."""

    def __init__(self, connector: Any):
        super().__init__()
        session = getattr(connector, "_session", None)
        if session is None:
            raise RuntimeError("the msgpack connector has not logged in")
        self.proto = session.proto
        self.proto.dataReceived = self.count  # autobahn parses nothing more; the worker answers nothing
        self._seqs = itertools.count(_FIRST_SEQ)

    def request(self, name: str) -> bytes:
        # An op of that name: the master answers "Command <name> does not
        # exist." (cut to MAX_ECHO) and keeps the link.  An update for a
        # command that is not running would close it instead (a broken
        # dialect on this backend, docs/protocols/msgpack.md).
        return msgpack.packb({"op": name, "seq_number": next(self._seqs)})

    def nested_update(self, command_id: str, depth: int) -> bytes:
        value = b"\x91" * (depth - 1) + b"\x90"
        head = msgpack.packb("op") + msgpack.packb("update") + msgpack.packb("seq_number") + msgpack.packb(
            next(self._seqs)) + msgpack.packb("command_id") + msgpack.packb(command_id)
        return b"\x84" + head + msgpack.packb("args") + b"\x91\x92" + msgpack.packb("stdout") + value

    def write(self, data: bytes) -> None:
        proto = self.proto
        if proto.lost is None and proto.transport is not None and proto.state == proto.STATE_OPEN:
            proto.sendMessage(data, isBinary=True)

    def unsent(self) -> int:
        return transport_queued(self.proto.transport)

    def stop_reading(self) -> None:
        if self.proto.transport is not None:
            self.proto.transport.pauseProducing()
