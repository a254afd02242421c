"""Raw ``twisted.spread.pb``: callRemote on a Referenceable, no workerwire.

Link trial: the worker fetches the root object and hands the master its own
Referenceable (``attach``); the master calls ``print(message=...)`` on it.
Streaming: the master passes a sink; the worker calls ``sink.update(bytes)``
with *window* calls outstanding, then ``sink.complete()``.  Storm: a real
``twisted.cred`` login (``PBClientFactory.login``) per worker.
"""

from __future__ import annotations

from typing import Any

from twisted.cred import checkers, portal
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred, succeed
from twisted.spread import pb
from zope.interface import implementer

from .base import PRINT_MESSAGE, chunk_bytes

__all__ = ["listen", "run_worker", "storm_connect", "RawPbLink"]


class Sink(pb.Referenceable):
    def __init__(self) -> None:
        self.received = 0
        self.done: Deferred[int] = Deferred()

    def remote_update(self, data: bytes) -> None:
        self.received += len(data)

    def remote_complete(self) -> None:
        self.done.callback(self.received)


class RawPbLink:
    def __init__(self, ref: pb.RemoteReference, chunk: int, window: int) -> None:
        self.ref = ref
        self.chunk = chunk
        self.window = window
        self.worker_pid: int | None = None

    def call(self) -> Deferred[Any]:
        return self.ref.callRemote("print", message=PRINT_MESSAGE)

    def stream(self, nbytes: int) -> Deferred[int]:
        sink = Sink()
        self.ref.callRemote("stream", nbytes, self.chunk, self.window, sink).addErrback(sink.done.errback)
        return sink.done

    def close(self) -> Deferred[None]:
        self.ref.broker.transport.loseConnection()
        return succeed(None)


class MasterRoot(pb.Root):
    def __init__(self, chunk: int, window: int) -> None:
        self.first: Deferred[RawPbLink] = Deferred()
        self.chunk = chunk
        self.window = window

    def remote_attach(self, ref: pb.RemoteReference) -> None:
        if not self.first.called:
            self.first.callback(RawPbLink(ref, self.chunk, self.window))


class Avatar(pb.Avatar):
    def perspective_noop(self) -> None:
        return None


@implementer(portal.IRealm)
class Realm:
    def __init__(self) -> None:
        self.logins = 0
        self.on_login: Any = None

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        self.logins += 1
        if self.on_login is not None:
            self.on_login()
        return pb.IPerspective, Avatar(), lambda: None


def listen(reactor: Any, chunk: int, window: int) -> tuple[MasterRoot, Any]:
    root = MasterRoot(chunk, window)
    port = reactor.listenTCP(0, pb.PBServerFactory(root), backlog=1024, interface="127.0.0.1")
    return root, port


def listen_storm(reactor: Any, names: list[str], password: str) -> tuple[Realm, Any]:
    realm = Realm()
    checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(**{n: password.encode() for n in names})
    the_portal = portal.Portal(realm, [checker])  # type: ignore[arg-type, list-item]
    port = reactor.listenTCP(0, pb.PBServerFactory(the_portal),
                             backlog=1024, interface="127.0.0.1")
    return realm, port


class WorkerRef(pb.Referenceable):
    def remote_print(self, message: str) -> None:
        return None

    def remote_stream(self, nbytes: int, chunk: int, window: int, sink: pb.RemoteReference) -> None:
        data = chunk_bytes(chunk)
        state = {"remaining": nbytes, "outstanding": 0}

        def pump() -> None:
            while state["outstanding"] < window and state["remaining"] > 0:
                piece = data if state["remaining"] >= chunk else data[: state["remaining"]]
                state["remaining"] -= len(piece)
                state["outstanding"] += 1
                sink.callRemote("update", piece).addCallback(acked)
            if state["remaining"] == 0 and state["outstanding"] == 0:
                state["remaining"] = -1
                sink.callRemote("complete")

        def acked(_: object) -> None:
            state["outstanding"] -= 1
            pump()

        pump()


def run_worker(reactor: Any, host: str, port: int) -> None:
    factory = pb.PBClientFactory()
    reactor.connectTCP(host, port, factory)
    factory.getRootObject().addCallback(lambda root: root.callRemote("attach", WorkerRef()))


def storm_connect(reactor: Any, host: str, port: int, name: str, password: str, timeout: float) -> Deferred[Any]:
    factory = pb.PBClientFactory()
    reactor.connectTCP(host, port, factory, timeout=timeout)
    return factory.login(UsernamePassword(name.encode(), password.encode()), client=pb.Referenceable())
