"""The pb backend's :class:`~workerwire.conformance.raw_frames.RawFrames`:
banana frames built by hand on a worker link taken over from its connector."""

from __future__ import annotations

import itertools
from typing import Any

from workerwire.budget import transport_queued
from workerwire.conformance.raw_frames import RawFrames

from .codec import b128

__all__ = ["PBRawFrames"]

_LIST, _INT, _STRING = b"\x80", b"\x81", b"\x82"


def _list(n: int) -> bytes:
    return b128(n) + _LIST


def _str(data: bytes) -> bytes:
    return b128(len(data)) + _STRING + data


def _int(n: int) -> bytes:
    return b128(n) + _INT


def _message(request_id: int, luid: int, method: bytes, args: bytes) -> bytes:
    """``[b"message", id, luid, method, 1, <jellied args>, {}]`` in banana."""
    return (_list(7) + _str(b"message") + _int(request_id) + _int(luid) + _str(method) + _int(1)
            + args + _list(1) + _str(b"dictionary"))


class PBRawFrames(RawFrames):
    """Takes over ``connector._session.broker``: its input is only counted."""

    def __init__(self, connector: Any):
        super().__init__()
        link = getattr(connector, "_session", None)
        if link is None or link.perspective is None:
            raise RuntimeError("the pb connector has not logged in")
        self.connector = connector
        self.broker = link.broker
        self.perspective = link.perspective.luid
        self.broker.dataReceived = self.count  # the broker parses nothing more
        self._ids = itertools.count(10_000_000)

    def request(self, name: str) -> bytes:
        return _message(next(self._ids), self.perspective, name.encode("utf-8"), _list(1) + _str(b"tuple"))

    def nested_update(self, command_id: str, depth: int) -> bytes:
        channel = self.connector._channels.get(command_id)
        if channel is None:
            raise KeyError(f"no running command {command_id!r} on this worker")
        # jelly: args = (tuple (list (list (dictionary ((unicode "stdout") VALUE)) 0)))
        value = (_list(2) + _str(b"list")) * (depth - 1) + _list(1) + _str(b"list")
        updates = (_list(2) + _str(b"list") + _list(3) + _str(b"list")
                   + _list(2) + _str(b"dictionary") + _list(2) + _list(2) + _str(b"unicode") + _str(b"stdout")
                   + value + _int(0))
        args = _list(2) + _str(b"tuple") + updates
        return _message(next(self._ids), channel._ref.luid, b"update", args)

    def write(self, data: bytes) -> None:
        transport = self.broker.transport
        if transport is not None and not self.broker.disconnected:
            transport.write(data)

    def unsent(self) -> int:
        return transport_queued(self.broker.transport)

    def stop_reading(self) -> None:
        if self.broker.transport is not None:
            self.broker.transport.pauseProducing()
