"""The amp backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
boxes built by hand on a worker link taken over from its connector, or on a
fresh connection that has not logged in (:func:`raw_connect`)."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.protocols import amp

from workerwire.conformance.raw_frames import TransportRawFrames, dial_raw, noise
from workerwire.credentials import login_response

__all__ = ["AMPRawFrames", "raw_connect"]


def _box(fields: dict[bytes, bytes]) -> bytes:
    return amp.AmpBox(fields).serialize()


class AMPRawFrames(TransportRawFrames):
    """Takes over ``connector.session.proto`` (its input is only counted), or
    none (*connector* ``None``: :func:`raw_connect` connects it)."""

    def __init__(self, connector: Any = None):
        super().__init__()
        self._asks = itertools.count(1)
        self.proto = None
        if connector is None:
            return
        session = getattr(connector, "session", None)
        if session is None:
            raise RuntimeError("the amp connector has not logged in")
        self.proto = session.proto
        self.transport = session.proto.transport
        self.proto.dataReceived = self.count  # the worker protocol parses nothing more
        self.proto.connectionLost = self.closing_too(self.proto.connectionLost)

    def _call(self, command: bytes, **fields: bytes) -> bytes:
        return _box({amp.COMMAND: command, amp.ASK: b"raw%d" % next(self._asks),
                     **{k.encode(): v for k, v in fields.items()}})

    def request(self, name: str) -> bytes:
        return self._call(b"Update", command_id=msgpack.packb(name), updates=msgpack.packb([]))

    def nested_update(self, command_id: str, depth: int) -> bytes:
        value = b"\x91" * (depth - 1) + b"\x90"
        updates = b"\x91\x92" + msgpack.packb("stdout") + value
        return self._call(b"Update", command_id=msgpack.packb(command_id), updates=updates)

    def login(self, name: str, password: str) -> bytes:
        # The response answers a challenge made up here: a login after the login is refused whatever it says.
        return self._call(b"Login", username=name.encode(), response=login_response(password, b"made-up"))

    def update(self, command_id: str, payload_size: int) -> bytes:  # inline: payload_size below 65,000
        return self._call(b"Update", command_id=msgpack.packb(command_id),
                          updates=msgpack.packb([["stdout", "x" * payload_size]]))

    def complete(self, command_id: str) -> bytes:
        return self._call(b"Complete", command_id=msgpack.packb(command_id), error=msgpack.packb(None))

    def oversized(self, size: int) -> bytes:
        # One box of 65,535-byte values under distinct keys, never terminated.
        return b"".join(b"\x00\x03k%02d\xff\xff" % i + b"x" * 0xFFFF for i in range(size // 0xFFFF + 1))

    def garbage(self, n: int) -> bytes:
        return b"\x01\x00" + noise(n)  # a key of 256 bytes: AMP keys are 1..255


def raw_connect(address: str, reactor: Any) -> Deferred[AMPRawFrames]:
    return ensureDeferred(dial_raw(reactor, address, AMPRawFrames(), "amp"))  # type: ignore[arg-type]
