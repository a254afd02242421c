"""Something between a worker and its master that a test can break.

A :class:`LinkInterposer` relays a backend's link and can *blackhole* it:
from then on nothing passes in either direction and nobody is told (no FIN,
no RST), which is how a dead host or a half-open TCP connection looks.

Network backends whose registration addresses are ``tcp:host=H:port=N`` get
:class:`TCPRelay` for free.  Any other backend provides one by defining
``make_interposer(address, reactor) -> Deferred[LinkInterposer]`` on its
:class:`~workerwire.backend.Backend` object.
"""

from __future__ import annotations

import abc
import re
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from ..backend import Backend

__all__ = ["LinkInterposer", "TCPRelay", "make_interposer", "NoInterposer"]


class NoInterposer(Exception):
    """The backend offers no way to interpose on its links."""


class LinkInterposer(abc.ABC):
    #: The address workers dial instead of the registration's.
    address: str

    @abc.abstractmethod
    def blackhole(self) -> None:
        """Silently drop everything in both directions on existing links."""

    @abc.abstractmethod
    def close(self) -> Deferred[None]:
        """Stop relaying and close everything."""


_TCP = re.compile(r"^tcp:host=(?P<host>[^:]+):port=(?P<port>\d+)$")


async def make_interposer(backend: Backend, address: str, reactor: Any) -> LinkInterposer:
    """An interposer for *address*, or :class:`NoInterposer`."""
    hook = getattr(backend, "make_interposer", None)
    if hook is not None:
        return await maybeDeferred(hook, address, reactor)
    m = _TCP.match(address)
    if m is None:
        raise NoInterposer(
            f"backend {backend.name!r} has addresses like {address!r}; give its Backend a "
            "make_interposer(address, reactor) method to run the dead-peer tests"
        )
    relay = TCPRelay(reactor, m["host"], int(m["port"]))
    await relay.start()
    return relay


class _Half(protocol.Protocol):
    def __init__(self, relay: "TCPRelay"):
        self.relay = relay
        self.other: _Half | None = None
        self.buffer: list[bytes] = []
        self.dead = False

    def dataReceived(self, data: bytes) -> None:
        if self.dead or self.relay.blackholed:
            return
        if self.other is not None and self.other.transport is not None:
            self.other.transport.write(data)
        else:
            self.buffer.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.relay.halves.discard(self)
        if not self.dead and not self.relay.blackholed and self.other is not None:
            if self.other.transport is not None:
                self.other.transport.loseConnection()


class _Inbound(_Half):
    def connectionMade(self) -> None:
        self.relay.halves.add(self)
        self.transport.pauseProducing()
        outbound = _Half(self.relay)
        outbound.other = self
        self.other = outbound
        endpoint = TCP4ClientEndpoint(self.relay.reactor, self.relay.host, self.relay.port)

        def connected(p: _Half) -> None:
            self.relay.halves.add(p)
            for chunk in self.buffer:
                p.transport.write(chunk)
            self.buffer = []
            self.transport.resumeProducing()

        def failed(_: Any) -> None:
            self.transport.loseConnection()

        endpoint.connect(_SingleFactory(outbound)).addCallbacks(connected, failed)


class _SingleFactory(protocol.ClientFactory):
    def __init__(self, proto: _Half):
        self.proto = proto

    def buildProtocol(self, addr: Any) -> _Half:
        return self.proto


class TCPRelay(LinkInterposer):
    """A loopback TCP relay to ``host:port``."""

    def __init__(self, reactor: Any, host: str, port: int):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.blackholed = False
        self.halves: set[_Half] = set()
        self._listening: Any = None
        self.address = ""

    async def start(self) -> None:
        factory = protocol.Factory()
        factory.buildProtocol = lambda addr: _Inbound(self)  # type: ignore[method-assign]
        self._listening = await TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1").listen(factory)
        self.address = f"tcp:host=127.0.0.1:port={self._listening.getHost().port}"

    def blackhole(self) -> None:
        self.blackholed = True

    def close(self) -> Deferred[None]:
        for half in list(self.halves):
            half.dead = True
            if half.transport is not None:
                half.transport.abortConnection()
        if self._listening is None:
            return succeed(None)
        return maybeDeferred(self._listening.stopListening)
