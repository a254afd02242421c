"""A workerwire backend, through the contracts only (found via the registry).

Master side: a Listener from ``backend.create_listener``; the link is the
``Connection`` it hands the master.  Worker side: ``backend.create_connector``
serving :class:`bench.bot.BenchBot` (in a child process for network backends,
in this process for in-process ones such as ``null``).
"""

from __future__ import annotations

import tempfile
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from workerwire.backend import Backend, LinkOptions
from workerwire.backoff import Backoff
from workerwire.master import Connection, Listener, Update
from workerwire.registry import load_backend

from .base import PRINT_MESSAGE, Child, remove_tree

__all__ = ["BenchMaster", "CountingTarget", "WwLink", "PASSWORD", "start_listener"]

PASSWORD = "bench-pw"


class BenchMaster:
    """MasterHooks that accepts every worker and lets the trial wait for them."""

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.count = 0
        self.waiters: dict[str, list[Deferred[Connection]]] = {}
        self.on_connection: Any = None

    def newConnection(self, conn: Connection, workerName: str) -> None:
        self.connections[workerName] = conn
        self.count += 1
        if self.on_connection is not None:
            self.on_connection()
        for d in self.waiters.pop(workerName, []):
            d.callback(conn)

    def workerShutdownRequested(self, conn: Connection) -> None:
        pass

    def whenConnection(self, name: str) -> Deferred[Connection]:
        if name in self.connections:
            return succeed(self.connections[name])
        d: Deferred[Connection] = Deferred()
        self.waiters.setdefault(name, []).append(d)
        return d


class CountingTarget:
    """A CommandTarget that counts output characters and keeps nothing else."""

    def __init__(self) -> None:
        self.received = 0
        self.updates = 0
        self.rc: int | None = None
        self.done: Deferred[int] = Deferred()

    def remote_update(self, updates: list[Update]) -> None:
        self.updates += 1
        for key, value in updates:
            if key == "stdout":
                self.received += len(value)
            elif key == "rc":
                self.rc = value

    def remote_complete(self, failure: Failure | None = None) -> None:
        if self.done.called:
            return
        if failure is not None:
            self.done.errback(failure)
        else:
            self.done.callback(self.received)


class WwLink:
    """The master's view of one connected bench worker."""

    def __init__(self, conn: Connection, command: str, args_for: Any, builder: str = "b1") -> None:
        self.conn = conn
        self.command = command
        self.args_for = args_for  # nbytes -> args dict
        self.builder = builder
        self.worker_pid: int | None = None
        self.cleanup: list[Any] = []
        self._serial = 0

    def call(self) -> Deferred[Any]:
        return self.conn.remotePrint(PRINT_MESSAGE)

    def stream(self, nbytes: int) -> Deferred[int]:
        target = CountingTarget()
        self._serial += 1
        started = self.conn.remoteStartCommand(target, self.builder, str(self._serial), self.command,
                                               self.args_for(nbytes))
        started.addErrback(lambda f: target.done.errback(f) if not target.done.called else None)
        return target.done

    async def aclose(self) -> None:
        for step in reversed(self.cleanup):
            try:
                await step()
            except Exception:
                pass

    def close(self) -> Deferred[None]:
        from twisted.internet.defer import ensureDeferred

        return ensureDeferred(self.aclose())


def start_listener(name: str, reactor: Any) -> tuple[Backend, BenchMaster, Listener]:
    backend = load_backend(name)
    master = BenchMaster()
    listener = backend.create_listener(master, LinkOptions(), reactor)
    return backend, master, listener


async def open_link(reactor: Any, name: str, chunk: int, command: str, args_for: Any,
                    spawn_worker: Any, timeout: float) -> WwLink:
    """Listen with backend *name*, start one bench worker, return the link.

    *spawn_worker(address) -> Child* starts a network worker process.
    """
    from .base import within

    backend, master, listener = start_listener(name, reactor)
    reg = await listener.updateRegistration("bench", PASSWORD, backend.loopback_port())
    assert reg is not None
    cleanup: list[Any] = [listener.stopListening]
    pid: int | None = None
    if not backend.in_process:  # network backends, and amqp (another process, through the broker)
        child: Child = spawn_worker(reg.getAddress())
        cleanup.append(child.terminate)
        pid = child.pid
    else:
        from .. import bot as botmod

        tmp = tempfile.mkdtemp(prefix="workerwire-bench-")
        cleanup.append(lambda: remove_tree(tmp))
        bench_bot = botmod.BenchBot(tmp, reactor)
        connector = backend.create_connector(bench_bot, reg.getAddress(), "bench", PASSWORD, LinkOptions(),
                                             reactor, Backoff(initial=0.05, maximum=1.0))
        connector.start()
        cleanup.append(connector.stop)
    conn = await within(master.whenConnection("bench"), reactor, timeout, f"the {name} worker to log in")
    link = WwLink(conn, command, args_for)
    link.worker_pid = pid
    link.cleanup = cleanup
    await within(conn.remoteSetBuilderList([("b1", "b1")]), reactor, timeout, "setBuilderList")
    return link


def worker_main(reactor: Any, name: str, address: str, worker: str, password: str) -> Any:
    """The worker process: serve a BenchBot over backend *name* until stdin closes."""
    from .. import bot as botmod

    backend = load_backend(name)
    tmp = tempfile.mkdtemp(prefix="workerwire-bench-worker-")
    bench_bot = botmod.BenchBot(tmp, reactor)
    connector = backend.create_connector(bench_bot, address, worker, password, LinkOptions(), reactor,
                                         Backoff(initial=0.05, maximum=1.0))
    connector.start()
    return connector, tmp

