"""The pb backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
banana frames built by hand on a worker link taken over from its connector,
or on a fresh connection that has not logged in (:func:`raw_connect`).

A PB message names its target by the object's id (luid), not by a command
id: a command that is not running here (or another worker's) gets an id
this link was never given."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from workerwire.conformance.raw_frames import TransportRawFrames, dial_raw, noise

from .codec import b128

__all__ = ["PBRawFrames", "raw_connect"]

_LIST, _INT, _STRING = b"\x80", b"\x81", b"\x82"
#: The client's side of banana's negotiation: dialect "pb", PB version 6.
NEGOTIATE = b"\x02\x82pb" + b"\x02\x80\x07\x82version\x06\x81"
#: An object id no link is given (a command that is not running on it).
UNKNOWN_LUID = 999_999


def _list(n: int) -> bytes:
    return b128(n) + _LIST


def _str(data: bytes) -> bytes:
    return b128(len(data)) + _STRING + data


def _int(n: int) -> bytes:
    return b128(n) + _INT


def _message(request_id: int, luid: int | bytes, method: bytes, args: bytes) -> bytes:
    """``[b"message", id, luid, method, 1, <jellied args>, {}]`` in banana."""
    target = _str(luid) if isinstance(luid, bytes) else _int(luid)
    return (_list(7) + _str(b"message") + _int(request_id) + target + _str(method) + _int(1)
            + args + _list(1) + _str(b"dictionary"))


def _tuple(*items: bytes) -> bytes:
    return _list(len(items) + 1) + _str(b"tuple") + b"".join(items)


class PBRawFrames(TransportRawFrames):
    """Takes over ``connector._session.broker`` (its input is only counted),
    or none (*connector* ``None``: :func:`raw_connect` connects it)."""

    def __init__(self, connector: Any = None):
        super().__init__()
        self.connector = connector
        self._ids = itertools.count(10_000_000)
        self.perspective = UNKNOWN_LUID
        if connector is None:
            return
        link = getattr(connector, "_session", None)
        if link is None or link.perspective is None:
            raise RuntimeError("the pb connector has not logged in")
        self.broker = link.broker
        self.transport = link.broker.transport
        self.perspective = link.perspective.luid
        self.broker.dataReceived = self.count  # the broker parses nothing more
        self.broker.connectionLost = self.closing_too(self.broker.connectionLost)

    def _command_luid(self, command_id: str) -> int:
        channels = getattr(self.connector, "_channels", {})
        channel = channels.get(command_id)
        return UNKNOWN_LUID if channel is None else channel._ref.luid

    def request(self, name: str) -> bytes:
        return _message(next(self._ids), self.perspective, name.encode("utf-8"), _tuple())

    def nested_update(self, command_id: str, depth: int) -> bytes:
        # jelly: args = (tuple (list (list (dictionary ((unicode "stdout") VALUE)) 0)))
        value = (_list(2) + _str(b"list")) * (depth - 1) + _list(1) + _str(b"list")
        return self._update(command_id, value)

    def _update(self, command_id: str, value: bytes) -> bytes:
        updates = (_list(2) + _str(b"list") + _list(3) + _str(b"list")
                   + _list(2) + _str(b"dictionary") + _list(2) + _list(2) + _str(b"unicode") + _str(b"stdout")
                   + value + _int(0))
        return _message(next(self._ids), self._command_luid(command_id), b"update", _tuple(updates))

    def login(self, name: str, password: str) -> bytes:
        # root.login(name): the first half of PB's challenge-response; refused after the login.
        return _message(next(self._ids), b"root", b"login", _tuple(_str(name.encode("utf-8"))))

    def update(self, command_id: str, payload_size: int) -> bytes:
        # packedUpdate, as a workerwire worker sends (its window is what the master accounts).
        packed = b"\x91\x92\xa6stdout\xdb" + payload_size.to_bytes(4, "big") + b"x" * payload_size
        return _message(next(self._ids), self._command_luid(command_id), b"packedUpdate",
                        _tuple(_list(2) + _str(b"list") + _str(packed)))

    def complete(self, command_id: str) -> bytes:
        return _message(next(self._ids), self._command_luid(command_id), b"complete",
                        _tuple(_list(1) + _str(b"None")))

    def oversized(self, size: int) -> bytes:
        return b128(640 * 1024 - 1) + _STRING + b"x" * size  # one banana string under its limit, unfinished

    def garbage(self, n: int) -> bytes:
        return b"\x01\xff" + noise(n)  # 0xff: no banana type byte


def raw_connect(address: str, reactor: Any) -> Deferred[PBRawFrames]:
    return ensureDeferred(dial_raw(reactor, address, PBRawFrames(), "pb", NEGOTIATE))  # type: ignore[arg-type]
