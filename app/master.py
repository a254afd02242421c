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
  other connected worker stays connected and runs the ``[[jobs]]`` the
  reload added.  A reload whose ports cannot be opened changes nothing
  (``reload_failed``).
* **Operating it**: the control socket (:mod:`workerwire_app.control`:
  :meth:`Master.status`, :meth:`Master.run_command`, disconnect, shutdown),
  Prometheus metrics (:mod:`workerwire_app.metrics`) and each command's
  output kept under the state directory (:mod:`workerwire_app.job_log`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import time
from typing import Any, Callable

from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred, fail, gatherResults
from twisted.logger import Logger

from workerwire import Connection, Listener
from workerwire import observe
from workerwire.errors import ConnectionLost, DuplicateWorker, LoginRefused, WorkerwireError
from workerwire.tls import is_tls

from .asyncutil import TimedOut, wait_for
from .config import ConfigError, ConfigErrors, JobConfig, MasterConfig, ProtocolConfig, WorkerConfig, load_config
from .events import EventLog
from .job_log import open_job_log
from .limits import open_files_capacity
from .metrics import MasterMetrics, refusal_kind, serve_metrics
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
        self._since: dict[Connection, float] = {}
        self._rtt: dict[Connection, float] = {}
        #: worker name -> command id -> what status shows of a running command.
        self._running: dict[str, dict[str, dict[str, Any]]] = {}
        #: (backend, its byte counts) of every listener this master made, the
        #: replaced ones too: the link byte counters never go down.
        self._link_totals: list[tuple[str, Any]] = []
        self.metrics = MasterMetrics()
        self.metrics.watch_state(self._connection_counts, self._guard_stats, self._link_byte_counts)
        self._observing: Any = None
        self._metrics_port: Any = None
        self._control: Any = None
        #: The open-files limit and how many workers it allows (set by start()).
        self.open_files: dict[str, int | None] = {}

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Create the listeners and register every worker (which opens the ports).

        :raises ConfigErrors: a port cannot be opened (in use, not permitted);
            everything opened so far is closed again before this raises.
        """
        self.open_files = open_files_capacity(len(self.config.workers),
                                              [p.options for p in self.config.protocols.values()])
        for proto in self.config.protocols.values():
            self._listeners[proto.name] = self._new_listener(proto)
        try:
            for pname in self.config.protocols:
                await self._anchor(pname, self.config)
            for worker in self.config.workers.values():
                await self._register(worker, self.config)
            await self._start_operator_ports()
        except ConfigErrors:
            await self._stop_operator_ports()
            await self._stop_listeners()
            raise
        self._observing = observe.observe(self)
        self._accepting = True
        addresses = self.addresses()
        for name, where in addresses.items():
            _log.info("protocol {proto} listening on {port} (workers dial {address})",
                      proto=name, port=where["port"], address=where["address"])
        self.events.emit("ready", protocols=addresses, workers=sorted(self.config.workers),
                         control_socket=self.config.settings.control_socket if self._control else None,
                         metrics=self.metrics_address())

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
        if self._observing is not None:
            self._observing.unsubscribe()
            self._observing = None
        await self._stop_operator_ports()
        await self._stop_listeners()
        if waits:
            try:
                await wait_for(gatherResults(waits), DISCONNECT_WAIT, self.reactor)
            except TimedOut:
                _log.warn("some workers did not disconnect within {t:g} s", t=DISCONNECT_WAIT)
        self.events.emit("stopped")

    async def _start_operator_ports(self) -> None:
        """The state directory, the control socket and the metrics port, as configured.

        :raises ConfigErrors: one of them cannot be created or opened.
        """
        settings, path = self.config.settings, self.config.path
        if settings.state_dir is not None:
            try:
                os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)
            except OSError as e:
                raise ConfigErrors([ConfigError(path, "master.state_dir", f"cannot create {settings.state_dir!r}: "
                                                f"{e.strerror or e}", "a directory this user may create")]) from None
        if settings.control_socket is not None:
            from .control import ControlServer

            control = ControlServer(self, settings.control_socket, self.reactor)
            try:
                await control.start()
            except OSError as e:
                raise ConfigErrors([ConfigError(path, "master.control_socket", str(e),
                                                "a path no running master uses, in a directory this user may "
                                                "write, or false for no control channel")]) from None
            self._control = control
        if settings.metrics is not None:
            try:
                self._metrics_port = await serve_metrics(self.reactor, settings.metrics, self.metrics.registry)
            except Exception as e:
                raise ConfigErrors([ConfigError(path, "master.metrics", f"cannot open {settings.metrics!r}: {e}",
                                                "a free port this user may open")]) from None
            _log.info("metrics at http://{where}/metrics", where=self.metrics_address())

    def metrics_address(self) -> str | None:
        """``host:port`` of the metrics port, if it is open."""
        if self._metrics_port is None:
            return None
        addr = self._metrics_port.getHost()
        return f"{addr.host}:{addr.port}"

    async def _stop_operator_ports(self) -> None:
        control, self._control = self._control, None
        if control is not None:
            await control.stop()
        port, self._metrics_port = self._metrics_port, None
        if port is not None:
            await port.stopListening()

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
        # On every protocol, also those it may not use: the right password there
        # earns a refusal that says so (see _new_connection), not an "unknown
        # worker" that counts as a failed login and slows down its host.
        for pname in config.protocols:
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

    async def _apply(self, new: MasterConfig) -> dict[str, list[str]] | None:
        old = self.config
        summary: dict[str, list[str]] = {"added": [], "removed": [], "changed": [], "unchanged": []}
        errors = await self._apply_ports(old, new)
        if errors:
            for err in errors:
                _log.error("reload refused, keeping the running config (its ports serve as before): {err}",
                           err=err)
            self.events.emit("reload_failed", errors=errors)
            return None
        self.config = dataclasses.replace(new, settings=old.settings)
        if new.settings != old.settings:
            _log.warn("reload: the [master] state_dir, control_socket, metrics and job_logs_kept keys take effect "
                      "when the master starts again; the running ones stay")
        reconfigured = {p for p in old.protocols
                        if p not in new.protocols or new.protocols[p].options != old.protocols[p].options}

        for name in old.workers.keys() - new.workers.keys():
            for pname in old.protocols:
                await self._unregister(name, pname)
            self._disconnect(name, "it was removed from the config")
            summary["removed"].append(name)

        for name, worker in new.workers.items():
            before = old.workers.get(name)
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
        jobs = _job_changes(old, new)
        for name in summary["unchanged"]:
            conn = self.connection(name)
            if conn is not None and conn in self._attached:
                ensureDeferred(self._after_reload(conn, old.workers[name], new.workers[name], jobs["jobs_added"]))
        for err in errors:
            _log.error("reload: {err}", err=err)
        _log.info("config reloaded from {path}: added {added}, removed {removed}, changed {changed}, "
                  "{n} unchanged; jobs added {jadded}, removed {jremoved}, changed {jchanged}", path=new.path,
                  added=summary["added"] or "none", removed=summary["removed"] or "none",
                  changed=summary["changed"] or "none", n=len(summary["unchanged"]),
                  jadded=jobs["jobs_added"] or "none", jremoved=jobs["jobs_removed"] or "none",
                  jchanged=jobs["jobs_changed"] or "none")
        summary.update(jobs)
        self.events.emit("reloaded", errors=errors, **summary)
        return summary

    async def _after_reload(self, conn: Connection, before: WorkerConfig, after: WorkerConfig,
                            added_jobs: list[str]) -> None:
        """A worker that stayed connected: its new builders, then the new jobs for it (once each)."""
        try:
            if after.builders != before.builders:
                await self._set_builders(conn, after)
        except WorkerwireError as e:
            _log.warn("worker {worker}: setting its builders after the reload failed: {why}",
                      worker=after.name, why=e)
            return
        for job in self.config.jobs_for(after.name):
            if job.name in added_jobs and conn.isConnected:
                await self.run_job(conn, job)

    async def _apply_ports(self, old: MasterConfig, new: MasterConfig) -> list[str]:
        """Open the new config's ports; on any failure put every protocol back
        as *old* had it and return the errors (empty: all opened).

        A protocol that went away or whose link options changed gets a new
        listener (stopping the old one closes its connections).  A changed port
        opens before the old one closes (it closes when its last worker moved);
        when that fails because the old port holds the address (the same port,
        e.g. plain to TLS), the old listener is stopped first and the new port
        opened then.
        """
        errors: list[str] = []
        replaced: set[str] = set()
        for pname in list(self._listeners):
            if pname not in new.protocols or new.protocols[pname].options != old.protocols[pname].options:
                await self._replace_listener(pname, f"protocol {pname} was reconfigured", None)
                replaced.add(pname)
        for pname, proto in new.protocols.items():
            if pname not in self._listeners:
                self._listeners[pname] = self._new_listener(proto)
                replaced.add(pname)
            try:
                await self._anchor(pname, new)
                continue
            except ConfigErrors as e:
                first = [str(err) for err in e.errors]
            if pname in replaced or pname not in old.protocols or not self._holds_port(pname, proto.port):
                errors.extend(first)
                continue
            # The old port holds the address the new port string asks for.
            await self._replace_listener(pname, f"the port of protocol {pname} changed", proto)
            replaced.add(pname)
            try:
                await self._anchor(pname, new)
            except ConfigErrors as e:
                errors.extend(str(err) for err in e.errors)
        if not errors:
            return []
        for pname in new.protocols.keys() - old.protocols.keys():
            listener = self._listeners.pop(pname, None)
            if listener is not None:
                await listener.stopListening()
        for pname in old.protocols:
            if pname in replaced:
                await self._replace_listener(pname, "the reload failed", old.protocols[pname])
                try:
                    await self._anchor(pname, old)
                    for worker in old.workers.values():
                        await self._update_registration(pname, worker.name, worker.password, old)
                except ConfigErrors as e:
                    errors.extend(f"and the old port could not be reopened: {err}" for err in e.errors)
            elif pname in self._listeners:
                await self._anchor(pname, old)  # back to the old port, which its workers keep open
        return errors

    def _holds_port(self, pname: str, port_str: str) -> bool:
        """Is *pname*'s open port the port number *port_str* asks for?"""
        reg = self._listeners[pname].getRegistration(ANCHOR_NAME)
        if reg is None:
            return False
        fields = port_str.split(":")[1:]
        wanted = next((f[len("port="):] for f in fields if f.startswith("port=")),
                      fields[0] if fields and "=" not in fields[0] else None)
        return wanted is not None and wanted != "0" and wanted == str(reg.getPort())

    def _new_listener(self, proto: ProtocolConfig) -> Any:
        listener = proto.backend.create_listener(self, proto.options, self.reactor)
        totals = getattr(listener, "link_totals", None)  # a BaseListener's (workerwire.link_bytes)
        if totals is not None:
            self._link_totals.append((getattr(listener, "backendName", proto.backend.name), totals))
        return listener

    async def _replace_listener(self, pname: str, why: str, proto: ProtocolConfig | None) -> None:
        """Stop *pname*'s listener (closing its connections with *why*); start a new one for *proto*."""
        for conn in self._workers.values():
            if conn.backendName == pname:
                self._drop_reasons[conn] = why
        listener = self._listeners.pop(pname, None)
        if listener is not None:
            await listener.stopListening()
        if proto is not None:
            self._listeners[pname] = self._new_listener(proto)

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

    def disconnect(self, name: str, why: str) -> None:
        """Close the worker's connection (it reconnects by itself), logging *why*."""
        self._disconnect(name, why)

    async def shutdown_worker(self, name: str, why: str) -> None:
        """Tell the connected worker to shut down (it stops and does not reconnect).

        :raises ConnectionLost: it is not connected.
        """
        conn = self.connection(name)
        if conn is None:
            raise ConnectionLost(f"worker {name!r} is not connected")
        _log.info("shutting down worker {worker}: {why}", worker=name, why=why)
        self._drop_reasons[conn] = why
        await conn.remoteShutdown()

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
        worker = self.config.workers.get(name)
        if worker is None:
            self._refused(conn, name, "unknown_worker", f"worker {name!r} is not in the master's config")
        elif conn.backendName not in worker.protocols:
            self._refused(conn, name, "protocol_not_allowed",
                          f"worker {name!r} may not log in over {conn.backendName}; its protocols: "
                          f"{', '.join(worker.protocols)} (the [[workers]] entry's protocols key)")
        lock = self._locks.setdefault(name, DeferredLock())
        await lock.acquire()
        try:
            old = self._workers.get(name)
            if old is not None and old.isConnected:
                if await self._answers_ping(old):
                    why = (f"worker {name!r} is already connected from {old.get_peer()} over {old.backendName} "
                           f"and that connection answers; refusing the second login from {conn.get_peer()} "
                           f"over {conn.backendName}")
                    # The listener logs the refusal (once); the event log and metrics get it here.
                    self.events.emit("refused", worker=name, backend=conn.backendName, peer=conn.get_peer(),
                                     reason=why)
                    self.metrics.login("refused", conn.backendName, "duplicate")
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
            self._since[conn] = time.time()
            conn.notifyOnDisconnect(lambda: self._on_disconnect(name, conn))
            self.metrics.login("accepted", conn.backendName, "")
            self.events.emit("connected", worker=name, backend=conn.backendName, peer=conn.get_peer(),
                             tls=self.uses_tls(conn.backendName))
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

    def _refused(self, conn: Connection, name: str, reason: str, why: str) -> None:
        """Refuse a login whose password was right (the listener logs the refusal)."""
        self.events.emit("login_refused", worker=name, backend=conn.backendName, peer=conn.get_peer(),
                         reason=reason, message=why)
        self.metrics.login("refused", conn.backendName, reason)
        raise LoginRefused(why)

    # -- link observer (workerwire.observe) ------------------------------------------

    def login_refused(self, guard: object, backend: str, worker: str, peer: str, reason: str) -> None:
        """A listener of this master refused a login's credentials (never a password here)."""
        if not any(getattr(listener, "login_guard", None) is guard for listener in self._listeners.values()):
            return  # another master's listener in this process
        kind = refusal_kind(reason)
        self.metrics.login("refused", backend, kind)
        self.events.emit("login_refused", worker=worker, backend=backend, peer=peer, reason=kind, message=reason)

    def keepalive_answered(self, owner: object, rtt: float) -> None:
        name = getattr(owner, "workerName", None)
        conn = None if name is None else self._workers.get(name)
        if conn is not None and conn is owner:
            self._rtt[conn] = rtt
            self.metrics.keepalive_rtt(getattr(owner, "backendName", "?"), rtt)

    def transfer_bytes(self, owner: object, direction: str, size: int) -> None:
        """A transfer on a connection of this master carried *size* bytes."""
        name = getattr(owner, "workerName", None)
        if name is not None and self._workers.get(name) is owner:
            self.metrics.transfer(direction, size)

    def _on_disconnect(self, name: str, conn: Connection) -> None:
        self._attached.discard(conn)
        self._since.pop(conn, None)
        self._rtt.pop(conn, None)
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
        # The jobs of the config it attached under (a reload from here on runs its new jobs itself).
        jobs = self.config.jobs_for(name)
        for d in self._attach_waiters.pop(name, []):
            d.callback(conn)
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
        """Run *job*'s ``shell`` command on *conn* and wait for it to end (see :meth:`run_command`)."""
        command_id = f"{job.name}-{next(self._ids)}"
        target, started = await self.run_command(conn, job.builder, command_id, job.shell_args(), on_update,
                                                 job=job.name)
        if started:
            await target.done
        return target

    async def run_command(self, conn: Connection, builder: str, command_id: str, args: dict[str, Any],
                          on_update: Callable[[list[Any]], object] | None = None,
                          job: str | None = None) -> tuple[RemoteCommand, bool]:
        """Start a ``shell`` command on *conn*; returns its target and whether it started.

        Its start and end are logged, counted in the metrics and written to the
        event log (``job_started`` / ``job_finished``; ``job`` is None for a
        command from the control channel); its output is kept in a file under
        the state directory (``output_log`` in ``job_finished``).  When it did
        not start, ``target.done`` has fired with the error.
        """
        name, backend = conn.workerName, conn.backendName
        settings = self.config.settings
        job_log = (open_job_log(settings.state_dir, settings.job_logs_kept, name, command_id)
                   if settings.state_dir else None)

        def updates(batch: list[Any]) -> object:
            for key, value in batch:
                if key in ("stdout", "stderr") and isinstance(value, (str, bytes)):
                    self.metrics.output(backend, key, len(value))
            if job_log is not None:
                job_log.write(batch)
            return on_update(batch) if on_update is not None else None

        target = RemoteCommand(updates)
        running = {"command_id": command_id, "builder": builder, "job": job, "started": time.time()}
        self._running.setdefault(name, {})[command_id] = running
        self.metrics.command_started(backend)
        try:
            await conn.remoteStartCommand(target, builder, command_id, "shell", args)
        except WorkerwireError as e:
            self._running.get(name, {}).pop(command_id, None)
            self.metrics.command_ended(backend, e)
            _log.warn("command {command} on worker {worker} did not start: {why}", command=command_id,
                      worker=name, why=e)
            self.events.emit("job_finished", worker=name, job=job, command_id=command_id, rc=None,
                             failure=failure_dict(e), started=False, output_tail="",
                             output_log=None if job_log is None else job_log.path)
            if job_log is not None:
                job_log.close()
            target.remote_complete(e)
            return target, False
        _log.info("command {command} started on worker {worker} ({builder})", command=command_id, worker=name,
                  builder=builder)
        self.events.emit("job_started", worker=name, job=job, command_id=command_id, backend=backend,
                         builder=builder)

        def finished(result: Any) -> Any:
            self._running.get(name, {}).pop(command_id, None)
            if job_log is not None:
                job_log.close()
            self.metrics.command_ended(backend, result.failure)
            _log.info("command {command} on worker {worker} finished: rc={rc}{failure}", command=command_id,
                      worker=name, rc=result.rc,
                      failure="" if result.failure is None else f", failed: {result.failure}")
            self.events.emit("job_finished", worker=name, job=job, command_id=command_id, rc=result.rc,
                             failure=failure_dict(result.failure), started=True, elapsed=result.elapsed,
                             output_tail=result.output_tail, output_log=None if job_log is None else job_log.path)
            return result

        target.done.addCallback(finished)
        return target, True

    def next_command_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    # -- what status shows ----------------------------------------------------------

    def uses_tls(self, protocol: str) -> bool:
        proto = self.config.protocols.get(protocol)
        return proto is not None and is_tls(proto.port)

    def status(self) -> dict[str, Any]:
        """Every configured worker, connected or not (what ``workerwire status`` shows)."""
        workers = []
        for name, worker in sorted(self.config.workers.items()):
            conn = self.connection(name)
            entry: dict[str, Any] = {"name": name, "connected": conn is not None, "protocols": list(worker.protocols),
                                     "builders": [b for b, _ in worker.builders]}
            if conn is not None:
                entry.update(backend=conn.backendName, peer=conn.get_peer(), tls=self.uses_tls(conn.backendName),
                             attached=conn in self._attached, connected_since=self._since.get(conn),
                             keepalive_rtt=self._rtt.get(conn), **_byte_counts(conn))
            entry["running"] = sorted(self._running.get(name, {}).values(), key=lambda c: c["started"])
            workers.append(entry)
        return {"config": self.config.path, "protocols": self.addresses(), "workers": workers,
                "open_files": self.open_files}

    def _link_byte_counts(self) -> dict[str, tuple[int, int]]:
        """Per backend: bytes its links received and sent (closed links included)."""
        out: dict[str, tuple[int, int]] = {}
        for backend, totals in self._link_totals:
            received, sent = out.get(backend, (0, 0))
            out[backend] = (received + totals.received, sent + totals.sent)
        return out

    def _connection_counts(self) -> dict[str, int]:
        counts = {name: 0 for name in self.config.protocols}
        for conn in self._workers.values():
            if conn.isConnected:
                counts[conn.backendName] = counts.get(conn.backendName, 0) + 1
        return counts

    def _guard_stats(self) -> dict[str, dict[str, int]]:
        out = {}
        for name, listener in self._listeners.items():
            guard = getattr(listener, "login_guard", None)
            if guard is not None:
                out[name] = dict(guard.stats)
        return out


def _byte_counts(conn: Connection) -> dict[str, int]:
    """What ``status`` shows of a connection's bytes: its link's (read and
    written by the backend, login included; 0 for a backend that does not
    count) and its file transfers'."""
    link = getattr(conn, "link_bytes", None)
    handles = getattr(conn, "transfer_handles", None)
    return {"bytes_received": getattr(link, "received", 0), "bytes_sent": getattr(link, "sent", 0),
            "transfer_uploaded": getattr(handles, "uploaded", 0),
            "transfer_downloaded": getattr(handles, "downloaded", 0)}


def _job_changes(old: MasterConfig, new: MasterConfig) -> dict[str, list[str]]:
    """Job names added, removed and changed between two configs."""
    before = {job.name: job for job in old.jobs}
    after = {job.name: job for job in new.jobs}
    return {"jobs_added": sorted(after.keys() - before.keys()),
            "jobs_removed": sorted(before.keys() - after.keys()),
            "jobs_changed": sorted(n for n in after.keys() & before.keys() if after[n] != before[n])}
