"""msgpack's link on core's :class:`~workerwire.stream_link.StreamLink` (issue 13):
what the stream does for every stream backend, done for msgpack's WebSocket too,
on a real master with real clients over 127.0.0.1 (a real workerwire msgpack
worker, and raw TCP clients for what no worker sends)."""

from __future__ import annotations

import socket
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher

from workerwire import LinkOptions, load_backend
from workerwire.conformance import RecordingMaster, within
from workerwire.login_guard import MAX_LOGIN_INPUT
from workerwire.stream_link import READ_SIZE, StreamLink


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture
async def master(reactor: Any) -> AsyncIterator[tuple[RecordingMaster, Any, int]]:
    recording = RecordingMaster(reactor)
    listener = load_backend("msgpack").create_listener(recording, LinkOptions(keepalive_interval=None), reactor)
    reg = await listener.updateRegistration("w1", "pw", "tcp:port=0:interface=127.0.0.1")
    yield recording, listener, int(reg.getPort())
    await listener.stopListening()


class _Bot:
    """The least a worker bot answers (nothing here calls it)."""

    def remote_print(self, message: str) -> None:
        return None


class _Closed(Protocol):
    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


def _sockopt(transport: Any, level: int, option: int) -> int:
    return int(transport.getHandle().getsockopt(level, option))


@async_test
async def test_both_ends_of_a_msgpack_link_set_tcp_keepalive_no_delay_and_large_reads(master: Any,
                                                                                      reactor: Any) -> None:
    # Before the move msgpack set TCP_NODELAY only: a vanished peer went unnoticed by
    # the OS with workerwire's keepalive off (this test failed on SO_KEEPALIVE).
    recording, _, port = master
    connector = load_backend("msgpack").create_connector(
        _Bot(), f"tcp:host=127.0.0.1:port={port}", "w1", "pw", LinkOptions(keepalive_interval=None), reactor)
    connector.start()
    try:
        conn = await within(recording.whenConnection("w1"), reactor, what="the worker's login")
        # ww_attached went before this call: the worker's session is up once it is answered.
        await within(conn.remotePrint("hello"), reactor, what="a call answered")
        master_end = conn._proto
        worker_end = connector._session.proto
        for end in (master_end, worker_end):
            assert _sockopt(end.transport, socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
            assert isinstance(end.stream, StreamLink)
            assert _sockopt(end.transport, socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert end.transport.bufferSize == READ_SIZE, "msgpack reads 256 KiB from the connection on"
            assert end.stream.link_bytes.received > 0 and end.stream.link_bytes.sent > 0
        assert master_end.who() == f"worker 'w1' at {master_end.stream.peer}"
    finally:
        await connector.stop()


async def _stuff(reactor: Any, port: int, first: bytes) -> list[dict[str, Any]]:
    """Send *first*, then more than the pre-login limit; the master's protocol-error events."""
    events: list[dict[str, Any]] = []
    observer = events.append
    globalLogPublisher.addObserver(observer)
    try:
        client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Closed())
        client.transport.write(first + b"a" * (MAX_LOGIN_INPUT + 1024))
        await within(client.closed, reactor, what="the master to drop the stuffing client")
    finally:
        globalLogPublisher.removeObserver(observer)
    return [e for e in events if e.get("protocol_error")]


@async_test
async def test_too_much_before_the_upgrade_is_the_streams_protocol_error_naming_a_foreign_client(
        master: Any, reactor: Any) -> None:
    # Before the move msgpack logged its own line, without the protocol_error,
    # peer_address and link fields and without naming a client of another protocol.
    _, _, port = master
    (line,) = await _stuff(reactor, port, b"\x00\x04_ask\x00\x011")  # an AMP box
    assert line["link"] == "msgpack master" and line["backend"] == "msgpack"
    assert "before logging in" in line["why"] and "the client speaks amp" in line["why"]
    # msgpack's login is an HTTP upgrade: an HTTP client is not called foreign.
    (line,) = await _stuff(reactor, port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ")
    assert "before logging in" in line["why"] and "speaks HTTP" not in line["why"]
