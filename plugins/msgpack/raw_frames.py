"""The msgpack backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
MessagePack maps built by hand, sent as binary WebSocket messages through a
worker's real autobahn link taken over from its connector; or bytes on a
fresh TCP connection that has not logged in (:func:`raw_connect`), where the
master expects the HTTP upgrade that is the login.

autobahn frames (and masks) each message as it would any other; only the
MessagePack inside is hand-built, so a message may carry what our encoder
refuses to build.  What the master sends is counted as raw bytes (WebSocket
framing included), never parsed.

The login is the WebSocket upgrade: an HTTP request whose ``Authorization:
Basic`` header carries the credentials (as Buildbot's msgpack master reads
it; its dialect has no other login).  ``login`` is that request: on a fresh
link, written as it is; after the login, written into the WebSocket as a
message, which is what a second login on that link can be.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, ensureDeferred

from workerwire.conformance.raw_frames import TransportRawFrames, dial_raw, noise

__all__ = ["MsgpackRawFrames", "raw_connect"]

#: seq_numbers of hand-built requests start here, far from the link's own.
_FIRST_SEQ = 10_000_000


class MsgpackRawFrames(TransportRawFrames):
    """Takes over ``connector._session.proto`` (its input is only counted), or
    none (*connector* ``None``: :func:`raw_connect` connects it and
    :meth:`write` writes bytes as they are, no WebSocket framing)."""

    def __init__(self, connector: Any = None):
        super().__init__()
        self._seqs = itertools.count(_FIRST_SEQ)
        self.proto = None
        if connector is None:
            return
        session = getattr(connector, "_session", None)
        if session is None:
            raise RuntimeError("the msgpack connector has not logged in")
        self.proto = session.proto
        self.transport = session.proto.transport
        self.proto.dataReceived = self.count  # autobahn parses nothing more; the worker answers nothing
        self.proto.connectionLost = self.closing_too(self.proto.connectionLost)

    def _op(self, op: str, **fields: Any) -> bytes:
        return msgpack.packb({"op": op, "seq_number": next(self._seqs), **fields})

    def request(self, name: str) -> bytes:
        # An op of that name: the master answers "Command <name> does not
        # exist." (cut to MAX_ECHO) and keeps the link.  An update for a
        # command that is not running would close it instead (a broken
        # dialect on this backend, docs/protocols/msgpack.md).
        return self._op(name)

    def nested_update(self, command_id: str, depth: int) -> bytes:
        value = b"\x91" * (depth - 1) + b"\x90"
        head = msgpack.packb("op") + msgpack.packb("update") + msgpack.packb("seq_number") + msgpack.packb(
            next(self._seqs)) + msgpack.packb("command_id") + msgpack.packb(command_id)
        return b"\x84" + head + msgpack.packb("args") + b"\x91\x92" + msgpack.packb("stdout") + value

    def login(self, name: str, password: str) -> bytes:
        credentials = base64.b64encode(f"{name}:{password}".encode("utf-8")).decode("ascii")
        return ("GET / HTTP/1.1\r\nHost: master\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Basic {credentials}\r\n\r\n").encode("ascii")

    def update(self, command_id: str, payload_size: int) -> bytes:
        data = self._op("update", command_id=command_id, args=[["stdout", "x" * payload_size]])
        # Before the login the master reads an HTTP request: the update ends its head (malformed).
        return data + b"\r\n\r\n" if self.proto is None else data

    def complete(self, command_id: str) -> bytes:
        return self._op("complete", command_id=command_id, args=None)

    def oversized(self, size: int) -> bytes:
        # A WebSocket upgrade request (the login) whose headers never end.
        return b"GET / HTTP/1.1\r\nHost: master\r\nUpgrade: websocket\r\nX-Stuff: " + b"x" * size

    def garbage(self, n: int) -> bytes:
        if self.proto is None:
            return b"\x00" + noise(n) + b"\r\n\r\n"  # not an HTTP request
        return b"\xc1" + noise(n)  # 0xc1: never used in MessagePack

    def write(self, data: bytes) -> None:
        proto = self.proto
        if proto is None:
            super().write(data)
        elif proto.lost is None and proto.transport is not None and proto.state == proto.STATE_OPEN:
            proto.sendMessage(data, isBinary=True)


def raw_connect(address: str, reactor: Any) -> Deferred[MsgpackRawFrames]:
    return ensureDeferred(dial_raw(reactor, address, MsgpackRawFrames(), "msgpack"))  # type: ignore[arg-type]
