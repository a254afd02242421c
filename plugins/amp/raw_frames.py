"""The amp backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
boxes built by hand on a worker link taken over from its connector."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
from twisted.protocols import amp

from workerwire.budget import transport_queued
from workerwire.conformance.raw_frames import RawFrames

__all__ = ["AMPRawFrames"]


def _box(fields: dict[bytes, bytes]) -> bytes:
    return amp.AmpBox(fields).serialize()


class AMPRawFrames(RawFrames):
    """Takes over ``connector.session.proto``: its input is only counted."""

    def __init__(self, connector: Any):
        super().__init__()
        session = getattr(connector, "session", None)
        if session is None:
            raise RuntimeError("the amp connector has not logged in")
        self.proto = session.proto
        self.proto.dataReceived = self.count  # the worker protocol parses nothing more
        self._asks = itertools.count(1)

    def request(self, name: str) -> bytes:
        return _box({
            amp.COMMAND: b"Update", amp.ASK: b"raw%d" % next(self._asks),
            b"command_id": msgpack.packb(name), b"updates": msgpack.packb([]),
        })

    def nested_update(self, command_id: str, depth: int) -> bytes:
        value = b"\x91" * (depth - 1) + b"\x90"
        updates = b"\x91\x92" + msgpack.packb("stdout") + value
        return _box({
            amp.COMMAND: b"Update", amp.ASK: b"raw%d" % next(self._asks),
            b"command_id": msgpack.packb(command_id), b"updates": updates,
        })

    def write(self, data: bytes) -> None:
        transport = self.proto.transport
        if transport is not None and not self.proto.lost:
            transport.write(data)

    def unsent(self) -> int:
        return transport_queued(self.proto.transport)

    def stop_reading(self) -> None:
        if self.proto.transport is not None:
            self.proto.transport.pauseProducing()
