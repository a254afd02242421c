"""The null backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
messages built by hand on a worker pipe taken over from its connector, or on
a fresh pipe that has not logged in (:func:`raw_connect`).

The pipe's inbox stands for a socket: a paused end leaves what the master
sends in its inbox, which is the master's write buffer (``PipeEnd.queued``)
and what the master's budget counts.  Its "bytes" are whole messages: a
message is one frame."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, succeed

from workerwire.conformance.raw_frames import RawFrames, noise

from .master import parse_port
from .network import PipeEnd, network_for

__all__ = ["NullRawFrames", "raw_connect"]


class NullRawFrames(RawFrames):
    """Takes over ``connector._session.peer_rpc.pipe`` (its messages are only
    counted), or a fresh *pipe*."""

    def __init__(self, connector: Any = None, pipe: PipeEnd | None = None):
        super().__init__()
        if pipe is None:
            session = getattr(connector, "_session", None)
            if session is None:
                raise RuntimeError("the null connector has not logged in")
            pipe = session.peer_rpc.pipe
        self.pipe = pipe
        self.pipe.on_message = self.count  # the worker parses nothing more
        self.pipe.on_close = self.closing_too(self.pipe.on_close)
        self._ids = itertools.count(10_000_000)

    def _call(self, method: str, *args: Any) -> bytes:
        return msgpack.packb(["call", next(self._ids), method, list(args)])

    def request(self, name: str) -> bytes:
        return self._call("update", name, [])

    def nested_update(self, command_id: str, depth: int) -> bytes:
        head = msgpack.packb(["call", next(self._ids), "update"])[1:]  # the array's first three items
        value = b"\x91" * (depth - 1) + b"\x90"
        return (b"\x94" + head + b"\x92" + msgpack.packb(command_id) + b"\x91\x92" + msgpack.packb("stdout")
                + value)

    def login(self, name: str, password: str) -> bytes:
        return self._call("login", name, password)

    def update(self, command_id: str, payload_size: int) -> bytes:
        return self._call("update", command_id, [["stdout", "x" * payload_size]])

    def complete(self, command_id: str) -> bytes:
        return self._call("complete", command_id, None)

    def oversized(self, size: int) -> bytes:
        return self._call("login", "x" * size, "")

    def garbage(self, n: int) -> bytes:
        return b"\xc1" + noise(n)  # 0xc1: never used in MessagePack

    def write(self, data: bytes) -> None:
        if not self.pipe.closed:
            self.pipe.send(data)

    def unsent(self) -> int:
        return self.pipe.queued

    def stop_reading(self) -> None:
        self.pipe.pauseProducing()


def raw_connect(address: str, reactor: Any) -> Deferred[NullRawFrames]:
    return succeed(NullRawFrames(pipe=network_for(reactor).connect(parse_port(address))))
