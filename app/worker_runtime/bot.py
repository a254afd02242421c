"""The worker's behaviour behind the worker-side contract: builders and commands."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from workerwire import CommandChannel, WorkerBot
from workerwire.errors import UnknownBuilder, UnknownCommand

from ..asyncutil import TimedOut, wait_for
from .base import Command, CommandContext
from .fs import FS_COMMANDS
from .info import worker_info
from .paths import PathPolicy
from .shell import ShellCommand
from .transfer import TRANSFER_COMMANDS

__all__ = ["WorkerRuntime", "COMMANDS", "DEFAULT_LOST_LINK_GRACE"]

_log = Logger()

#: The commands a worker offers, by Buildbot name: the names buildbot-worker 4.3 offers, each at
#: its version (3.3), so a Buildbot master's version checks choose the same code paths.
COMMANDS: dict[str, type[Command]] = {"shell": ShellCommand, **TRANSFER_COMMANDS, **FS_COMMANDS}

#: Seconds a command keeps running after the link to its master is lost.
DEFAULT_LOST_LINK_GRACE = 10.0


class WorkerRuntime(WorkerBot):
    """A real worker: builder directories under *basedir*, and the commands of :data:`COMMANDS`.

    :param basedir: the worker's base directory (created if missing).
    :param allow_absolute_paths: let commands use paths outside *basedir*.
    :param lost_link_grace: seconds running commands go on after the link to
        the master is lost; then they are interrupted, unless the link came
        back first to the same master (their output is lost either way: the
        master has already failed them with ConnectionLost).  A link to
        another master (amqp failover) interrupts them at once: that master
        knows nothing of them.
    :param on_shutdown: called when the master asks this worker to stop.
    """

    def __init__(
        self,
        basedir: str,
        reactor: Any = None,
        allow_absolute_paths: bool = False,
        lost_link_grace: float = DEFAULT_LOST_LINK_GRACE,
        on_shutdown: Callable[[], object] | None = None,
        commands: Mapping[str, type[Command]] | None = None,
    ):
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        from .. import __version__

        self.reactor = reactor
        self.basedir = os.path.abspath(basedir)
        os.makedirs(self.basedir, exist_ok=True)
        self.paths = PathPolicy(self.basedir, allow_absolute_paths)
        self.lost_link_grace = lost_link_grace
        self.on_shutdown = on_shutdown
        self.commands = dict(COMMANDS if commands is None else commands)
        self.version = __version__
        #: builder name -> its directory
        self.builders: dict[str, str] = {}
        self._running: dict[str, Command] = {}
        #: commands whose link was lost, with the timer that will interrupt them
        self._orphans: dict[Command, IDelayedCall | None] = {}
        #: the master of the current link (None: not told, or no link), and of each orphan
        self._link_master: str | None = None
        self._orphan_master: dict[Command, str | None] = {}

    # -- the worker-side contract -----------------------------------------------

    def remote_print(self, message: str) -> None:
        _log.info("message from the master: {message}", message=message)

    def remote_getWorkerInfo(self) -> dict[str, Any]:
        return worker_info(self.basedir, self.version, {name: cls.version for name, cls in self.commands.items()})

    def remote_setBuilderList(self, builders: list[tuple[str, str]]) -> list[str]:
        wanted: dict[str, str] = {}
        for name, builddir in builders:
            if not isinstance(name, str) or not name:
                raise ValueError(f"builder name must be a non-empty string, not {name!r}")
            wanted[name] = self.paths.resolve(builddir, self.basedir, f"builddir of builder {name!r}")
        for name, path in wanted.items():
            os.makedirs(path, exist_ok=True)
        gone = sorted(set(self.builders) - set(wanted))
        self.builders = wanted
        _log.info("builders: {names}{gone}", names=", ".join(sorted(wanted)) or "none",
                  gone=f" (removed: {', '.join(gone)})" if gone else "")
        return sorted(wanted)

    def remote_startBuild(self, builderName: str) -> None:
        self._builder_dir(builderName)

    def remote_startCommand(self, channel: CommandChannel, builderName: str, commandId: str,
                            commandName: str, args: dict[str, Any]) -> None:
        builder_dir = self._builder_dir(builderName)
        cls = self.commands.get(commandName)
        if cls is None:
            raise UnknownCommand(f"this worker has no command {commandName!r}; "
                                 f"valid: {', '.join(sorted(self.commands))}")
        ctx = CommandContext(self.reactor, self.paths, builder_dir, builderName)
        command = cls(ctx, channel, dict(args))  # ValueError / PermissionError refuse the start
        self._running[commandId] = command
        command.finished.addBoth(lambda _: self._forget(commandId, command))
        _log.info("command {cid} ({name}) started on builder {builder}", cid=commandId, name=commandName,
                  builder=builderName)
        try:
            command.start()
        except Exception:
            self._forget(commandId, command)
            raise

    def remote_interruptCommand(self, builderName: str, commandId: str, why: str) -> None:
        command = self._running.get(commandId)
        if command is None or command.ctx.builder_name != builderName:
            return  # finished or never existed: races are normal
        _log.info("interrupting command {cid} on builder {builder}: {why}", cid=commandId, builder=builderName,
                  why=why)
        command.interrupt(why)

    def remote_shutdown(self) -> None:
        _log.info("the master asked this worker to shut down")
        if self.on_shutdown is not None:
            self.reactor.callLater(0, self.on_shutdown)

    def linkEstablishedTo(self, master: str) -> None:
        self._link_master = master
        super().linkEstablishedTo(master)

    def linkEstablished(self) -> None:
        """Orphans of this link's master run to their end; others are interrupted now.

        (Called alone, by a connector that does not say which master: the
        orphans are kept, as if it were the same master.)"""
        self.link_restored(self._link_master)

    def linkLost(self) -> None:
        """Running commands become orphans: interrupted after the grace period
        unless the link comes back first, to the same master."""
        running, self._running = self._running, {}
        for command in running.values():
            call = None
            if self.lost_link_grace >= 0:
                call = self.reactor.callLater(self.lost_link_grace, self._interrupt_orphan, command)
            self._orphans[command] = call
            self._orphan_master[command] = self._link_master
        self._link_master = None
        if running:
            _log.warn("link to the master lost with {n} command(s) running; interrupting them in {t:g} s unless "
                      "it comes back", n=len(running), t=self.lost_link_grace)

    # -- helpers -----------------------------------------------------------------

    def link_restored(self, master: str | None = None) -> None:
        """A link is back, to *master* (None: not known).  Orphans of that
        master may finish on their own; orphans of another master are
        interrupted now (that master already failed them and will not hear of
        them again)."""
        for command, call in list(self._orphans.items()):
            if command not in self._orphan_master:
                continue  # interrupted already
            was = self._orphan_master[command]
            if call is not None and call.active():
                call.cancel()
            self._orphans[command] = None
            if master is None or was is None or was == master:
                if call is not None:
                    _log.info("link is back; command {cid} runs to its end (its output is not sent)",
                              cid=command.command_id)
                continue
            del self._orphan_master[command]
            _log.info("link is back, to master {master} (not {was}, which ran command {cid}): interrupting it",
                      master=master, was=was, cid=command.command_id)
            command.interrupt(f"the link to master {was} was lost; this worker now serves master {master}")

    def _interrupt_orphan(self, command: Command) -> None:
        if command in self._orphans:
            self._orphans[command] = None
            self._orphan_master.pop(command, None)
            command.interrupt(f"the link to the master was lost {self.lost_link_grace:g} s ago")

    def _builder_dir(self, builderName: str) -> str:
        path = self.builders.get(builderName)
        if path is None:
            raise UnknownBuilder(f"this worker has no builder {builderName!r}; builders: "
                                 f"{', '.join(sorted(self.builders)) or 'none (call setBuilderList first)'}")
        return path

    def _forget(self, commandId: str, command: Command) -> None:
        if self._running.get(commandId) is command:
            del self._running[commandId]
        call = self._orphans.pop(command, None)
        self._orphan_master.pop(command, None)
        if call is not None and call.active():
            call.cancel()

    def running(self) -> list[Command]:
        """Every command still running, orphans included."""
        return [*self._running.values(), *self._orphans]

    def interrupt_all(self, why: str, timeout: float = 15.0) -> Deferred[None]:
        """Interrupt every running command; fire when they ended (or after *timeout*)."""
        commands = self.running()
        for command in commands:
            command.interrupt(why)
        done: Deferred[Any] = gatherResults([_ended(c) for c in commands])
        d = wait_for(done, timeout, self.reactor)
        d.addErrback(lambda f: f.trap(TimedOut) and None)
        return d.addCallback(lambda _: None)


def _ended(command: Command) -> Deferred[None]:
    d: Deferred[None] = Deferred()

    def ended(result: object) -> object:
        d.callback(None)
        return result

    command.finished.addBoth(ended)
    return d
