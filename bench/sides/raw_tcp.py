"""Raw Twisted TCP: length-prefixed frames (Int32StringReceiver), no RPC layer.

Frames start with one type byte: ``P`` print (echoed as ``A``), ``S`` start a
stream (``S<nbytes>,<chunk>``), ``D`` data, ``E`` end of stream, ``L`` login
(answered ``A``).  The worker streams with a streaming push producer, so the
transport's own flow control paces it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ClientFactory, Factory
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from .base import PRINT_MESSAGE, chunk_bytes

__all__ = ["RawTcpMaster", "listen", "run_worker", "storm_connect"]

MAX_FRAME = 16 * 1024 * 1024


class RawTcpMaster(Int32StringReceiver):
    MAX_LENGTH = MAX_FRAME

    def __init__(self, factory: "MasterFactory") -> None:
        self.factory = factory
        self.waiting: list[Deferred[None]] = []  # answers, in order
        self.stream_done: Deferred[int] | None = None
        self.received = 0
        self.worker_pid: int | None = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        self.factory.connected(self)

    def stringReceived(self, data: bytes) -> None:
        kind = data[:1]
        if kind == b"D":
            self.received += len(data) - 1
        elif kind == b"A" or kind == b"L":
            if kind == b"L":  # a storm login: answer it
                self.sendString(b"A")
                self.factory.logged_in(self)
                return
            self.waiting.pop(0).callback(None)
        elif kind == b"E":
            d, self.stream_done = self.stream_done, None
            if d is not None:
                d.callback(self.received)

    # Link
    def call(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        self.sendString(b"P" + PRINT_MESSAGE.encode())
        return d

    def stream(self, nbytes: int) -> Deferred[int]:
        self.received = 0
        self.stream_done = Deferred()
        self.sendString(b"S%d,%d" % (nbytes, self.factory.chunk))
        return self.stream_done

    def close(self) -> Deferred[None]:
        transport: Any = self.transport
        transport.loseConnection()
        return succeed(None)


class MasterFactory(Factory):
    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.first: Deferred[RawTcpMaster] = Deferred()
        self.logins = 0
        self.on_login: Any = None

    def buildProtocol(self, addr: Any) -> RawTcpMaster:
        return RawTcpMaster(self)

    def connected(self, proto: RawTcpMaster) -> None:
        if not self.first.called:
            self.first.callback(proto)

    def logged_in(self, proto: RawTcpMaster) -> None:
        self.logins += 1
        if self.on_login is not None:
            self.on_login()


def listen(reactor: Any, chunk: int) -> tuple[MasterFactory, Any]:
    factory = MasterFactory(chunk)
    port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1")
    return factory, port


@implementer(IPushProducer)
class RawTcpWorker(Int32StringReceiver):
    MAX_LENGTH = MAX_FRAME

    def __init__(self) -> None:
        self.paused = False
        self.remaining = 0
        self.frame = b""
        self.login: Deferred[None] | None = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        if self.login is not None:
            self.sendString(b"L")

    def stringReceived(self, data: bytes) -> None:
        kind = data[:1]
        if kind == b"P":
            self.sendString(b"A")
        elif kind == b"S":
            nbytes, chunk = (int(x) for x in data[1:].split(b","))
            self.remaining = nbytes
            self.frame = b"D" + chunk_bytes(chunk)
            self.produce()
        elif kind == b"A" and self.login is not None:
            d, self.login = self.login, None
            d.callback(None)

    def produce(self) -> None:
        size = len(self.frame) - 1
        while self.remaining > 0 and not self.paused:
            if self.remaining >= size:
                self.sendString(self.frame)
                self.remaining -= size
            else:
                self.sendString(self.frame[: self.remaining + 1])
                self.remaining = 0
                break
        if self.remaining == 0 and self.frame:
            self.frame = b""
            self.sendString(b"E")

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.remaining:
            self.produce()

    def stopProducing(self) -> None:
        self.remaining = 0


def run_worker(reactor: Any, host: str, port: int) -> None:
    factory = ClientFactory.forProtocol(RawTcpWorker)
    reactor.connectTCP(host, port, factory)


def storm_connect(reactor: Any, host: str, port: int, timeout: float) -> Deferred[None]:
    """Connect and do one login round trip; fires when answered."""
    done: Deferred[None] = Deferred()

    class F(ClientFactory):
        def buildProtocol(self, addr: Any) -> RawTcpWorker:
            p = RawTcpWorker()
            p.login = done
            return p

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            if not done.called:
                done.errback(reason)

    reactor.connectTCP(host, port, F(), timeout=timeout)
    return done
