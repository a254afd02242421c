"""Helpers for the amp backend's tests (no tests here): a raw AMP peer that
speaks (or breaks) the dialect byte by byte, and a log recorder."""

from __future__ import annotations

import struct
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.protocols import amp

from workerwire.conformance import within
from workerwire.credentials import login_response
from workerwire_amp.commands import CAPABILITIES, TextList

__all__ = [
    "RawPeer", "LogRecorder", "box", "hello_box", "connect_raw", "port_of", "raw_login", "key_too_long",
    "unexpected_failures",
]

WAIT = 10.0


def box(**fields: Any) -> bytes:
    """Serialize an AMP box: keys are latin-1 (any byte), str values UTF-8, ints decimal."""
    out = amp.AmpBox()
    for key, value in fields.items():
        if isinstance(value, int):
            value = b"%d" % value
        elif isinstance(value, str):
            value = value.encode("utf-8")
        out[key.encode("latin-1")] = value
    return out.serialize()


def hello_box(ask: str = "1", **overrides: Any) -> bytes:
    fields: dict[str, Any] = dict(
        _command="Hello", _ask=ask, min_version=1, max_version=1,
        capabilities=TextList().toString(list(CAPABILITIES)), max_message_size=1024 * 1024,
    )
    fields.update(overrides)
    return box(**{k: v for k, v in fields.items() if v is not None})


class RawPeer(Protocol):
    """Writes whatever it is told to; records what comes back."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed: Deferred[None] = Deferred()
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        host = self.transport.getHost()
        self.local = f"{host.host}:{host.port}"

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._check()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)
        self._check()

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def boxes(self) -> list[amp.AmpBox]:
        """Every complete box received so far."""
        return amp._ParserHelper.parseString(bytes(self.data))  # type: ignore[no-any-return]

    def answer(self, tag: str) -> amp.AmpBox | None:
        for b in self.boxes():
            if b.get(b"_answer") == tag.encode() or b.get(b"_error") == tag.encode():
                return b
        return None

    def commands(self, name: str) -> list[amp.AmpBox]:
        return [b for b in self.boxes() if b.get(b"_command") == name.encode()]

    def when(self, predicate: Callable[[], bool]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiters.append((predicate, d))
        self._check()
        return d

    async def wait_answer(self, tag: str, reactor: Any) -> amp.AmpBox:
        await within(self.when(lambda: self.answer(tag) is not None or self.closed.called), reactor, WAIT,
                     f"an answer to request {tag}")
        found = self.answer(tag)
        assert found is not None, f"the connection closed without answering request {tag}"
        return found

    def _check(self) -> None:
        for item in list(self._waiters):
            if item[0]():
                self._waiters.remove(item)
                item[1].callback(None)


async def connect_raw(reactor: Any, port: int) -> RawPeer:
    peer = RawPeer()
    return await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(Factory.forProtocol(lambda: peer))


def port_of(address: str) -> int:
    return int(address.rsplit("=", 1)[1])


async def raw_login(reactor: Any, port: int, name: str, password: str) -> RawPeer:
    """A raw peer that completed Hello and Login (request tags "1" and "2")."""
    peer = await connect_raw(reactor, port)
    peer.send(hello_box("1"))
    hello = await peer.wait_answer("1", reactor)
    assert b"_answer" in hello, hello
    peer.send(box(_command="Login", _ask="2", username=name, response=login_response(password, hello[b"challenge"])))
    login = await peer.wait_answer("2", reactor)
    assert b"_answer" in login, login
    return peer


class LogRecorder:
    """Collects twisted.logger events while active (use as a context manager)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> "LogRecorder":
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc: Any) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    def protocol_errors(self, peer_address: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("protocol_error")
                and (peer_address is None or e.get("peer_address") == peer_address)]


def key_too_long() -> bytes:
    """A box whose first key claims 256 bytes (AMP keys are 1..255)."""
    return struct.pack("!H", 256) + b"k" * 256


def unexpected_failures(events: list[dict[str, Any]]) -> list[str]:
    """Logged tracebacks (``log_failure``) among *events*: there should be none."""
    from twisted.logger import formatEvent

    return [formatEvent(e) + "\n" + e["log_failure"].getTraceback() for e in events if e.get("log_failure")]
