"""Raw autobahn WebSocket with MessagePack messages, no workerwire: the baseline
of the msgpack backend.

Every message is one binary WebSocket message of one MessagePack map, as in
Buildbot's dialect: the master asks ``{"op": "print", "seq": n}`` and the worker
answers ``{"op": "response", "seq": n}``; streaming sends ``update`` messages of
*chunk* bytes with *window* of them unanswered, then ``complete``.  No login,
no value checks, no flow control beyond the window, no parts.
"""

from __future__ import annotations

from typing import Any

import msgpack
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.defer import Deferred, succeed

from .base import PRINT_MESSAGE, chunk_bytes

__all__ = ["listen", "run_worker"]

_LIMIT = 64 * 1024 * 1024


def _pack(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


class MasterWS(WebSocketServerProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.worker_pid: int | None = None
        self._seq = 0
        self._waiting: dict[int, Deferred[Any]] = {}
        self.received = 0
        self.stream_done: Deferred[int] | None = None

    def onOpen(self) -> None:
        first = self.factory.first
        if not first.called:
            first.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        msg = msgpack.unpackb(payload, raw=False)
        op = msg["op"]
        if op == "response":
            self._waiting.pop(msg["seq"]).callback(None)
        elif op == "update":
            self.received += len(msg["data"])
            self.sendMessage(_pack({"op": "response", "seq": msg["seq"]}), isBinary=True)
        elif op == "complete":
            self.sendMessage(_pack({"op": "response", "seq": msg["seq"]}), isBinary=True)
            d, self.stream_done = self.stream_done, None
            if d is not None:
                d.callback(self.received)

    def _request(self, msg: dict[str, Any]) -> Deferred[Any]:
        seq = self._seq
        self._seq += 1
        msg["seq"] = seq
        d: Deferred[Any] = Deferred()
        self._waiting[seq] = d
        self.sendMessage(_pack(msg), isBinary=True)
        return d

    # Link
    def call(self) -> Deferred[Any]:
        return self._request({"op": "print", "message": PRINT_MESSAGE})

    def stream(self, nbytes: int) -> Deferred[int]:
        self.received = 0
        self.stream_done = Deferred()
        self._request({"op": "stream", "nbytes": nbytes, "chunk": self.factory.chunk, "window": self.factory.window})
        return self.stream_done

    def close(self) -> Deferred[None]:
        self.transport.loseConnection()
        return succeed(None)


def listen(reactor: Any, chunk: int, window: int) -> tuple[WebSocketServerFactory, Any]:
    factory = WebSocketServerFactory()
    factory.protocol = MasterWS
    factory.setProtocolOptions(maxMessagePayloadSize=_LIMIT, maxFramePayloadSize=_LIMIT)
    factory.chunk = chunk
    factory.window = window
    factory.first = Deferred()
    port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1")
    return factory, port


class WorkerWS(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self._seq = 0
        self._waiting: dict[int, Any] = {}

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        msg = msgpack.unpackb(payload, raw=False)
        op = msg["op"]
        if op == "response":
            self._waiting.pop(msg["seq"])()
            return
        self.sendMessage(_pack({"op": "response", "seq": msg["seq"]}), isBinary=True)
        if op == "stream":
            self._stream(msg["nbytes"], msg["chunk"], msg["window"])

    def _send(self, msg: dict[str, Any], answered: Any) -> None:
        seq = self._seq
        self._seq += 1
        msg["seq"] = seq
        self._waiting[seq] = answered
        self.sendMessage(_pack(msg), isBinary=True)

    def _stream(self, nbytes: int, chunk: int, window: int) -> None:
        data = chunk_bytes(chunk)
        state = {"remaining": nbytes, "outstanding": 0}

        def pump() -> None:
            while state["outstanding"] < window and state["remaining"] > 0:
                piece = data if state["remaining"] >= chunk else data[: state["remaining"]]
                state["remaining"] -= len(piece)
                state["outstanding"] += 1
                self._send({"op": "update", "data": piece}, acked)
            if state["remaining"] == 0 and state["outstanding"] == 0:
                state["remaining"] = -1
                self._send({"op": "complete"}, lambda: None)

        def acked() -> None:
            state["outstanding"] -= 1
            pump()

        pump()


def run_worker(reactor: Any, host: str, port: int) -> None:
    factory = WebSocketClientFactory(f"ws://{host}:{port}/")
    factory.protocol = WorkerWS
    factory.setProtocolOptions(maxMessagePayloadSize=_LIMIT, maxFramePayloadSize=_LIMIT)
    reactor.connectTCP(host, port, factory)
