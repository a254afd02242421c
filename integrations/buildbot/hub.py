"""The workerwire listeners of one Buildbot master.

One :class:`WorkerwireHub` per master (a child service named ``workerwire``)
owns a workerwire :class:`~workerwire.Listener` per ``(backend, port string)``
that some ``WorkerwireWorker`` uses: workers of the same backend and port
share it and its port, which opens with their first registration and closes
with their last, as Buildbot's pb manager does for ``c['protocols']['pb']``.
Stopping the master stops the hub, which closes every port it still holds.

It is also the :class:`~workerwire.MasterHooks` of those listeners: a worker
that logged in is offered to Buildbot's ``WorkerManager.newConnection`` (which
arbitrates duplicates exactly as for pb) through a :class:`BuildbotConnection`,
and then attached to its ``Worker``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from buildbot.util import service
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred, maybeDeferred
from twisted.logger import Logger

from workerwire import Connection, LinkOptions, Listener, Registration, load_backend
from workerwire.errors import DuplicateWorker, LoginRefused

from .connection import BuildbotConnection
from .options import SettingsError, WorkerSettings

__all__ = ["WorkerwireHub", "HUB_SERVICE_NAME"]

_log = Logger()

#: The hub's name among the master's child services.
HUB_SERVICE_NAME = "workerwire"


@dataclass
class _Port:
    key: tuple[str, str]
    options: LinkOptions
    listener: Listener
    workers: set[str] = field(default_factory=set)


class _PortHooks:
    """The :class:`~workerwire.MasterHooks` of one port's listener."""

    def __init__(self, hub: "WorkerwireHub", key: tuple[str, str]):
        self._hub = hub
        self._key = key

    def newConnection(self, conn: Connection, workerName: str) -> Deferred[None]:
        return ensureDeferred(self._hub._new_connection(self._key, conn, workerName))

    def workerShutdownRequested(self, conn: Connection) -> None:
        self._hub._shutdown_requested(conn)


class WorkerwireHub(service.AsyncService):
    """The workerwire ports of one Buildbot master, shared by its ``WorkerwireWorker`` s."""

    name = HUB_SERVICE_NAME

    def __init__(self, master: Any):
        super().__init__()
        self.bb_master = master
        self._ports: dict[tuple[str, str], _Port] = {}
        self._worker_key: dict[str, tuple[str, str]] = {}
        # listeners without registrations whose connections are still up
        self._retired: list[Listener] = []
        self._adapters: dict[Connection, BuildbotConnection] = {}
        self._lock = DeferredLock()

    @classmethod
    async def of(cls, master: Any) -> "WorkerwireHub":
        """The master's hub, created (and started with the master) on first use."""
        hub = master.namedServices.get(HUB_SERVICE_NAME)
        if hub is None:
            hub = cls(master)
            await hub.setServiceParent(master)
        return hub

    # -- registrations ------------------------------------------------------

    def listener_for(self, name: str) -> Listener | None:
        """The listener *name* is registered with, if any."""
        key = self._worker_key.get(name)
        return self._ports[key].listener if key is not None else None

    async def register(self, name: str, password: str | None, settings: WorkerSettings) -> Registration | None:
        """Register (or re-register, re-password, move) worker *name*; ``None``
        when its password is empty (Buildbot's rule: no password, no login)."""
        await self._lock.acquire()
        try:
            return await self._register(name, password, settings)
        finally:
            self._lock.release()

    async def unregister(self, name: str) -> None:
        """Remove worker *name*'s registration; its live connection stays (as in Buildbot)."""
        await self._lock.acquire()
        try:
            await self._drop(name)
        finally:
            self._lock.release()

    async def _register(self, name: str, password: str | None, settings: WorkerSettings) -> Registration | None:
        key = settings.key
        old_key = self._worker_key.get(name)
        port = self._ports.get(key)
        if port is not None and port.options != settings.options:
            others = sorted(port.workers - {name})
            if others:
                differences = _differences(port.options, settings.options)
                raise SettingsError(
                    f"WorkerwireWorker {name!r}: workers on {key[0]} port {key[1]!r} share one listener and so "
                    f"need the same link options; already there: {', '.join(others)}, with {differences}"
                )
            await self._drop(name)  # the port's only worker changed its options: a new listener
            old_key, port = None, None
        if old_key is not None and old_key != key and old_key[1] == key[1]:
            await self._drop(name)  # same port string, other backend: free the port first
            old_key = None
        if not password:
            await self._drop(name)
            return None
        if port is None:
            backend = load_backend(key[0])
            listener = backend.create_listener(_PortHooks(self, key), settings.options, self.bb_master.reactor)
            port = self._ports[key] = _Port(key, settings.options, listener)
        try:
            reg = await port.listener.updateRegistration(name, password, key[1])
        except Exception:
            if not port.workers:
                del self._ports[key]
                await port.listener.stopListening()
            raise
        port.workers.add(name)
        if old_key is not None and old_key != key:
            await self._drop(name)
        self._worker_key[name] = key
        return reg

    async def _drop(self, name: str) -> None:
        key = self._worker_key.pop(name, None)
        if key is None:
            return
        port = self._ports.get(key)
        if port is None:
            return
        await port.listener.updateRegistration(name, None, None)
        port.workers.discard(name)
        if not port.workers:
            del self._ports[key]  # the listener closed the port with its last registration
            if port.listener.connections():
                self._retired.append(port.listener)
            else:
                await port.listener.stopListening()

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        ports, self._ports = list(self._ports.values()), {}
        retired, self._retired = self._retired, []
        self._worker_key.clear()
        for listener in [p.listener for p in ports] + retired:
            await listener.stopListening()
        await maybeDeferred(service.AsyncService.stopService, self)

    # -- logins -------------------------------------------------------------

    async def _new_connection(self, key: tuple[str, str], link: Connection, name: str) -> None:
        registration = self.bb_master.workers.registrations.get(name)
        worker = registration.worker if registration is not None else None
        if worker is None or self._worker_key.get(name) != key:
            raise LoginRefused(f"worker {name!r} is not configured for {key[0]} on {key[1]!r} in this master")
        conn = BuildbotConnection(self.bb_master, worker, link)
        old = self.bb_master.workers.connections.get(name)
        try:
            accepted = await self.bb_master.workers.newConnection(conn, name)
        except RuntimeError as e:
            # WorkerManager.newConnection's refusal: the old connection still answers its ping.
            where = f" from {old.get_peer()}" if old is not None else ""
            raise DuplicateWorker(
                f"worker {name!r} is already connected{where} and that connection answers; "
                f"refusing the second login from {link.get_peer()} ({e})"
            ) from None
        except Exception as e:
            raise LoginRefused(f"the master could not talk to worker {name!r} while it logged in: {e}") from None
        if not accepted:
            raise DuplicateWorker(f"the master refused worker {name!r} from {link.get_peer()}")
        self._adapters[link] = conn
        link.notifyOnDisconnect(lambda: self._adapters.pop(link, None))
        # The listener attaches the link when this returns (its login answer goes out then);
        # Buildbot's Worker starts talking to it after that.
        self.bb_master.reactor.callLater(0, self._attach_worker, worker, conn)

    def _attach_worker(self, worker: Any, conn: BuildbotConnection) -> None:
        if not conn.link.isConnected:
            return
        d = maybeDeferred(worker.attached, conn)
        d.addErrback(lambda f: _log.failure("attaching worker {worker} failed", f, worker=worker.workername))

    def _shutdown_requested(self, link: Connection) -> None:
        conn = self._adapters.get(link)
        if conn is None:
            return
        conn.worker.messageReceivedFromWorker()
        conn.worker.shutdownRequested()


def _differences(a: LinkOptions, b: LinkOptions) -> str:
    changed = [n for n in LinkOptions.names() if getattr(a, n) != getattr(b, n)]
    return ", ".join(f"{n}={getattr(a, n)!r} (this one: {getattr(b, n)!r})" for n in changed)
