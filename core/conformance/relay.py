"""Something between a worker and its master that a test can break.

A :class:`LinkInterposer` relays a backend's link and can *blackhole* it:
from then on nothing passes in either direction and nobody is told (no FIN,
no RST), which is how a dead host, a pulled cable or a half-open TCP
connection looks.  :meth:`LinkInterposer.heal` mends the path again.

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
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from ..backend import Backend

__all__ = ["LinkInterposer", "TCPRelay", "RelayLink", "make_interposer", "NoInterposer"]


class NoInterposer(Exception):
    """The backend offers no way to interpose on its links: the dead-peer and
    keepalive-deadline tests then fail, saying what to add (they are part of
    the contract; a backend that cannot be tested on them does not conform)."""


class LinkInterposer(abc.ABC):
    #: The address workers dial instead of the registration's.
    address: str

    @abc.abstractmethod
    def blackhole(self) -> None:
        """Silently stop everything in both directions, on existing links and
        on links made later, until :meth:`heal`.  Nobody is told: no close
        reaches either end (a close that happens meanwhile stays unseen)."""

    @abc.abstractmethod
    def heal(self, existing: bool = True) -> None:
        """The path works again: connections made during the blackhole go
        through now and new ones pass.

        With *existing*, links that were blackholed flow again: what was held
        back arrives, in order (as TCP's retransmissions would deliver it),
        and a close made meanwhile reaches the other end.  Without it those
        links stay silent for good (a NAT or firewall that forgot them): only
        a keepalive can find them.
        """

    @abc.abstractmethod
    def close(self) -> Deferred[None]:
        """Stop relaying and close everything."""


_TCP = re.compile(r"^tcp:host=(?P<host>[^:]+):port=(?P<port>\d+)$")


async def make_interposer(backend: Backend, address: str, reactor: Any) -> LinkInterposer:
    """An interposer for *address*, or :class:`NoInterposer`."""
    hook = getattr(backend, "make_interposer", None)  # API 0 backends may lack it
    interposer = await maybeDeferred(hook, address, reactor) if hook is not None else None
    if interposer is not None:
        return interposer
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
    """One socket of a relayed link: the worker's side or the target's side."""

    transport: Any

    def __init__(self, link: "RelayLink"):
        self.link = link
        self.other: _Half | None = None
        #: Data read from this socket and not yet passed on.
        self.held: list[bytes] = []
        self.lost: Failure | None = None
        self.gone: Deferred[None] = Deferred()
        self.closing = False

    @property
    def alive(self) -> bool:
        return self.transport is not None and self.lost is None and not self.closing

    def connectionMade(self) -> None:
        if self.link.silent:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        other = self.other
        if self.link.silent or other is None or not other.alive:
            self.held.append(data)
        else:
            other.transport.write(data)

    def flush(self) -> None:
        other = self.other
        if self.held and other is not None and other.alive:
            held, self.held = self.held, []
            for chunk in held:
                other.transport.write(chunk)

    def close(self, abort: bool) -> None:
        if self.alive:
            self.closing = True
            if abort:
                self.transport.abortConnection()
            else:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = reason
        self.gone.callback(None)
        self.link._half_lost(self)


class RelayLink:
    """One relayed connection: :attr:`inbound` from the dialling side,
    :attr:`outbound` to the relay's target.

    A test may break it alone: :meth:`abort` drops both sockets at once (each
    end sees its connection close); :meth:`blackhole` silences it for good
    (neither end is told).
    """

    def __init__(self, relay: "TCPRelay"):
        self.relay = relay
        self.inbound: _Half = _Inbound(self)
        self.outbound: _Half | None = None
        self.silent = relay.blackholed
        #: Blackholed for good: :meth:`TCPRelay.heal` leaves it silent.
        self.forgotten = False
        self._dialled = False

    @property
    def halves(self) -> list[_Half]:
        return [h for h in (self.inbound, self.outbound) if h is not None]

    @property
    def closed(self) -> bool:
        return all(h.lost is not None for h in self.halves) or (
            self.inbound.lost is not None and not self._dialled)

    def dial(self) -> None:
        """Connect to the target (held while the relay is blackholed)."""
        if self._dialled:
            return
        self._dialled = True
        if self.inbound.lost is not None:
            self.relay._forget(self)
            return
        self.inbound.transport.pauseProducing()
        outbound = _Half(self)
        outbound.other, self.inbound.other = self.inbound, outbound
        endpoint = TCP4ClientEndpoint(self.relay.reactor, self.relay.host, self.relay.port)

        def connected(p: _Half) -> None:
            self.outbound = p
            if self.inbound.lost is not None:
                p.close(abort=False)
            elif not self.silent:
                self.inbound.flush()
                self.inbound.transport.resumeProducing()

        def failed(_: Any) -> None:
            self.inbound.close(abort=False)

        endpoint.connect(_SingleFactory(outbound)).addCallbacks(connected, failed)

    def go_silent(self) -> None:
        self.silent = True
        for h in self.halves:
            if h.alive:
                h.transport.pauseProducing()

    def resume(self) -> None:
        """Let traffic flow again after a blackhole."""
        if not self.silent or self.forgotten:
            return
        self.silent = False
        if not self._dialled:
            self.dial()
            return
        for h in self.halves:
            h.flush()
        for h in self.halves:
            if h.lost is not None and h.other is not None:
                h.other.close(abort=not h.lost.check(ConnectionDone))
        for h in self.halves:
            if h.alive:
                h.transport.resumeProducing()

    def blackhole(self) -> None:
        """Silence this link for good; neither end is told."""
        self.forgotten = True
        self.go_silent()

    def abort(self) -> None:
        """Drop both sockets now: each end sees its connection close."""
        self.forgotten = True  # nothing to pass on any more
        for h in self.halves:
            h.close(abort=True)

    def _half_lost(self, half: _Half) -> None:
        other = half.other
        if not self.silent and other is not None:
            # Pass the close on: a clean close as a clean close, anything else as an abort.
            other.close(abort=not half.lost.check(ConnectionDone))  # type: ignore[union-attr]
        if self.closed:
            self.relay._forget(self)


class _Inbound(_Half):
    def connectionMade(self) -> None:
        self.link.relay.links.append(self.link)
        self.transport.pauseProducing()
        if not self.link.silent:
            self.link.dial()


class _SingleFactory(protocol.ClientFactory):
    def __init__(self, proto: _Half):
        self.proto = proto

    def buildProtocol(self, addr: Any) -> _Half:
        return self.proto


class TCPRelay(LinkInterposer):
    """A loopback TCP relay to ``host:port``.

    While blackholed it stops reading its sockets (the peers' TCP windows fill
    up, as over a dead path) and holds back what it had read; connections
    made meanwhile are accepted but reach the target only after :meth:`heal`
    (like a SYN retransmitted once the path is back).  :attr:`links` are the
    relayed connections still open, for tests that break one at a time.
    """

    def __init__(self, reactor: Any, host: str, port: int):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.blackholed = False
        self.links: list[RelayLink] = []
        self._listening: Any = None
        self.address = ""

    async def start(self) -> None:
        factory = protocol.Factory()
        factory.buildProtocol = lambda addr: RelayLink(self).inbound  # type: ignore[method-assign]
        self._listening = await TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1").listen(factory)
        self.address = f"tcp:host=127.0.0.1:port={self._listening.getHost().port}"

    def blackhole(self) -> None:
        self.blackholed = True
        for link in self.links:
            link.go_silent()

    def heal(self, existing: bool = True) -> None:
        self.blackholed = False
        for link in list(self.links):
            if not link.silent or link.forgotten:
                continue
            if existing or not link._dialled:
                link.resume()
            else:
                link.forgotten = True

    def live_links(self) -> list[RelayLink]:
        """Links that carry traffic now (neither silent nor closing)."""
        return [link for link in self.links
                if not link.silent and link.outbound is not None and all(h.alive for h in link.halves)]

    def _forget(self, link: RelayLink) -> None:
        if link in self.links:
            self.links.remove(link)

    def close(self) -> Deferred[None]:
        """Close every socket (fires once they are all closed) and stop listening."""
        waits: list[Deferred[Any]] = []
        for link in list(self.links):
            link.forgotten = True
            link.silent = True  # no close is passed on: everything goes anyway
            for h in link.halves:
                if h.transport is not None and h.lost is None:
                    waits.append(h.gone)
                    h.closing = False
                    h.close(abort=True)
        self.links = []
        if self._listening is not None:
            waits.append(maybeDeferred(self._listening.stopListening))
            self._listening = None
        if not waits:
            return succeed(None)
        return DeferredList(waits).addCallback(lambda _: None)
