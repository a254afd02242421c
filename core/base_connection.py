"""Protocol-neutral master-side connection behaviour, written once for every backend.

:class:`BaseConnection` implements the whole public
:class:`~workerwire.master.Connection` contract: argument checks, one command per
builder, routing of updates to the right command, exactly-once completion,
failing pending calls on disconnect, keepalive.  A backend subclasses it and
fills in the ``call_*`` primitives and :meth:`lose_connection`, and
reports what arrives from the worker through the ``_on_*`` methods.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .api_compat import MASTER_EVENTS, MASTER_HOOKS, adopt_legacy_hooks, legacy_event
from .backend import LinkOptions
from .errors import (
    BuilderBusy,
    ConnectionLost,
    DuplicateCommandId,
    ProtocolError,
    RemoteCallFailed,
    WorkerwireError,
    peer_text,
)
from .flow import ReceiveWindow
from .keepalive import KeepaliveMonitor
from .link_bytes import LinkBytes
from .master import CommandTarget, Connection, MasterHooks, Subscription, Update
from .subscriptions import SubscriptionList
from .transfer import HandleRef, HandleTable, split_handles
from .values import check_value

__all__ = ["BaseConnection", "update_pairs"]


def update_pairs(items: Any, where: str = "an update batch") -> list[Update]:
    """What a worker sent as ``[[key, value], ...]`` (as most backends carry
    updates), as the ``(key, value)`` pairs :meth:`BaseConnection.on_update`
    takes.

    :raises ProtocolError: not a list of two-item lists with a str key.
    """
    if type(items) is not list:
        raise ProtocolError(f"{where} must be a list of [key, value] pairs, not a {type(items).__name__}")
    pairs: list[Update] = []
    for item in items:
        if type(item) is not list or len(item) != 2 or type(item[0]) is not str:
            raise ProtocolError(f"{where} must be a list of [key: str, value] pairs, not {peer_text(item)}")
        pairs.append((item[0], item[1]))
    return pairs

_log = Logger()


#: What :attr:`BaseConnection.receive_window` allows over twice the window (a worker's largest batch).
RECEIVE_WINDOW_SLACK = 1024 * 1024


@dataclass
class _Command:
    builderName: str
    commandId: str
    target: CommandTarget
    accepted: bool = False
    pending_complete: list[WorkerwireError | None] = field(default_factory=list)


class BaseConnection(Connection):
    """Base of every backend's master-side connection."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        adopt_legacy_hooks(cls, {**MASTER_HOOKS, **MASTER_EVENTS})

    def __init__(
        self,
        master: MasterHooks,
        workerName: str,
        backendName: str,
        options: LinkOptions,
        clock: IReactorTime,
    ):
        self.master = master
        self.workerName = workerName
        self.backendName = backendName
        self.options = options
        self.keepalive_interval = options.keepalive_interval
        self.keepalive_timeout = options.keepalive_timeout
        self._clock = clock
        self._lost: WorkerwireError | None = None
        self._disconnect_subs = SubscriptionList()
        self._pending: dict[int, Deferred[Any]] = {}
        self._next_call = 0
        self._commands: dict[str, _Command] = {}
        self._busy_builders: dict[str, str] = {}
        self._keepalive: KeepaliveMonitor | None = None
        self._close_timer: IDelayedCall | None = None
        self._receive_window: ReceiveWindow | None = None
        self.mind: object = None
        #: Transfer handles of the running commands (see :mod:`workerwire.transfer`).
        self.transfer_handles = HandleTable(options.output_window, f"worker {workerName!r}")
        self.transfer_handles.on_release = self.transfer_handles_released
        self.transfer_handles.owner = self
        #: Bytes this link read and wrote, counted by the backend (its
        #: protocol's counter, login included; zero for a backend that does
        #: not count: see :mod:`workerwire.link_bytes`).
        self.link_bytes = LinkBytes()

    # -- backend primitives -------------------------------------------------

    @abc.abstractmethod
    def call_print(self, message: str) -> Deferred[Any]: ...

    @abc.abstractmethod
    def call_get_worker_info(self) -> Deferred[dict[str, Any]]: ...

    @abc.abstractmethod
    def call_set_builder_list(self, builders: list[list[str]]) -> Deferred[list[str]]: ...

    @abc.abstractmethod
    def call_start_build(self, builderName: str) -> Deferred[Any]: ...

    @abc.abstractmethod
    def call_start_command(
        self, builderName: str, commandId: str, commandName: str, args: dict[str, Any]
    ) -> Deferred[Any]:
        """Send the start; the worker's updates come back through
        :meth:`on_update` / :meth:`on_complete` with this *commandId*.

        Where the master put a transfer handle, *args* holds a
        :class:`~workerwire.transfer.HandleRef` (top level, key ``writer`` or
        ``reader``); the backend carries it its own way (e.g.
        :func:`~workerwire.transfer.split_refs`) so that the worker gets a
        :class:`~workerwire.transfer.TransferProxy`, and reports the worker's
        calls on it through :meth:`on_transfer_call`."""

    @abc.abstractmethod
    def call_interrupt_command(self, builderName: str, commandId: str, why: str) -> Deferred[Any]: ...

    @abc.abstractmethod
    def call_shutdown(self) -> Deferred[Any]: ...

    @abc.abstractmethod
    def call_keepalive(self) -> Deferred[Any]:
        """A ping the worker answers at once."""

    @abc.abstractmethod
    def lose_connection(self, abort: bool) -> None:
        """Close the transport (abort: drop it without waiting for the peer).

        The backend reports the loss through :meth:`on_connection_lost`.
        """

    def transfer_handles_released(self, handle_ids: list[int]) -> None:
        """These handles were released (their command is over, or the link
        went): a backend frees whatever it made for them.  Default: nothing."""

    def translate_failure(self, failure: Failure) -> Failure:
        """Turn a backend-native failure into a core error; the one place a
        backend does so.  The default passes core errors through and wraps
        anything else as :class:`RemoteCallFailed`."""
        if isinstance(failure.value, WorkerwireError):
            return failure
        return Failure(RemoteCallFailed(type(failure.value).__name__, str(failure.value)))

    # -- events a backend reports ------------------------------------------

    def on_traffic(self) -> None:
        """Something arrived from the worker (keeps the keepalive deadline away)."""
        if self._keepalive is not None:
            self._keepalive.touch()

    def on_update(self, commandId: str, updates: list[Update]) -> object:
        """Updates of a running command arrived.

        Returns what the target's ``remote_update`` returned: a backend with
        flow control may hold its acknowledgement until a returned Deferred
        fires, so a slow master slows the worker.  A failing target is logged,
        never reported to the worker.

        :raises ProtocolError: no such command is running (the backend reports
            this to the worker; nothing reaches any command).
        """
        cmd = self._commands.get(commandId)
        if cmd is None or cmd.pending_complete:
            raise ProtocolError(f"update for command {peer_text(commandId)}, which is not running")
        try:
            result = cmd.target.remote_update(updates)
        except Exception:
            _log.failure(
                "remote_update of command {cid} on {worker} raised", cid=commandId, worker=self.workerName
            )
            return None
        if isinstance(result, Deferred):
            result.addErrback(lambda f: _log.failure(
                "remote_update of command {cid} on {worker} failed", f, cid=commandId, worker=self.workerName))
        return result

    def on_windowed_update(self, commandId: str, updates: list[Update], size: int) -> Deferred[None] | None:
        """:meth:`on_update` through :attr:`receive_window`, for an update of
        *size* bytes (as the backend measures them): admitted, delivered, and
        counted until what the command's consumer returned fires.

        Returns ``None`` (acknowledge at once) or a Deferred that fires with
        ``None`` when the acknowledgement may go.

        :raises ProtocolError: the worker overran its window (close the link),
            or as :meth:`on_update`.
        """
        window = self.receive_window
        window.admit(size)
        held = window.hold(size, self.on_update(commandId, updates))
        return None if held is None else held.addBoth(lambda _: None)

    @property
    def receive_window(self) -> ReceiveWindow:
        """The master's end of the worker's output window, for a backend that
        does not measure it more exactly itself: ``admit(size)`` each update as
        it arrives (a :class:`ProtocolError` there is an overrun: close the
        link), then acknowledge when ``hold(size, self.on_update(...))`` says.
        Its bound is twice ``output_window`` plus 1 MiB (a worker measures its
        updates its own way and batches up to 1 MiB)."""
        window = self._receive_window
        if window is None:  # made on first use: most links never need one
            w = self.options.output_window
            window = self._receive_window = ReceiveWindow(2 * w + RECEIVE_WINDOW_SLACK, w)
        return window

    def on_complete(self, commandId: str, error: WorkerwireError | None) -> None:
        """A running command ended (``error`` is ``None`` on success).

        :raises ProtocolError: no such command is running.
        """
        cmd = self._commands.get(commandId)
        if cmd is None or cmd.pending_complete:
            raise ProtocolError(f"completion of command {peer_text(commandId)}, which is not running")
        cmd.pending_complete.append(error)
        if cmd.accepted:
            self._finish(cmd)

    def on_transfer_call(self, commandId: str | None, handleId: Any, method: str, args: Any) -> Deferred[Any]:
        """The worker called a transfer handle; fires with the answer
        (``None``, or bytes for ``read``).

        Fails with :class:`ProtocolError` for an unknown, released, closed or
        other command's handle, an unknown method or bad arguments (nothing
        reaches any handle), and with the handle's own exception otherwise
        (the backend sends its type name and message: the worker sees
        ``RemoteCallFailed``).

        :param commandId: the command the worker names; ``None`` when the
            carrying ties a handle to its command already (pb references).
        """
        self.on_traffic()
        if self._lost is not None:
            return fail(self._lost)
        return self.transfer_handles.call(commandId, handleId, method, args)

    def on_worker_keepalive(self) -> None:
        self.on_traffic()

    def on_shutdown_request(self) -> None:
        self.on_traffic()
        try:
            self.master.workerShutdownRequested(self)
        except Exception:
            _log.failure("workerShutdownRequested for {worker} raised", worker=self.workerName)

    def on_connection_lost(self, reason: str = "connection closed") -> None:
        """The link is gone; runs the disconnect duties exactly once."""
        if self._lost is not None:
            return
        self._lost = ConnectionLost(f"connection to worker {self.workerName!r} lost: {reason}")
        self.stopKeepaliveTimer()
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(Failure(self._lost))
        commands, self._commands = self._commands, {}
        self._busy_builders.clear()
        self.transfer_handles.release_all()
        for cmd in commands.values():
            if cmd.accepted:
                done = cmd.pending_complete[0] if cmd.pending_complete else self._lost
                self._deliver_complete(cmd, done)
        self.detached(self.mind)

    # API 1.0 names of the events and of the hooks with a default (see api_compat).
    _on_traffic = legacy_event("_on_traffic", on_traffic)
    _on_update = legacy_event("_on_update", on_update)
    _on_complete = legacy_event("_on_complete", on_complete)
    _on_transfer_call = legacy_event("_on_transfer_call", on_transfer_call)
    _on_worker_keepalive = legacy_event("_on_worker_keepalive", on_worker_keepalive)
    _on_shutdown_request = legacy_event("_on_shutdown_request", on_shutdown_request)
    _on_connection_lost = legacy_event("_on_connection_lost", on_connection_lost)
    _translate_failure = legacy_event("_translate_failure", translate_failure)
    _transfer_handles_released = legacy_event("_transfer_handles_released", transfer_handles_released)

    # -- the contract ---------------------------------------------------------

    @property
    def isConnected(self) -> bool:
        return self._lost is None

    def notifyOnDisconnect(self, callback: Callable[[], object]) -> Subscription:
        if self._lost is not None:
            # Already gone: called a turn later, unless unsubscribed before then.
            late = SubscriptionList()
            subscription = late.subscribe(callback)
            self._clock.callLater(0, late.deliver)
            return subscription
        return self._disconnect_subs.subscribe(callback)

    def loseConnection(self, abort: bool = False) -> None:
        self.stopKeepaliveTimer()
        if self._lost is None:
            self.lose_connection(abort=abort)
            if abort:
                self.on_connection_lost("connection aborted by the master")
            elif self._lost is None and self._close_timer is None:
                # A graceful close waits for the peer to take what is still
                # queued; a dead peer never does.  Keepalive is off from here
                # on, so this bounds the close instead.
                self._close_timer = self._clock.callLater(self.keepalive_timeout, self._close_overdue)

    def _close_overdue(self) -> None:
        self._close_timer = None
        if self._lost is None:
            why = f"it did not close within {self.keepalive_timeout:g} s (keepalive timeout); dropped"
            _log.warn("worker {worker} at {peer} over {backend}: {why}", worker=self.workerName,
                      peer=self.get_peer(), backend=self.backendName, why=why)
            self.lose_connection(abort=True)
            self.on_connection_lost(why)

    def attached(self, mind: object) -> Connection:
        self.mind = mind
        self.startKeepaliveTimer()
        return self

    def detached(self, mind: object) -> None:
        self.stopKeepaliveTimer()
        subs, self._disconnect_subs = self._disconnect_subs, SubscriptionList()
        subs.deliver()

    def startKeepaliveTimer(self) -> None:
        if self.keepalive_interval is None or self._lost is not None:
            return
        if self._keepalive is None:
            self._keepalive = KeepaliveMonitor(
                self._clock, self.keepalive_interval, self.keepalive_timeout, lambda: self.doKeepalive(), self._dead,
                owner=self,
            )
        self._keepalive.start()

    def stopKeepaliveTimer(self) -> None:
        if self._keepalive is not None:
            self._keepalive.stop()

    def _dead(self, why: str) -> None:
        _log.warn(
            "worker {worker} at {peer} over {backend} declared dead: {why}",
            worker=self.workerName, peer=self.get_peer(), backend=self.backendName, why=why,
        )
        self.lose_connection(abort=True)
        self.on_connection_lost(f"declared dead: {why}")

    def doKeepalive(self) -> Deferred[None]:
        return self._call(self.call_keepalive)

    def remotePrint(self, message: str) -> Deferred[None]:
        return self._checked_call(self.call_print, ("message", message))

    def remoteGetWorkerInfo(self) -> Deferred[dict[str, Any]]:
        return self._call(self.call_get_worker_info)

    def remoteSetBuilderList(self, builders: list[tuple[str, str]]) -> Deferred[list[str]]:
        try:
            pairs = [[name, builddir] for name, builddir in builders]
        except (TypeError, ValueError):
            return fail(TypeError("builders must be a list of (name, builddir) pairs of str"))
        for n, (name, builddir) in enumerate(pairs):
            if not isinstance(name, str) or not isinstance(builddir, str):
                return fail(TypeError(
                    f"builders[{n}] must be a (name, builddir) pair of str, not ({name!r}, {builddir!r})"))
        return self._call(self.call_set_builder_list, pairs)

    def remoteStartBuild(self, builderName: str) -> Deferred[None]:
        return self._checked_call(self.call_start_build, ("builderName", builderName))

    def remoteStartCommand(
        self,
        remoteCommand: CommandTarget,
        builderName: str,
        commandId: str,
        commandName: str,
        args: dict[str, Any],
    ) -> Deferred[None]:
        if self._lost is not None:
            return fail(self._lost)
        try:
            for where, value in (("builderName", builderName), ("commandId", commandId),
                                 ("commandName", commandName)):
                if not isinstance(value, str):
                    raise TypeError(f"{where} must be a str, not {type(value).__name__}")
            if not isinstance(args, dict):
                raise TypeError(f"args must be a dict, not {type(args).__name__}")
            args, handles = split_handles(args)
            check_value(args, "args")
        except Exception as e:
            return fail(e)
        if builderName in self._busy_builders:
            return fail(BuilderBusy(
                f"builder {builderName!r} on worker {self.workerName!r} is running command "
                f"{self._busy_builders[builderName]!r}; one command runs per builder at a time"
            ))
        if commandId in self._commands:
            return fail(DuplicateCommandId(f"command id {commandId!r} is already running on {self.workerName!r}"))
        cmd = _Command(builderName, commandId, remoteCommand)
        self._commands[commandId] = cmd
        self._busy_builders[builderName] = commandId
        if handles:
            for key, (handle_id, kind) in self.transfer_handles.register(commandId, handles).items():
                args[key] = HandleRef(handle_id, kind)

        def accepted(result: object) -> None:
            cmd.accepted = True
            if cmd.pending_complete and self._commands.get(commandId) is cmd:
                self._clock.callLater(0, self._finish, cmd)
            return None

        def refused(failure: Failure) -> Failure:
            if self._commands.get(commandId) is cmd:
                del self._commands[commandId]
                self._busy_builders.pop(builderName, None)
                self.transfer_handles.release_command(commandId)
            return failure

        d = self._call(self.call_start_command, builderName, commandId, commandName, args)
        d.addCallbacks(accepted, refused)
        return d

    def remoteInterruptCommand(self, builderName: str, commandId: str, why: str) -> Deferred[None]:
        if self._lost is not None:
            return fail(self._lost)
        cmd = self._commands.get(commandId)
        if cmd is None or cmd.pending_complete:
            return succeed(None)  # finished or never existed: races are normal
        return self._checked_call(
            self.call_interrupt_command, ("builderName", builderName),
            ("commandId", commandId), ("why", str(why)),
        )

    def remoteShutdown(self) -> Deferred[None]:
        if self._lost is not None:
            return fail(self._lost)
        d = self._call(self.call_shutdown)

        def closed(failure: Failure) -> None | Failure:
            if failure.check(ConnectionLost):
                return None  # the link closed because of the shutdown
            return failure

        d.addErrback(closed)
        return d

    # -- helpers ------------------------------------------------------------

    def _checked_call(self, fn: Callable[..., Deferred[Any]], *named: tuple[str, Any]) -> Deferred[Any]:
        try:
            for where, value in named:
                check_value(value, where)
        except Exception as e:
            return fail(e)
        return self._call(fn, *[value for _, value in named])

    def _call(self, fn: Callable[..., Deferred[Any]], *args: Any) -> Deferred[Any]:
        """Run a backend primitive so that it fails with ConnectionLost rather
        than hang when the link goes, and fails only with core errors."""
        if self._lost is not None:
            return fail(self._lost)
        key = self._next_call
        self._next_call = key + 1
        out: Deferred[Any] = Deferred()
        self._pending[key] = out
        try:
            d = fn(*args)
        except BaseException:
            d = fail()
        d.addCallbacks(self._call_done, self._call_failed, callbackArgs=(key,), errbackArgs=(key,))
        return out

    def _call_done(self, result: object, key: int) -> None:
        out = self._pending.pop(key, None)
        if out is not None:  # else already failed by the disconnect
            out.callback(result)

    def _call_failed(self, failure: Failure, key: int) -> None:
        if key in self._pending:  # else already failed by the disconnect
            self._call_settle(self.translate_failure(failure), key, False)

    def _call_settle(self, failure: Failure, key: int, late: bool) -> None:
        if key not in self._pending:
            return
        if failure.check(ConnectionLost) and self._lost is None and not late:
            # A backend fails its outstanding calls as the link goes, and
            # reports the loss just after: hold this failure for a turn, so
            # whoever sees it finds the connection lost already.
            self._clock.callLater(0, self._call_settle, failure, key, True)
            return
        out = self._pending.pop(key)
        if failure.check(ConnectionLost) and self._lost is not None:
            failure = Failure(self._lost)
        out.errback(failure)

    def _finish(self, cmd: _Command) -> None:
        if self._commands.get(cmd.commandId) is not cmd:
            return
        del self._commands[cmd.commandId]
        if self._busy_builders.get(cmd.builderName) == cmd.commandId:
            del self._busy_builders[cmd.builderName]
        self.transfer_handles.release_command(cmd.commandId)
        self._deliver_complete(cmd, cmd.pending_complete[0])

    def _deliver_complete(self, cmd: _Command, error: WorkerwireError | None) -> None:
        try:
            cmd.target.remote_complete(None if error is None else Failure(error))
        except Exception:
            _log.failure(
                "remote_complete of command {cid} on {worker} raised", cid=cmd.commandId, worker=self.workerName
            )

    def __repr__(self) -> str:
        state = "connected" if self._lost is None else "lost"
        return f"<{type(self).__name__} {self.workerName!r} via {self.backendName} at {self.get_peer()} {state}>"
