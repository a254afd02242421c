"""The master daemon: listeners for the configured protocols, and its worker policy.

:class:`Master` turns a :class:`~workerwire_app.config.MasterConfig` into one
:class:`~workerwire.master.Listener` per protocol (loaded through the
registry), registers every configured worker on the protocols it may use, and
answers the listeners as their :class:`~workerwire.master.MasterHooks`:

* **Ports** open at start for every configured protocol (even with no worker
  on it) and stay open, at the same port, while the protocol is configured.
* **One authoritative connection per worker.**  A second login for a worker
  that is connected pings the old connection; if it answers within
  ``duplicate_ping_timeout`` the new login is refused with
  :class:`~workerwire.errors.DuplicateWorker`, otherwise the old connection
  is closed, its disconnect notice runs, and only then is the new one accepted.
* **On attach** it reads the worker's info, sets its builders and runs the
  config's ``[[jobs]]`` for it, one after another.
* **Reload** (:meth:`Master.reload`, SIGHUP in the daemon) applies a changed
  config through ``updateRegistration``: a worker whose password changed,
  whose protocol's port changed, or that was removed, is disconnected; every
  other connected worker stays connected.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any, Callable

from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred, fail, gatherResults
from twisted.logger import Logger

from workerwire import Connection, Listener
from workerwire.errors import ConnectionLost, DuplicateWorker, LoginRefused, WorkerwireError

from .asyncutil import TimedOut, wait_for
from .config import ConfigError, ConfigErrors, JobConfig, MasterConfig, WorkerConfig, load_config
from .events import EventLog
from .limits import files_needed, raise_open_files_limit
from .remote_command import RemoteCommand, failure_dict

__all__ = ["Master"]

_log = Logger()

#: Seconds to wait for a closed connection's disconnect notice.
DISCONNECT_WAIT = 10.0

#: The name of the master's own registration on each port (see ``Master._anchor``).
#: Config files may not use worker names starting with ``@``.
ANCHOR_NAME = "@workerwire-master"


class Master:
    """A running master; see the module docstring.

    :param config: the checked config.
    :param reactor: the reactor (the global one by default).
    :param events: where to write machine-readable events (none by default).
    """

    def __init__(self, config: MasterConfig, reactor: Any = None, events: EventLog | None = None):
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.events = events or EventLog(None)
        self._listeners: dict[str, Listener] = {}
        self._workers: dict[str, Connection] = {}
        self._locks: dict[str, DeferredLock] = {}
        self._drop_reasons: dict[Connection, str] = {}
        self._attach_waiters: dict[str, list[Deferred[Connection]]] = {}
        self._attached: set[Connection] = set()  # by identity: an id() is reused once freed
        self._accepting = False
        self._stopped = False
        self._ids = itertools.count(1)
        self._reload_lock = DeferredLock()
        # Each protocol's port carries one registration of the master's own,
        # with a password nobody knows: the port is open as long as the
        # protocol is configured, even with no worker on it, and re-registering
        # a worker (a new password) never closes and reopens it -- which, for
        # a port string asking for any free port, would move it.
        self._anchor_password = secrets.token_urlsafe(32)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Create the listeners and register every worker (which opens the ports).

        :raises ConfigErrors: a port cannot be opened (in use, not permitted);
            everything opened so far is closed again before this raises.
        """
        raise_open_files_limit(files_needed(len(self.config.workers),
                                            [p.options for p in self.config.protocols.values()]))
        for proto in self.config.protocols.values():
            self._listeners[proto.name] = proto.backend.create_listener(self, proto.options, self.reactor)
        try:
            for pname in self.config.protocols:
                await self._anchor(pname, self.config)
            for worker in self.config.workers.values():
                await self._register(worker, self.config)
        except ConfigErrors:
            await self._stop_listeners()
            raise
        self._accepting = True
        addresses = self.addresses()
        for name, where in addresses.items():
            _log.info("protocol {proto} listening on {port} (workers dial {address})",
                      proto=name, port=where["port"], address=where["address"])
        self.events.emit("ready", protocols=addresses, workers=sorted(self.config.workers))

    async def stop(self) -> None:
        """Stop accepting workers, close every port and connection, and wait
        (bounded) for the disconnect notices."""
        self._accepting = False
        self._stopped = True
        self.events.emit("stopping")
        waiters, self._attach_waiters = self._attach_waiters, {}
        for name, ds in waiters.items():
            for d in ds:
                d.errback(ConnectionLost(f"the master stopped before worker {name!r} attached"))
        conns = list(self._workers.values())
        waits = [self._disconnected_notice(c) for c in conns]
        for conn in conns:
            self._drop_reasons[conn] = "the master is stopping"
        await self._stop_listeners()
        if waits:
            try:
                await wait_for(gatherResults(waits), DISCONNECT_WAIT, self.reactor)
            except TimedOut:
                _log.warn("some workers did not disconnect within {t:g} s", t=DISCONNECT_WAIT)
        self.events.emit("stopped")

    async def _stop_listeners(self) -> None:
        listeners, self._listeners = self._listeners, {}
        for name, listener in listeners.items():
            try:
                await listener.stopListening()
            except Exception:
                _log.failure("stopping the {proto} listener failed", proto=name)

    def addresses(self) -> dict[str, dict[str, Any]]:
        """For each protocol with an open port: ``{"port": ..., "address": ...}``
        (``address`` is what a worker of that backend dials)."""
        out: dict[str, dict[str, Any]] = {}
        for name, listener in self._listeners.items():
            reg = listener.getRegistration(ANCHOR_NAME)
            if reg is not None:
                out[name] = {"port": reg.getPort(), "address": reg.getAddress()}
        return out

    def connection(self, workerName: str) -> Connection | None:
        """The worker's current connection, if it is connected."""
        conn = self._workers.get(workerName)
        return conn if conn is not None and conn.isConnected else None

    def whenAttached(self, workerName: str) -> Deferred[Connection]:
        """Fire with the worker's connection once it is attached (builders set).

        :raises ConnectionLost: (as the Deferred's failure) the master stopped
            first.
        """
        if self._stopped:
            return fail(ConnectionLost(f"the master is stopped; worker {workerName!r} will not attach"))
        conn = self.connection(workerName)
        if conn is not None and conn in self._attached:
            d: Deferred[Connection] = Deferred()
            d.callback(conn)
            return d
        d = Deferred()
        self._attach_waiters.setdefault(workerName, []).append(d)
        return d

    # -- registrations ----------------------------------------------------------

    async def _anchor(self, pname: str, config: MasterConfig) -> None:
        await self._update_registration(pname, ANCHOR_NAME, self._anchor_password, config)

    async def _register(self, worker: WorkerConfig, config: MasterConfig) -> None:
        for pname in worker.protocols:
            await self._update_registration(pname, worker.name, worker.password, config)

    async def _update_registration(self, pname: str, name: str, password: str, config: MasterConfig) -> None:
        proto = config.protocols[pname]
        try:
            await self._listeners[pname].updateRegistration(name, password, proto.port)
        except WorkerwireError as e:
            raise ConfigErrors([ConfigError(
                config.path, f"protocols.{pname}.port", f"cannot open the port: {e}",
                "a port that is free and that this user may open (or port 0 for any free port)",
            )]) from None

    async def _unregister(self, name: str, pname: str) -> None:
        listener = self._listeners.get(pname)
        if listener is not None:
            await listener.updateRegistration(name, None, None)

    # -- reload -------------------------------------------------------------------

    async def reload(self, new: MasterConfig | None = None) -> dict[str, list[str]] | None:
        """Apply a changed config (re-read from the same file when *new* is None).

        An invalid file is reported (log and ``reload_failed`` event) and the
        running config stays.  Returns what changed: ``added``, ``removed``,
        ``changed`` (password, port or protocols; disconnected), ``unchanged``.
        """
        await self._reload_lock.acquire()
        try:
            if new is None:
                try:
                    new = load_config(self.config.path)
                except ConfigErrors as e:
                    for err in e.errors:
                        _log.error("reload refused, keeping the running config: {err}", err=str(err))
                    self.events.emit("reload_failed", errors=[str(err) for err in e.errors])
                    return None
            return await self._apply(new)
        finally:
            self._reload_lock.release()

    async def _apply(self, new: MasterConfig) -> dict[str, list[str]]:
        old = self.config
        self.config = new
        summary: dict[str, list[str]] = {"added": [], "removed": [], "changed": [], "unchanged": []}
        errors: list[str] = []
        # A protocol that went away or whose link options changed gets a new
        # listener; stopping the old one closes the connections it carried.
        reconfigured = {p for p in self._listeners
                        if p not in new.protocols or new.protocols[p].options != old.protocols[p].options}
        for pname in reconfigured:
            for conn in self._workers.values():
                if conn.backendName == pname:
                    self._drop_reasons[conn] = f"protocol {pname} was reconfigured"
            await self._listeners.pop(pname).stopListening()
        for pname, proto in new.protocols.items():
            if pname not in self._listeners:
                self._listeners[pname] = proto.backend.create_listener(self, proto.options, self.reactor)
            try:
                # The new port opens first; the old one closes when its last worker moves.
                await self._anchor(pname, new)
            except ConfigErrors as e:
                errors.extend(str(err) for err in e.errors)

        for name in old.workers.keys() - new.workers.keys():
            for pname in old.workers[name].protocols:
                await self._unregister(name, pname)
            self._disconnect(name, "it was removed from the config")
            summary["removed"].append(name)

        for name, worker in new.workers.items():
            before = old.workers.get(name)
            for pname in set(before.protocols if before else ()) - set(worker.protocols):
                await self._unregister(name, pname)
            try:
                await self._register(worker, new)
            except ConfigErrors as e:
                errors.extend(str(err) for err in e.errors)
            if before is None:
                summary["added"].append(name)
                continue
            why = self._why_reconnect(before, worker, old, new, reconfigured)
            if why is not None:
                self._disconnect(name, why)
                summary["changed"].append(name)
                continue
            summary["unchanged"].append(name)
            conn = self.connection(name)
            if conn is not None and worker.builders != before.builders:
                ensureDeferred(self._set_builders(conn, worker))
        for err in errors:
            _log.error("reload: {err}", err=err)
        _log.info("config reloaded from {path}: added {added}, removed {removed}, changed {changed}, "
                  "{n} unchanged", path=new.path, added=summary["added"] or "none",
                  removed=summary["removed"] or "none", changed=summary["changed"] or "none",
                  n=len(summary["unchanged"]))
        self.events.emit("reloaded", errors=errors, **summary)
        return summary

    def _why_reconnect(self, before: WorkerConfig, after: WorkerConfig, old: MasterConfig,
                       new: MasterConfig, reconfigured: set[str]) -> str | None:
        """Why a connected worker must log in again after this change, or None."""
        if before.password != after.password:
            return "its password changed"
        conn = self.connection(after.name)
        if conn is not None and conn.backendName in reconfigured:
            return f"protocol {conn.backendName} was reconfigured"
        if set(before.protocols) != set(after.protocols):
            conn = self.connection(after.name)
            if conn is not None and conn.backendName not in after.protocols:
                return f"protocol {conn.backendName} is no longer enabled for it"
        for pname in after.protocols:
            if pname in old.protocols and old.protocols[pname].port != new.protocols[pname].port:
                conn = self.connection(after.name)
                if conn is not None and conn.backendName == pname:
                    return f"the port of protocol {pname} changed"
        return None

    def _disconnect(self, name: str, why: str) -> None:
        conn = self.connection(name)
        if conn is None:
            return
        _log.info("disconnecting worker {worker} ({backend}, {peer}): {why}",
                  worker=name, backend=conn.backendName, peer=conn.get_peer(), why=why)
        self._drop_reasons[conn] = why
        conn.loseConnection()

    # -- MasterHooks ------------------------------------------------------------

    def newConnection(self, conn: Connection, workerName: str) -> Deferred[None]:
        """Accept *conn*, or refuse it (see the duplicate policy in the module docstring)."""
        return ensureDeferred(self._new_connection(conn, workerName))

    async def _new_connection(self, conn: Connection, name: str) -> None:
        if not self._accepting:
            raise LoginRefused("the master is not accepting workers (it is starting or stopping)")
        if name not in self.config.workers:
            raise LoginRefused(f"worker {name!r} is not in the master's config")
        lock = self._locks.setdefault(name, DeferredLock())
        await lock.acquire()
        try:
            old = self._workers.get(name)
            if old is not None and old.isConnected:
                if await self._answers_ping(old):
                    why = (f"worker {name!r} is already connected from {old.get_peer()} over {old.backendName} "
                           f"and that connection answers; refusing the second login from {conn.get_peer()} "
                           f"over {conn.backendName}")
                    _log.warn("{why}", why=why)
                    self.events.emit("refused", worker=name, backend=conn.backendName, peer=conn.get_peer(),
                                     reason=why)
                    raise DuplicateWorker(why)
                _log.warn("worker {worker}: the old connection from {peer} over {backend} did not answer within "
                          "{t:g} s; dropping it for the new login from {new_peer}", worker=name,
                          peer=old.get_peer(), backend=old.backendName, t=self.config.duplicate_ping_timeout,
                          new_peer=conn.get_peer())
                if not await self._drop(old, "it stopped answering and the worker logged in again"):
                    raise LoginRefused(f"the old connection of worker {name!r} is still closing; try again")
            if not conn.isConnected:
                raise LoginRefused(f"worker {name!r} disconnected while logging in")
            self._workers[name] = conn
            conn.notifyOnDisconnect(lambda: self._on_disconnect(name, conn))
            self.events.emit("connected", worker=name, backend=conn.backendName, peer=conn.get_peer())
            # The listener calls conn.attached() when this returns; start talking after that.
            self.reactor.callLater(0, lambda: ensureDeferred(self._on_attach(name, conn)))
        finally:
            lock.release()

    def workerShutdownRequested(self, conn: Connection) -> None:
        """The worker asked to stop: tell it to shut down now (no build queue to drain here)."""
        _log.info("worker {worker} ({backend}, {peer}) asked to shut down", worker=conn.workerName,
                  backend=conn.backendName, peer=conn.get_peer())
        self.events.emit("shutdown_requested", worker=conn.workerName, backend=conn.backendName)
        self._drop_reasons[conn] = "it asked to shut down"
        conn.remoteShutdown().addErrback(
            lambda f: _log.warn("shutting down worker {worker} failed: {why}", worker=conn.workerName,
                                why=f.getErrorMessage()))

    # -- connection events --------------------------------------------------------

    async def _answers_ping(self, conn: Connection) -> bool:
        try:
            await wait_for(conn.remotePrint("master got a duplicate connection; checking this one is alive"),
                           self.config.duplicate_ping_timeout, self.reactor)
        except (TimedOut, ConnectionLost):
            return False
        except WorkerwireError:
            pass  # it answered, if only with an error: it is alive
        return conn.isConnected

    async def _drop(self, conn: Connection, why: str) -> bool:
        notice = self._disconnected_notice(conn)
        self._drop_reasons[conn] = why
        # It did not answer a ping: abort, a graceful close could wait on a dead peer.
        conn.loseConnection(abort=True)
        try:
            await wait_for(notice, DISCONNECT_WAIT, self.reactor)
        except TimedOut:
            return False
        return True

    def _disconnected_notice(self, conn: Connection) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        conn.notifyOnDisconnect(lambda: None if d.called else d.callback(None))
        return d

    def _on_disconnect(self, name: str, conn: Connection) -> None:
        self._attached.discard(conn)
        why = self._drop_reasons.pop(conn, "the link closed")
        if self._workers.get(name) is conn:
            del self._workers[name]
        _log.info("worker {worker} at {peer} over {backend} disconnected: {why}",
                  worker=name, peer=conn.get_peer(), backend=conn.backendName, why=why)
        self.events.emit("disconnected", worker=name, backend=conn.backendName, peer=conn.get_peer(), reason=why)

    async def _on_attach(self, name: str, conn: Connection) -> None:
        worker = self.config.workers.get(name)
        if worker is None or not conn.isConnected:
            return
        try:
            info = await conn.remoteGetWorkerInfo()
            builders = await self._set_builders(conn, worker)
        except WorkerwireError as e:
            if conn.isConnected:
                _log.warn("worker {worker}: setting it up failed: {why}", worker=name, why=e)
            return
        if not conn.isConnected or self._workers.get(name) is not conn:
            return
        self._attached.add(conn)
        commands = sorted(info.get("worker_commands", {})) if isinstance(info, dict) else []
        _log.info("worker {worker} attached from {peer} over {backend}: version {version} on {host}, "
                  "builders: {builders}", worker=name, peer=conn.get_peer(), backend=conn.backendName,
                  version=info.get("version", "?"), host=info.get("host") or info.get("system", "?"),
                  builders=", ".join(builders) or "none")
        self.events.emit("attached", worker=name, backend=conn.backendName, version=info.get("version"),
                         builders=builders, commands=commands)
        for d in self._attach_waiters.pop(name, []):
            d.callback(conn)
        jobs = self.config.jobs_for(name)
        for job in jobs:
            if not conn.isConnected:
                break
            await self.run_job(conn, job)

    async def _set_builders(self, conn: Connection, worker: WorkerConfig) -> list[str]:
        if not worker.builders:
            return []
        return list(await conn.remoteSetBuilderList(list(worker.builders)))

    # -- jobs ---------------------------------------------------------------------

    async def run_job(self, conn: Connection, job: JobConfig,
                      on_update: Callable[[list[Any]], object] | None = None) -> RemoteCommand:
        """Run *job*'s ``shell`` command on *conn* and wait for it to end.

        Its start and end are logged and written to the event log
        (``job_started`` / ``job_finished``).
        """
        name = conn.workerName
        command_id = f"{job.name}-{next(self._ids)}"
        target = RemoteCommand(on_update)
        try:
            await conn.remoteStartCommand(target, job.builder, command_id, "shell", job.shell_args())
        except WorkerwireError as e:
            _log.warn("job {job} on worker {worker} did not start: {why}", job=job.name, worker=name, why=e)
            self.events.emit("job_finished", worker=name, job=job.name, command_id=command_id, rc=None,
                             failure=failure_dict(e), started=False, output_tail="")
            target.remote_complete(e)
            return target
        _log.info("job {job} started on worker {worker}", job=job.name, worker=name)
        self.events.emit("job_started", worker=name, job=job.name, command_id=command_id, backend=conn.backendName)
        result = await target.done
        _log.info("job {job} on worker {worker} finished: rc={rc}{failure}", job=job.name, worker=name,
                  rc=result.rc, failure="" if result.failure is None else f", failed: {result.failure}")
        self.events.emit("job_finished", worker=name, job=job.name, command_id=command_id, rc=result.rc,
                         failure=failure_dict(result.failure), started=True, elapsed=result.elapsed,
                         output_tail=result.output_tail)
        return target

