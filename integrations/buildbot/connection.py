"""Buildbot's view of a workerwire connection.

:class:`BuildbotConnection` is a ``buildbot.worker.protocols.base.Connection``
(what Buildbot's ``Worker``, ``WorkerManager`` and ``RemoteCommand`` talk to)
over a :class:`workerwire.Connection` of any backend.  Errors are turned into
what Buildbot reacts to: a lost link is ``twisted.internet.error.ConnectionLost``
(Buildbot then marks the step RETRY, as for a lost pb worker), a failure on the
worker is Buildbot's ``RemoteException`` with the worker's error type and message.
"""

from __future__ import annotations

from typing import Any

from buildbot.pbutil import decode
from buildbot.process.remotecommand import RemoteException
from buildbot.worker.protocols import base
from twisted.internet import error as internet_error
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from workerwire import Connection, Update
from workerwire import errors as ww_errors
from workerwire.transfer import as_handle

__all__ = ["BuildbotConnection", "CommandTargetAdapter", "WorkerLinkLost", "WorkerCallFailed", "translate_failure"]


class WorkerLinkLost(internet_error.ConnectionLost, ww_errors.ConnectionLost):
    """The link to the worker is gone.

    Both Twisted's ``ConnectionLost`` (what Buildbot's build steps check to
    retry a build) and workerwire's core ``ConnectionLost``.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "connection to the worker lost"


class WorkerCallFailed(RemoteException):
    """A call failed on the worker: ``"TypeName: message"`` as Buildbot shows it for pb."""


def translate_failure(failure: Failure) -> Failure:
    """A core error as Buildbot expects it; anything else passes unchanged."""
    value = failure.value
    if isinstance(value, WorkerLinkLost):
        return failure
    if isinstance(value, ww_errors.ConnectionLost):
        return Failure(WorkerLinkLost(str(value)))
    if isinstance(value, ww_errors.RemoteCallFailed):
        text = str(value)
        if value.remote_traceback:
            text = f"{text}\n{value.remote_traceback}"
        return Failure(WorkerCallFailed(text))
    return failure


def _translated(d: Deferred[Any]) -> Deferred[Any]:
    d.addErrback(translate_failure)
    return d


class CommandTargetAdapter:
    """The workerwire :class:`~workerwire.CommandTarget` of one Buildbot ``RemoteCommand``.

    workerwire delivers ``(key, value)`` updates; Buildbot's ``remote_update``
    takes pb's shape, a list of ``({key: value}, number)``.  The numbers
    count the command's updates from 0, as buildbot-worker numbers them.
    """

    def __init__(self, remote_command: Any):
        self.remote_command = remote_command
        self._next_number = 0

    def remote_update(self, updates: list[Update]) -> object:
        batch = []
        for key, value in updates:
            batch.append(({key: value}, self._next_number))
            self._next_number += 1
        if batch:
            return self.remote_command.remote_update(batch)
        return None

    def remote_complete(self, failure: Failure | None = None) -> object:
        return self.remote_command.remote_complete(None if failure is None else translate_failure(failure))


def map_transfer_args(args: dict[str, Any]) -> dict[str, Any]:
    """The command's args with Buildbot's file handles made workerwire handles.

    Buildbot puts a ``FileWriterImpl`` (``writer``, for uploads) or a
    ``FileReaderImpl`` (``reader``, for downloads) in the args of file-transfer
    commands.  This is the one place they are mapped: each becomes a
    :mod:`workerwire.transfer` handle, which core carries to the worker (and
    refuses, with :class:`~workerwire.errors.UnsupportedValue`, under any key
    but the one Buildbot uses) and releases when the command ends.
    """
    handles = [k for k, v in args.items() if isinstance(v, (base.FileWriterImpl, base.FileReaderImpl))]
    if not handles:
        return args
    return {k: (as_handle(v) if k in handles else v) for k, v in args.items()}


class BuildbotConnection(base.Connection):
    """A Buildbot worker connection carried by a workerwire connection."""

    #: Set by Buildbot's WorkerManager from remoteGetWorkerInfo().
    info: Any = None

    def __init__(self, master: Any, worker: Any, link: Connection):
        super().__init__(worker.workername)
        self.master = master
        self.worker = worker
        self.link = link
        link.notifyOnDisconnect(self.notifyDisconnected)

    def __repr__(self) -> str:
        return f"<BuildbotConnection {self.link.workerName!r} over {self.link.backendName} from {self.get_peer()}>"

    @property
    def backendName(self) -> str:
        return self.link.backendName

    @property
    def keepalive_interval(self) -> float | None:
        return self.link.keepalive_interval

    def get_peer(self) -> str:
        return self.link.get_peer()

    def loseConnection(self) -> None:
        self.link.loseConnection()

    # keepalive: workerwire's link runs it (both directions, dead-peer detection)

    def startKeepaliveTimer(self) -> None:
        self.link.startKeepaliveTimer()

    def stopKeepaliveTimer(self) -> None:
        self.link.stopKeepaliveTimer()

    def doKeepalive(self) -> Deferred[None]:
        return _translated(self.link.doKeepalive())

    # calls to the worker

    def remotePrint(self, message: str) -> Deferred[None]:
        return _translated(self.link.remotePrint(message))

    def remoteGetWorkerInfo(self) -> Deferred[dict[str, Any]]:
        return _translated(self.link.remoteGetWorkerInfo()).addCallback(decode)

    def remoteSetBuilderList(self, builders: list[tuple[str, str]]) -> Deferred[list[str]]:
        return _translated(self.link.remoteSetBuilderList([(name, builddir) for name, builddir in builders]))

    def remoteStartCommand(
        self, remoteCommand: Any, builderName: str, commandId: str, commandName: str, args: dict[str, Any]
    ) -> Deferred[None]:
        try:
            wire_args = map_transfer_args(args)
        except ww_errors.WorkerwireError:
            return fail()
        target = CommandTargetAdapter(remoteCommand)
        return _translated(self.link.remoteStartCommand(target, builderName, commandId, commandName, wire_args))

    def remoteInterruptCommand(self, builderName: str, commandId: str, why: str) -> Deferred[None]:
        return _translated(self.link.remoteInterruptCommand(builderName, commandId, str(why)))

    def remoteStartBuild(self, builderName: str) -> Deferred[None]:
        return _translated(self.link.remoteStartBuild(builderName))

    def remoteShutdown(self) -> Deferred[None]:
        # workerwire's remoteShutdown already counts a link that closed because of it as done.
        return _translated(self.link.remoteShutdown())
