"""The null backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
messages built by hand on a worker pipe taken over from its connector.

The pipe's inbox stands for a socket: a paused end leaves what the master
sends in its inbox, which is the master's write buffer (``PipeEnd.queued``)
and what the master's budget counts."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack

from workerwire.conformance.raw_frames import RawFrames

__all__ = ["NullRawFrames"]


class NullRawFrames(RawFrames):
    """Takes over ``connector._session.peer_rpc.pipe``: its messages are only counted."""

    def __init__(self, connector: Any):
        super().__init__()
        session = getattr(connector, "_session", None)
        if session is None:
            raise RuntimeError("the null connector has not logged in")
        self.pipe = session.peer_rpc.pipe
        self.pipe.on_message = self.count  # the worker parses nothing more
        self._ids = itertools.count(10_000_000)

    def request(self, name: str) -> bytes:
        return msgpack.packb(["call", next(self._ids), "update", [name, []]])

    def nested_update(self, command_id: str, depth: int) -> bytes:
        head = msgpack.packb(["call", next(self._ids), "update"])[1:]  # the array's first three items
        value = b"\x91" * (depth - 1) + b"\x90"
        return (b"\x94" + head + b"\x92" + msgpack.packb(command_id) + b"\x91\x92" + msgpack.packb("stdout")
                + value)

    def write(self, data: bytes) -> None:
        if not self.pipe.closed:
            self.pipe.send(data)

    def unsent(self) -> int:
        return self.pipe.queued

    def stop_reading(self) -> None:
        self.pipe.pauseProducing()
