"""Workers behind an HTTP proxy (``proxy=http://HOST:PORT`` on a client address),
for every network backend, through a small ``CONNECT`` proxy this test runs on
loopback (a real proxy process such as squid is not available here; this one
speaks the same HTTP/1.1 ``CONNECT`` exchange over real sockets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test
from twisted.internet import protocol
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from test_tls import PKI, pki, ssl_port  # noqa: F401  (pki is a fixture)
from workerwire import LinkOptions, backend_names, load_backend
from workerwire.conformance import Harness, within
from workerwire.endpoints import client_from_string
from workerwire.errors import AddressError, ConnectionLost
from workerwire.tls import add_client_options

NETWORK_BACKENDS = [name for name in backend_names() if load_backend(name).network]


class _Pipe(protocol.Protocol):
    """The proxy's connection to the target: passes bytes back to the client."""

    def __init__(self, client: "_ProxyClient"):
        self.client = client

    def dataReceived(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connectionLost(self, reason: Any) -> None:
        self.client.transport.loseConnection()


class _ProxyClient(protocol.Protocol):
    def __init__(self, proxy: "ConnectProxy"):
        self.proxy = proxy
        self.head = b""
        self.pipe: _Pipe | None = None
        self.pending: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        if self.pipe is not None:
            self.pipe.transport.write(data)
            return
        if self.head is None:
            self.pending.append(data)
            return
        self.head += data
        head, sep, rest = self.head.partition(b"\r\n\r\n")
        if not sep:
            return
        self.head = None  # type: ignore[assignment]
        if rest:
            self.pending.append(rest)
        method, target, _ = head.split(b"\r\n")[0].decode().split(" ", 2)
        self.proxy.requests.append(f"{method} {target}")
        if method != "CONNECT" or self.proxy.refuse:
            self.transport.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            self.transport.loseConnection()
            return
        host, _, port = target.rpartition(":")
        d = TCP4ClientEndpoint(self.proxy.reactor, host, int(port)).connect(
            protocol.Factory.forProtocol(lambda: _Pipe(self)))

        def opened(pipe: _Pipe) -> None:
            self.pipe = pipe
            self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            for chunk in self.pending:
                pipe.transport.write(chunk)
            self.pending = []

        def failed(_: Any) -> None:
            self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            self.transport.loseConnection()

        d.addCallbacks(opened, failed)

    def connectionLost(self, reason: Any) -> None:
        if self.pipe is not None:
            self.pipe.transport.loseConnection()


class ConnectProxy:
    """An HTTP ``CONNECT`` proxy on 127.0.0.1 that records what it was asked."""

    def __init__(self, reactor: Any):
        self.reactor = reactor
        self.requests: list[str] = []
        self.refuse = False
        self.port: Any = None

    async def start(self) -> None:
        self.port = await TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(lambda: _ProxyClient(self)))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture
async def proxy(reactor: Any) -> AsyncIterator[ConnectProxy]:
    p = ConnectProxy(reactor)
    await p.start()
    yield p
    await p.port.stopListening()


@pytest.fixture(params=NETWORK_BACKENDS)
def harness(request: pytest.FixtureRequest, reactor: Any, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(load_backend(request.param), LinkOptions(keepalive_interval=None), reactor, str(tmp_path))
    yield h
    pytest_twisted.blockon(ensureDeferred(h.close()))


@async_test
async def test_a_worker_logs_in_and_runs_a_command_through_the_proxy(harness: Harness, proxy: ConnectProxy) -> None:
    reg = await harness.register("w1", "pw-1")
    address = f"{reg.getAddress()}:proxy={proxy.url}"
    handle = await harness.start_worker("w1", "pw-1", address=address)
    assert proxy.requests == [f"CONNECT 127.0.0.1:{reg.getPort()}"]
    rc = await harness.run(handle, "echo", {"through": "the proxy ✓", "blob": b"\x00" * 300_000})
    assert rc.completions == [None]
    assert rc.values("echo") == [{"through": "the proxy ✓", "blob": b"\x00" * 300_000}]
    info = await handle.conn.remoteGetWorkerInfo()
    assert isinstance(info, dict)


@async_test
async def test_tls_runs_inside_the_tunnel(harness: Harness, proxy: ConnectProxy, pki: PKI) -> None:
    reg = await harness.register("w1", "pw-1", ssl_port(pki.master))
    # The escaped spelling of the URL works as well as the plain one.
    escaped = proxy.url.replace(":", "\\:")
    address = add_client_options(reg.getAddress(), ca_file=pki.ca) + f":proxy={escaped}"
    handle = await harness.start_worker("w1", "pw-1", address=address)
    assert proxy.requests == [f"CONNECT 127.0.0.1:{reg.getPort()}"]
    rc = await harness.run(handle, "echo", {"secure": True})
    assert rc.values("echo") == [{"secure": True}]


@async_test
async def test_a_refusing_proxy_is_a_clear_connection_error(harness: Harness, proxy: ConnectProxy) -> None:
    proxy.refuse = True
    reg = await harness.register("w1", "pw-1")
    connector, _ = harness.connector(f"{reg.getAddress()}:proxy={proxy.url}", "w1", "pw-1")
    with pytest.raises(ConnectionLost) as err:
        await within(connector.probe(), harness.reactor, what="the refused tunnel")
    assert "refused CONNECT" in str(err.value) and "403" in str(err.value)
    assert not harness.master.offers


def test_bad_proxy_values_say_what_is_valid(reactor: Any) -> None:
    for address in ("tcp:host=m:port=1:proxy=socks5://p:1080", "tcp:host=m:port=1:proxy=http://p",
                    "unix:path=/tmp/x:proxy=http://p:3128"):
        with pytest.raises(AddressError) as err:
            client_from_string(reactor, address)
        assert "proxy" in str(err.value)
