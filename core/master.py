"""The master-side contract: what a master sees of its workers.

A master holds one :class:`Listener` per backend in use; the listener opens the
ports its :class:`Registration` objects ask for and turns each successful
worker login into a :class:`Connection`.  A master never sees a protocol
object and never catches a backend's native exception: every failure is one of
:mod:`workerwire.errors`.

Method names follow Buildbot's ``buildbot.worker.protocols.base`` so that a
Buildbot-style master can use a workerwire connection where it used its own.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Protocol, runtime_checkable

from twisted.internet.defer import Deferred

__all__ = [
    "MasterHooks",
    "CommandTarget",
    "Subscription",
    "Registration",
    "Listener",
    "Connection",
    "Update",
]

#: One update of a running command: ``(key, value)``, e.g. ``("stdout", "hi\n")``.
Update = tuple[str, Any]


@runtime_checkable
class MasterHooks(Protocol):
    """What a :class:`Listener` needs from the master that owns it."""

    def newConnection(self, conn: "Connection", workerName: str) -> Deferred[None] | None:
        """Offer a freshly logged-in worker's connection to the master.

        Return (or fire) normally to accept it.  Raise (or errback with)
        :class:`~workerwire.errors.DuplicateWorker` or
        :class:`~workerwire.errors.LoginRefused` to refuse: the worker's login
        then fails with that reason and the connection is closed.
        """

    def workerShutdownRequested(self, conn: "Connection") -> None:
        """The worker asked to be shut down gracefully (it sent ``shutdown``)."""


@runtime_checkable
class CommandTarget(Protocol):
    """The master-side target of one running command (Buildbot's ``RemoteCommand``)."""

    def remote_update(self, updates: list[Update]) -> object:
        """Receive the next updates of the command, in the order the worker made them.

        A backend may hand over any number of updates per call; the
        concatenation of all calls is exactly the sequence the worker sent.
        """

    def remote_complete(self, failure: Any = None) -> object:
        """The command ended; called exactly once, after every update.

        :param failure: ``None`` on success; otherwise a
            :class:`twisted.python.failure.Failure` whose value is a core error:
            :class:`~workerwire.errors.RemoteCallFailed` (the worker's error
            type and message) or :class:`~workerwire.errors.ConnectionLost`.
        """


class Subscription(abc.ABC):
    """A handle on a callback registration."""

    __slots__ = ()  # lets a handle kept per connection have no dict (subclasses may still have one)

    @abc.abstractmethod
    def unsubscribe(self) -> None:
        """Stop the callback from being called; calling this twice is harmless."""


class Registration(abc.ABC):
    """One worker's credentials on one port of a :class:`Listener`."""

    @abc.abstractmethod
    def unregister(self) -> Deferred[None]:
        """Remove the credentials; the port closes when its last registration goes.

        Existing connections of the worker are not closed by this.
        """

    @abc.abstractmethod
    def getPort(self) -> int | str:
        """The bound port (the real number when the port string asked for 0)."""

    @abc.abstractmethod
    def getAddress(self) -> str:
        """A client address string a worker connector of the same backend can dial."""


class Listener(abc.ABC):
    """Spawns :class:`Connection` objects for the workers registered with it."""

    @abc.abstractmethod
    def updateRegistration(
        self, username: str, password: str | None, portStr: str | None
    ) -> Deferred[Registration | None]:
        """Register, re-register or unregister a worker's credentials.

        * Unchanged password and port: the same :class:`Registration` object.
        * Changed password or port: the old registration is replaced.
        * ``portStr`` is ``None`` or ``password`` is empty: the worker is
          unregistered and the result is ``None``.

        Many workers share one port string; the port opens with its first
        registration and closes with its last.

        :raises AddressError: ``portStr`` is not valid for this backend, or the
            port cannot be opened (in use); the message says which.
        :raises RegistrationError: the same worker is already registered on
            that port through another registration.
        """

    @abc.abstractmethod
    def getRegistration(self, username: str) -> Registration | None:
        """The worker's current registration, if any."""

    @abc.abstractmethod
    def connections(self) -> list["Connection"]:
        """The connections currently attached through this listener."""

    @abc.abstractmethod
    def stopListening(self) -> Deferred[None]:
        """Unregister everyone, close every port and every connection."""


class Connection(abc.ABC):
    """One connected worker, whatever carries it.

    Every ``remote*`` method returns a Deferred.  After the link is gone, or
    when it goes while a call is pending, the Deferred fails with
    :class:`~workerwire.errors.ConnectionLost`; it never hangs.
    """

    workerName: str
    backendName: str
    keepalive_interval: float | None
    keepalive_timeout: float

    @abc.abstractmethod
    def notifyOnDisconnect(self, callback: Callable[[], object]) -> Subscription:
        """Call *callback* once when the link is gone (immediately if it already is)."""

    @abc.abstractmethod
    def loseConnection(self, abort: bool = False) -> None:
        """Close the link; both ends then observe a normal disconnect.

        With *abort*, the link is dropped without waiting for the peer (for a
        peer believed dead) and this end's disconnect duties run at once.
        """

    @abc.abstractmethod
    def attached(self, mind: object) -> "Connection":
        """The master accepted the connection; start keepalive.  Returns self."""

    @abc.abstractmethod
    def detached(self, mind: object) -> None:
        """The link is gone: stop keepalive, notify disconnect subscribers once."""

    @abc.abstractmethod
    def get_peer(self) -> str:
        """``"host:port"`` for network backends (``"[v6 address]:port"`` for
        IPv6, ``"unix:PATH"`` for UNIX sockets); a stable description otherwise."""

    @property
    @abc.abstractmethod
    def isConnected(self) -> bool:
        """True until the link is lost."""

    # keepalive
    @abc.abstractmethod
    def startKeepaliveTimer(self) -> None:
        """Ping the worker every ``keepalive_interval`` seconds.

        A worker that sends nothing for ``keepalive_timeout`` seconds after a
        ping is declared dead and disconnected.
        """

    @abc.abstractmethod
    def stopKeepaliveTimer(self) -> None:
        """Stop pinging (and stop dead-peer detection)."""

    @abc.abstractmethod
    def doKeepalive(self) -> Deferred[None]:
        """Ping the worker now; fires when it answered."""

    # calls to the worker
    @abc.abstractmethod
    def remotePrint(self, message: str) -> Deferred[None]:
        """Have the worker log *message*."""

    @abc.abstractmethod
    def remoteGetWorkerInfo(self) -> Deferred[dict[str, Any]]:
        """The worker's description: a dict with at least ``version``,
        ``worker_commands`` (name to version), ``basedir``, ``system``, ``host``,
        ``admin``, ``access_uri``, ``environ`` (dict) and ``numcpus``."""

    @abc.abstractmethod
    def remoteSetBuilderList(self, builders: list[tuple[str, str]]) -> Deferred[list[str]]:
        """Replace the worker's builders with ``[(name, builddir), ...]``.

        Fires with the names of the builders now present.
        """

    @abc.abstractmethod
    def remoteStartBuild(self, builderName: str) -> Deferred[None]:
        """Tell the builder a build begins.

        :raises UnknownBuilder:
        """

    @abc.abstractmethod
    def remoteStartCommand(
        self,
        remoteCommand: CommandTarget,
        builderName: str,
        commandId: str,
        commandName: str,
        args: dict[str, Any],
    ) -> Deferred[None]:
        """Start a command on the worker; fires when the worker accepted it.

        Its updates then reach ``remoteCommand.remote_update`` in order and its
        end reaches ``remoteCommand.remote_complete`` exactly once.  If the
        start fails, ``remote_complete`` is never called.

        File transfer: ``args['writer']`` may be a
        :class:`~workerwire.transfer.FileWriter` and ``args['reader']`` a
        :class:`~workerwire.transfer.FileReader` (or Buildbot-style objects
        with ``remote_write`` / ``remote_read``...); the worker calls them back
        over this connection until the command completes (see
        :mod:`workerwire.transfer` for order, lifetime, errors and window).

        :raises UnknownBuilder: no such builder on the worker.
        :raises UnknownCommand: the worker does not offer *commandName*.
        :raises BuilderBusy: a command is already running on *builderName*.
        :raises DuplicateCommandId: *commandId* is already running here.
        :raises UnsupportedValue: *args* holds a value no backend can carry
            (a handle anywhere but ``args['writer']`` / ``args['reader']``
            included).
        """

    @abc.abstractmethod
    def remoteInterruptCommand(self, builderName: str, commandId: str, why: str) -> Deferred[None]:
        """Ask a running command to stop; it then ends with its ``rc`` and a
        header saying *why*.  Interrupting a command that already finished, or
        never existed, succeeds and does nothing."""

    @abc.abstractmethod
    def remoteShutdown(self) -> Deferred[None]:
        """Ask the worker process to stop; fires when the worker acknowledged
        it or the link closed because of it."""
