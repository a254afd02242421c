r"""Workers behind an HTTP proxy: ``proxy=http://HOST:PORT`` on a client address.

:func:`take_proxy` finds the key in a worker's client endpoint string (the
URL's colons may be escaped as ``\:`` or not) and :class:`HTTPConnectEndpoint`
dials the proxy, asks it for ``CONNECT host:port HTTP/1.1`` and, once it
answers ``2xx``, hands the tunnel to the backend's protocol as if it had
dialled the master itself.  TLS (a ``tls:`` address) runs inside the tunnel,
end to end with the master: the proxy sees only ciphertext.
:func:`workerwire.endpoints.client_from_string` does both, so every network
backend gets proxies the same way.
"""

from __future__ import annotations

import re
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IProtocol, ITCPTransport, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from .errors import AddressError

__all__ = ["take_proxy", "HTTPConnectEndpoint", "ProxyRefused", "MAX_PROXY_ANSWER"]

#: Bytes of the proxy's answer header read before it is declared broken.
MAX_PROXY_ANSWER = 16 * 1024

_PROXY = re.compile(r"(?:^|(?<=:))proxy=(?P<url>[^:\\]*(?:\\.[^:\\]*)*(?:(?:\\?:)[^:\\]*(?:\\.[^:\\]*)*)*?)"
                    r"(?=:[A-Za-z_]+=|$)")
_URL = re.compile(r"http://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+):(?P<port>\d{1,5})/?")


class ProxyRefused(ConnectError):
    """The proxy did not open the tunnel (its status line says why)."""


def take_proxy(description: str) -> tuple[str, tuple[str, int] | None]:
    """``(description without the proxy key, (proxy host, port) or None)``.

    :raises AddressError: a ``proxy=`` that is not ``http://HOST:PORT``.
    """
    match = _PROXY.search(description)
    if match is None:
        return description, None
    url = match.group("url").replace("\\:", ":").replace("\\=", "=")
    parsed = _URL.fullmatch(url)
    if parsed is None or not 0 < int(parsed.group("port")) <= 65535:
        raise AddressError(f"{description!r}: proxy must be http://HOST:PORT (an HTTP proxy that allows "
                           f"CONNECT), e.g. proxy=http://proxy.example:3128, not {url!r}")
    start = match.start() - 1 if match.start() > 0 else 0  # with the colon before it
    rest = description[:start] + description[match.end():]
    return rest, (parsed.group("host").strip("[]"), int(parsed.group("port")))


class _Tunnel(Protocol):
    """Talks to the proxy until the tunnel is open, then passes bytes through."""

    def __init__(self, factory: Factory, target: str, proxy: str):
        self.factory = factory
        self.target = target
        self.proxy = proxy
        self.ready: Deferred[Protocol] = Deferred(lambda d: self._abort())
        self.inner: Protocol | None = None
        self._answer = b""

    def _link(self) -> ITransport:
        """The connection to the proxy (set before any callback that uses it)."""
        assert self.transport is not None, "the tunnel has no connection to the proxy yet"
        return self.transport

    def _abort(self) -> None:
        """Cancelling :attr:`ready` drops the connection to the proxy at once."""
        if self.transport is None:
            return
        tcp = ITCPTransport(self.transport, None)  # HostnameEndpoint's transports are TCP ones
        if tcp is not None:
            tcp.abortConnection()
        else:
            self.transport.loseConnection()

    def connectionMade(self) -> None:
        host = self.target
        self._link().write(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("ascii"))

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        self._answer += data
        head, sep, rest = self._answer.partition(b"\r\n\r\n")
        if not sep:
            if len(self._answer) > MAX_PROXY_ANSWER:
                self._fail(f"the proxy at {self.proxy} sent more than {MAX_PROXY_ANSWER} bytes without "
                           "ending its answer to CONNECT")
            return
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status.split()
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].startswith("2"):
            self._fail(f"the proxy at {self.proxy} refused CONNECT {self.target}: {status!r}")
            return
        self._answer = b""
        inner = self.factory.buildProtocol(self._link().getPeer())
        if inner is None:
            self._fail("the connection was refused by its own factory")
            return
        self.inner = inner
        inner.makeConnection(self.transport)
        if not self.ready.called:
            self.ready.callback(inner)
        if rest:
            inner.dataReceived(rest)

    def _fail(self, why: str) -> None:
        if not self.ready.called:
            self.ready.errback(Failure(ProxyRefused(string=why)))
        self._link().loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)
        elif not self.ready.called:
            self.ready.errback(Failure(ConnectError(
                string=f"the proxy at {self.proxy} closed the connection before opening the tunnel")))


class _TunnelFactory(Factory):
    noisy = False

    def __init__(self, factory: Factory, target: str, proxy: str):
        self.factory = factory
        self.target = target
        self.proxy = proxy

    def buildProtocol(self, addr: Any) -> _Tunnel:
        return _Tunnel(self.factory, self.target, self.proxy)


class HTTPConnectEndpoint:
    """A client endpoint through an HTTP proxy's ``CONNECT`` tunnel to *host*:*port*.

    ``connect(factory)`` fires with the factory's protocol once the tunnel is
    open; a proxy that refuses fails it with :class:`ProxyRefused` naming the
    proxy's status line.
    """

    def __init__(self, reactor: Any, proxy_host: str, proxy_port: int, host: str, port: int,
                 timeout: float = 30.0):
        self._proxy = HostnameEndpoint(reactor, proxy_host, proxy_port, timeout=timeout)
        self.proxy = f"{proxy_host}:{proxy_port}"
        self.target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def connect(self, factory: Factory) -> Deferred[Protocol]:
        connecting = self._proxy.connect(_TunnelFactory(factory, self.target, self.proxy))
        return connecting.addCallback(_when_open)


def _when_open(tunnel: IProtocol) -> Deferred[Protocol]:
    # The endpoint fires with the protocol _TunnelFactory built: a _Tunnel.
    return cast(_Tunnel, tunnel).ready
