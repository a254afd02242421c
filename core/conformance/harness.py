"""The pieces a conformance test is made of: a recording master, a recording
command target, and :class:`Harness`, which runs a real listener and real
worker connectors of the backend under test."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..backend import Backend, LinkOptions
from ..backoff import Backoff
from ..errors import DuplicateWorker
from ..master import Connection, Listener, Registration, Update
from ..worker import WorkerConnector
from .relay import LinkInterposer, make_interposer
from .scripted_worker import ScriptedWorker

__all__ = ["RecordingMaster", "RecordingCommand", "Harness", "WorkerHandle", "within", "TIMEOUT"]

#: Seconds any single wait may take before the test fails (scale with
#: WORKERWIRE_CONFORMANCE_TIMEOUT_SCALE on slow machines).
TIMEOUT = 15.0 * float(os.environ.get("WORKERWIRE_CONFORMANCE_TIMEOUT_SCALE", "1"))


async def within(d: Deferred[Any], reactor: Any, seconds: float = TIMEOUT, what: str = "event") -> Any:
    """Wait for *d*, failing with a clear message after *seconds*."""
    from twisted.internet.defer import TimeoutError as DeferredTimeout

    d.addTimeout(seconds, reactor)
    try:
        return await d
    except DeferredTimeout:
        raise AssertionError(f"timed out after {seconds:g} s waiting for {what}") from None


class RecordingMaster:
    """A :class:`~workerwire.master.MasterHooks` that records what it is told.

    ``refuse`` makes the next logins fail with :class:`DuplicateWorker`;
    ``hold`` (a Deferred) makes the next logins wait on it before the master
    accepts them (``held`` fires with each connection so held).
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.connections: dict[str, Connection] = {}
        self.offers: list[tuple[str, Connection]] = []
        self.shutdown_requests: list[Connection] = []
        self.refuse = False
        self.hold: Deferred[None] | None = None
        self.held: Deferred[Connection] = Deferred()
        self._conn_waiters: dict[str, list[Deferred[Connection]]] = {}
        self._shutdown_waiters: list[Deferred[Connection]] = []

    def newConnection(self, conn: Connection, workerName: str) -> Deferred[None] | None:
        self.offers.append((workerName, conn))
        if self.refuse:
            raise DuplicateWorker(f"worker {workerName!r} is already connected (refused by the test master)")
        if self.hold is not None:
            held, self.held = self.held, Deferred()
            held.callback(conn)
            return self.hold
        self.connections[workerName] = conn
        # Fire waiters after the attach completed.
        self.reactor.callLater(0, self._fire, workerName, conn)
        return None

    def _fire(self, workerName: str, conn: Connection) -> None:
        for d in self._conn_waiters.pop(workerName, []):
            d.callback(conn)

    def whenConnection(self, workerName: str, newer_than: Connection | None = None) -> Deferred[Connection]:
        conn = self.connections.get(workerName)
        if conn is not None and conn is not newer_than and conn.isConnected:
            d: Deferred[Connection] = Deferred()
            d.callback(conn)
            return d
        d = Deferred()
        self._conn_waiters.setdefault(workerName, []).append(d)
        return d

    def workerShutdownRequested(self, conn: Connection) -> None:
        self.shutdown_requests.append(conn)
        waiters, self._shutdown_waiters = self._shutdown_waiters, []
        for d in waiters:
            d.callback(conn)

    def whenShutdownRequested(self) -> Deferred[Connection]:
        d: Deferred[Connection] = Deferred()
        self._shutdown_waiters.append(d)
        return d


class RecordingCommand:
    """A :class:`~workerwire.master.CommandTarget` that records its updates."""

    def __init__(self) -> None:
        self.updates: list[Update] = []
        self.update_calls = 0
        self.completions: list[Failure | None] = []
        #: Fires (with this object) at the first completion; see ``completions``.
        self.done: Deferred[RecordingCommand] = Deferred()
        self._watch: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def remote_update(self, updates: list[Update]) -> object:
        self.update_calls += 1
        for pair in updates:
            assert isinstance(pair, tuple) and len(pair) == 2, f"update {pair!r} is not a (key, value) tuple"
            self.updates.append(pair)
        self._check_watch()
        return None  # acknowledged at once (a subclass may return a Deferred to hold the ack)

    def remote_complete(self, failure: Failure | None = None) -> None:
        self.completions.append(failure)
        if len(self.completions) == 1:
            self.done.callback(self)

    def whenUpdated(self, predicate: Callable[[], bool]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._watch.append((predicate, d))
        self._check_watch()
        return d

    def _check_watch(self) -> None:
        for item in list(self._watch):
            if item[0]():
                self._watch.remove(item)
                item[1].callback(None)

    def values(self, key: str) -> list[Any]:
        return [v for k, v in self.updates if k == key]

    def text(self, key: str) -> str:
        return "".join(self.values(key))


class WorkerHandle:
    """A started worker: its connector, its scripted bot and the master's connection."""

    def __init__(self, name: str, password: str, connector: WorkerConnector, bot: ScriptedWorker):
        self.name = name
        self.password = password
        self.connector = connector
        self.bot = bot
        self.conn: Connection = None  # type: ignore[assignment]


class Harness:
    """Runs one backend's real listener and real connectors for a test."""

    def __init__(self, backend: Backend, options: LinkOptions, reactor: Any, basedir: str | None = None):
        self.backend = backend
        self.options = options
        self.reactor = reactor
        self.master = RecordingMaster(reactor)
        self.listener: Listener = backend.create_listener(self.master, options, reactor)
        self._tmp = tempfile.TemporaryDirectory(prefix="workerwire-conformance-") if basedir is None else None
        self.basedir = basedir or self._tmp.name  # type: ignore[union-attr]
        self.connectors: list[WorkerConnector] = []
        self.extra_listeners: list[Listener] = []
        self.interposers: list[LinkInterposer] = []
        self._serial = 0

    # -- building blocks --------------------------------------------------------

    def use_options(self, options: LinkOptions) -> None:
        """Use a fresh listener with these master-side options (before registering)."""
        self.extra_listeners.append(self.listener)
        self.options = options
        self.listener = self.backend.create_listener(self.master, options, self.reactor)

    def port(self) -> str:
        return self.backend.loopback_port()

    async def register(self, name: str = "w1", password: str = "pw-1", port: str | None = None) -> Registration:
        reg = await self.listener.updateRegistration(name, password, port or self.port())
        assert reg is not None
        return reg

    def bot(self, name: str) -> ScriptedWorker:
        path = os.path.join(self.basedir, name)
        os.makedirs(path, exist_ok=True)
        return ScriptedWorker(path, self.reactor)

    def connector(
        self,
        address: str,
        name: str,
        password: str,
        bot: ScriptedWorker | None = None,
        options: LinkOptions | None = None,
    ) -> tuple[WorkerConnector, ScriptedWorker]:
        bot = bot or self.bot(name)
        connector = self.backend.create_connector(
            bot, address, name, password, options or self.options, self.reactor,
            Backoff(initial=0.05, maximum=0.5, jitter=0.2),
        )
        bot.on_shutdown = lambda: connector.stop()
        self.connectors.append(connector)
        return connector, bot

    async def start_worker(
        self,
        name: str | None = None,
        password: str | None = None,
        builders: list[str] | None = None,
        address: str | None = None,
        worker_options: LinkOptions | None = None,
    ) -> WorkerHandle:
        """Register, connect and (by default) give the worker builder ``b1``."""
        if name is None:
            self._serial += 1
            name = f"worker-{self._serial}"
        password = password or f"secret-{name}"
        reg = self.listener.getRegistration(name) or await self.register(name, password)
        connector, bot = self.connector(address or reg.getAddress(), name, password, options=worker_options)
        handle = WorkerHandle(name, password, connector, bot)
        waiting = self.master.whenConnection(name)
        connector.start()
        await within(connector.whenConnected(), self.reactor, what=f"{name} to log in")
        handle.conn = await within(waiting, self.reactor, what=f"the master to accept {name}")
        wanted = ["b1"] if builders is None else builders
        if wanted:
            await handle.conn.remoteSetBuilderList([(b, b) for b in wanted])
        return handle

    async def run(
        self, handle: WorkerHandle, command: str, args: dict[str, Any] | None = None,
        builder: str = "b1", commandId: str | None = None,
    ) -> RecordingCommand:
        """Start a command and wait for its completion."""
        rc = RecordingCommand()
        self._serial += 1
        await handle.conn.remoteStartCommand(rc, builder, commandId or f"c{self._serial}", command, args or {})
        await within(rc.done, self.reactor, what=f"command {command!r} to complete")
        return rc

    async def interposer(self, registration: Registration) -> LinkInterposer:
        relay = await make_interposer(self.backend, registration.getAddress(), self.reactor)
        self.interposers.append(relay)
        return relay

    def second_port(self) -> str:
        """Another loopback port string, which opens a port of its own."""
        if self.backend.network:
            return self.port() + ":backlog=50"
        return self.port().split(":", 1)[0] + ":second-port"

    def bound_port_string(self, registration: Registration) -> str:
        """A port string naming exactly the port *registration* is bound to."""
        loop = self.port()
        if self.backend.network:
            return f"tcp:port={registration.getPort()}:interface=127.0.0.1"
        scheme = loop.split(":", 1)[0]
        return f"{scheme}:{registration.getPort()}"

    async def close(self) -> None:
        for connector in self.connectors:
            try:
                await within(connector.stop(), self.reactor, what="a connector to stop")
            except Exception:
                pass
        for relay in self.interposers:
            await relay.close()
        for listener in [self.listener, *self.extra_listeners]:
            await listener.stopListening()
        if self._tmp is not None:
            self._tmp.cleanup()
