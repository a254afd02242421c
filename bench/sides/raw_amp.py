"""Raw ``twisted.protocols.amp``: callRemote with AMP commands, no workerwire.

Streaming sends ``Update(data=bytes)`` with *window* calls outstanding;
AMP values are limited to 65,535 bytes, so the chunk is 60 KiB.
Storm: connect and one ``Login`` round trip per worker.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ClientFactory, Factory
from twisted.protocols import amp

from .base import PRINT_MESSAGE, chunk_bytes

__all__ = ["listen", "run_worker", "storm_connect"]


class Print(amp.Command):
    arguments = [(b"message", amp.Unicode())]
    response: ClassVar[list[Any]] = []


class Stream(amp.Command):
    arguments = [(b"nbytes", amp.Integer()), (b"chunk", amp.Integer()), (b"window", amp.Integer())]
    response: ClassVar[list[Any]] = []


class Update(amp.Command):
    arguments = [(b"data", amp.String())]
    response: ClassVar[list[Any]] = []


class Complete(amp.Command):
    arguments: ClassVar[list[Any]] = []
    response: ClassVar[list[Any]] = []


class Login(amp.Command):
    arguments = [(b"name", amp.Unicode()), (b"password", amp.Unicode())]
    response: ClassVar[list[Any]] = []


class MasterAmp(amp.AMP):
    def __init__(self, factory: "MasterFactory") -> None:
        super().__init__()
        self.factory = factory
        self.received = 0
        self.stream_done: Deferred[int] | None = None
        self.worker_pid: int | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        if not self.factory.first.called:
            self.factory.first.callback(self)

    @Update.responder
    def update(self, data: bytes) -> dict[str, Any]:
        self.received += len(data)
        return {}

    @Complete.responder
    def complete(self) -> dict[str, Any]:
        d, self.stream_done = self.stream_done, None
        if d is not None:
            d.callback(self.received)
        return {}

    @Login.responder
    def login(self, name: str, password: str) -> dict[str, Any]:
        self.factory.logins += 1
        if self.factory.on_login is not None:
            self.factory.on_login()
        return {}

    # Link
    def call(self) -> Deferred[Any]:
        return self.callRemote(Print, message=PRINT_MESSAGE)

    def stream(self, nbytes: int) -> Deferred[int]:
        self.received = 0
        self.stream_done = Deferred()
        self.callRemote(Stream, nbytes=nbytes, chunk=self.factory.chunk, window=self.factory.window)
        return self.stream_done

    def close(self) -> Deferred[None]:
        transport: Any = self.transport
        transport.loseConnection()
        return succeed(None)


class MasterFactory(Factory):
    def __init__(self, chunk: int, window: int) -> None:
        self.chunk = chunk
        self.window = window
        self.first: Deferred[MasterAmp] = Deferred()
        self.logins = 0
        self.on_login: Any = None

    def buildProtocol(self, addr: Any) -> MasterAmp:
        return MasterAmp(self)


def listen(reactor: Any, chunk: int, window: int) -> tuple[MasterFactory, Any]:
    factory = MasterFactory(chunk, window)
    port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1")
    return factory, port


class WorkerAmp(amp.AMP):
    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

    @Print.responder
    def print_(self, message: str) -> dict[str, Any]:
        return {}

    @Stream.responder
    def stream(self, nbytes: int, chunk: int, window: int) -> dict[str, Any]:
        data = chunk_bytes(chunk)
        state = {"remaining": nbytes, "outstanding": 0}

        def pump() -> None:
            while state["outstanding"] < window and state["remaining"] > 0:
                piece = data if state["remaining"] >= chunk else data[: state["remaining"]]
                state["remaining"] -= len(piece)
                state["outstanding"] += 1
                self.callRemote(Update, data=piece).addCallback(acked)
            if state["remaining"] == 0 and state["outstanding"] == 0:
                state["remaining"] = -1
                self.callRemote(Complete)

        def acked(_: object) -> None:
            state["outstanding"] -= 1
            pump()

        pump()
        return {}


def run_worker(reactor: Any, host: str, port: int) -> None:
    reactor.connectTCP(host, port, ClientFactory.forProtocol(WorkerAmp))


def storm_connect(reactor: Any, host: str, port: int, name: str, password: str, timeout: float) -> Deferred[Any]:
    done: Deferred[Any] = Deferred()

    class F(ClientFactory):
        protocol = WorkerAmp

        def buildProtocol(self, addr: Any) -> WorkerAmp:
            p = WorkerAmp()
            orig = p.connectionMade

            def made() -> None:
                orig()
                p.callRemote(Login, name=name, password=password).chainDeferred(done)

            p.connectionMade = made  # type: ignore[method-assign]
            return p

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            if not done.called:
                done.errback(reason)

    reactor.connectTCP(host, port, F(), timeout=timeout)
    return done
