"""The worker-side contract: what a worker implementation answers and may send.

A :class:`WorkerBot` is the worker's behaviour (run commands, manage builder
directories); it knows nothing of the wire.  A backend's
:class:`WorkerConnector` dials the master, logs in, hands incoming calls to the
bot and gives each started command a :class:`CommandChannel` through which
the bot streams updates back.
"""

from __future__ import annotations

import abc
from typing import Any, Callable

from twisted.internet.defer import Deferred

from .master import Subscription, Update

__all__ = ["WorkerBot", "CommandChannel", "WorkerConnector"]


class CommandChannel(abc.ABC):
    """The worker's end of one running command (Buildbot's command reference)."""

    commandId: str
    builderName: str

    @abc.abstractmethod
    def update(self, updates: list[Update]) -> Deferred[None]:
        """Send updates, in order.

        Fires when the link can take more: a bot that waits for it before
        producing more output never grows memory without bound.

        :raises ConnectionLost: the link is gone.
        :raises ProtocolError: the command already completed.
        :raises UnsupportedValue: an update value no backend can carry.
        """

    @abc.abstractmethod
    def complete(self, failure: BaseException | None = None) -> Deferred[None]:
        """End the command: ``None`` for success, or the exception that failed it.

        Only the exception's type name and message cross the wire.

        :raises ConnectionLost: the link is gone.
        :raises ProtocolError: the command already completed.
        """


class WorkerBot(abc.ABC):
    """What a worker answers, whichever backend carries the calls.

    Each method may return a value or a Deferred.  Raising
    :class:`~workerwire.errors.UnknownBuilder` or
    :class:`~workerwire.errors.UnknownCommand` reaches the master as that type;
    any other exception reaches it as
    :class:`~workerwire.errors.RemoteCallFailed` with its type name and message.
    """

    @abc.abstractmethod
    def remote_print(self, message: str) -> Any:
        """Log *message* from the master."""

    @abc.abstractmethod
    def remote_getWorkerInfo(self) -> Any:
        """Return the worker-info dict (see ``Connection.remoteGetWorkerInfo``)."""

    @abc.abstractmethod
    def remote_setBuilderList(self, builders: list[tuple[str, str]]) -> Any:
        """Make exactly these builders exist (creating their directories);
        return the list of builder names now present."""

    @abc.abstractmethod
    def remote_startBuild(self, builderName: str) -> Any:
        """A build begins on *builderName*."""

    @abc.abstractmethod
    def remote_startCommand(
        self,
        channel: CommandChannel,
        builderName: str,
        commandId: str,
        commandName: str,
        args: dict[str, Any],
    ) -> Any:
        """Accept (return) or refuse (raise) a command; run it in the background,
        reporting through *channel* and finishing with ``channel.complete``.

        Where the master passed a file transfer handle (``args['writer']``,
        ``args['reader']``), *args* holds a
        :class:`~workerwire.transfer.TransferProxy`: ``callRemote("write",
        data)`` and so on, each a Deferred failing only with core errors;
        usable until the command completes."""

    @abc.abstractmethod
    def remote_interruptCommand(self, builderName: str, commandId: str, why: str) -> Any:
        """Stop a running command promptly; unknown or finished ids are ignored."""

    @abc.abstractmethod
    def remote_shutdown(self) -> Any:
        """The master asks this worker process to stop."""

    def linkEstablished(self) -> None:
        """A link to the master was established (each login, including the first).

        Called before the connector's ``whenConnected`` waiters fire; the
        default does nothing.
        """

    def linkEstablishedTo(self, master: str) -> None:
        """A link to *master* was established: what core's connectors call.

        *master* names the master instance at the other end, as the backend
        knows it: the address the worker dials for backends where one address
        is one master, the master's own name in its pool where several masters
        serve one address (amqp).  Two links with the same *master* are links
        to the same master.  The default calls :meth:`linkEstablished`.
        """
        self.linkEstablished()

    def linkLost(self) -> None:
        """The link to the master is gone (commands' channels are now dead).

        Called once per lost link; the default does nothing.
        """


class WorkerConnector(abc.ABC):
    """Dials a master, logs in, serves a :class:`WorkerBot`, reconnects after loss.

    Constructed by a backend's ``create_connector``; reconnects with capped,
    jittered exponential backoff after any loss, until :meth:`stop`.
    """

    @abc.abstractmethod
    def start(self) -> None:
        """Begin connecting (and reconnecting) in the background."""

    @abc.abstractmethod
    def stop(self) -> Deferred[None]:
        """Stop reconnecting and close the link; fires once it is closed."""

    @abc.abstractmethod
    def whenConnected(self) -> Deferred[None]:
        """Fire when logged in (at once if logged in now).

        :raises LoginRefused: the next login attempt was refused (the connector
            keeps retrying with backoff; the error tells why).
        """

    @abc.abstractmethod
    def probe(self) -> Deferred[None]:
        """Dial and log in once, then close that link; never reconnects.

        For health checks ("can this worker log in?").

        :raises LoginRefused: the master refused the login.
        :raises ConnectionLost: the master could not be reached.
        """

    @abc.abstractmethod
    def notifyOnDisconnect(self, callback: Callable[[], object]) -> Subscription:
        """Call *callback* each time a logged-in link is lost."""

    @property
    @abc.abstractmethod
    def isConnected(self) -> bool:
        """True while logged in."""

    @abc.abstractmethod
    def requestShutdown(self) -> Deferred[None]:
        """Ask the master to shut this worker down gracefully.

        :raises ConnectionLost: not connected.
        """

    @abc.abstractmethod
    def sendKeepalive(self) -> Deferred[None]:
        """Send one keepalive now; fires when the master answered.

        :raises ConnectionLost: not connected.
        """
