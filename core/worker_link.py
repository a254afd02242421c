"""A stream backend's worker end: one login attempt that becomes the session.

Every network backend's worker keeps, per connection, the same things around
its wire: a :class:`~workerwire.flow.SendWindow` for the commands' output, a
:class:`~workerwire.transfer.TransferLink` for their file transfer calls,
whether the login succeeded, and -- when the connection goes -- which event
that is (``session_lost`` once logged in, ``lost_during_login`` before).  It
serves the master's calls to the bot the same way too (builder lists
checked, a command's channel registered before the bot sees the command and
forgotten when the bot refuses it: ``WorkerSession.start_command`` and
``set_builder_list``).  :class:`WorkerLink` is all of that, on
:class:`~workerwire.base_worker.WorkerSession`'s bookkeeping (its channels,
``logged_in``, ``lost`` and ``forget_channel``, which a channel calls when it
completes); a backend subclasses it and writes its wire (``build_factory``, ``connected``,
``keepalive``, ``request_shutdown``, ``close`` -- which is also the attempt's
``drop`` --, and ``send_transfer`` if it carries transfer handles).  ``pb`` and the reference
backend (``examples/jsonlines``) are built on it.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from .base_worker import BaseCommandChannel, BaseWorkerConnector, LoginAttempt, WorkerSession, builder_pairs
from .errors import ConnectionLost, LoginRefused, ProtocolError, RemoteCallFailed, UnsupportedValue, WorkerwireError
from .flow import DEFAULT_BATCH, SendWindow
from .transfer import CarriedHandles, TransferLink

__all__ = ["WorkerLink", "builder_pairs"]


class WorkerLink(LoginAttempt, WorkerSession):
    """One dial-and-login of a worker; once logged in, the session itself.

    :param translate: turns a native failure of a send into a core one (for
        the output window; a backend whose sends fail with core errors only
        leaves it out).
    :param window: the output window's size (default ``LinkOptions.output_window``).
    :param batch_limit: the most bytes of updates merged into one send.
    :ivar window: the output window (``LinkOptions.output_window``) the
        command channels send through.
    :ivar transfers: the transfer calls of this link's proxies, under the
        same window size; they go out through :meth:`send_transfer`.
    :ivar carried: the :class:`~workerwire.transfer.CarriedHandles` of a
        dialect that carries each handle as an object of its own.
    :ivar logged_in: the login succeeded (see :meth:`login_succeeded`).

    The backend reports the end of its connection with
    :meth:`~workerwire.base_worker.WorkerSession.lost`: the window, the
    transfer calls and the running commands fail with :class:`ConnectionLost`,
    and the connector hears of it as the loss of the session, or of the login
    still under way (:meth:`lost_during_login`).
    """

    def __init__(self, connector: BaseWorkerConnector, translate: Callable[[Failure], Failure] | None = None,
                 window: int | None = None, batch_limit: int = DEFAULT_BATCH):
        super().__init__(connector)  # WorkerSession's bookkeeping too: channels, logged_in
        self.lost_before_login = self.lost_during_login
        #: The *translate* given (None: failures are core errors already).
        self.translate = translate
        size = connector.options.output_window if window is None else window
        self.window = SendWindow(size, clock=self.reactor, batch_limit=batch_limit, translate=translate,
                                 name=f"{connector.backendName} worker")
        self.transfers = TransferLink(self.send_transfer, size)
        #: Handles this link carries as objects of its own (pb's references, a
        #: stock Buildbot master's per-command handles), each tied to its
        #: command and forgotten with it (:meth:`forget_channel`).
        self.carried = CarriedHandles(self.transfers)

    # -- hook -------------------------------------------------------------------

    def send_transfer(self, command_id: str, handle_id: int, method: str, args: list[Any]) -> Deferred[Any]:
        """Carry one transfer call to the master; fail only with core errors.

        The default carries none (a backend that passes no handles to the
        bot never gets here)."""
        return fail(UnsupportedValue(f"the {self.connector.backendName} worker carries no file transfer handles"))

    # -- events the backend reports ----------------------------------------------

    def login_succeeded(self) -> None:
        """The master accepted the login: this link is the session from now on
        (ignored once the attempt ended, e.g. timed out)."""
        if not self.result.called:
            self.logged_in = True
            self.succeeded(self)

    def login_failed(self, failure: Failure | BaseException) -> None:
        """The login call failed: a core error stays what it is; whatever else
        the master answered (Buildbot's ``RuntimeError`` for a duplicate
        worker, ...) becomes a :class:`LoginRefused` naming it."""
        error = failure.value if isinstance(failure, Failure) else failure
        if not isinstance(error, WorkerwireError) or isinstance(error, RemoteCallFailed):
            error = LoginRefused(f"the master refused the login: {error}")
        self.failed(error)

    def forget_channel(self, channel: BaseCommandChannel) -> None:
        """As the session's, and the command's :attr:`carried` handles go with it."""
        self.carried.forget(channel.commandId)
        super().forget_channel(channel)

    def drop(self, abort: bool) -> None:
        """The attempt's connection is the session's: :meth:`close` it (which
        must do nothing while there is no connection yet)."""
        self.close(abort)

    def settled(self, d: Deferred[Any]) -> Deferred[None]:
        """*d*, a call to the master (a keepalive, a shutdown request), with
        its result dropped and its failure translated by :attr:`translate`."""
        return d.addCallbacks(lambda _: None, self.translate or (lambda failure: failure))

    def not_logged_in(self) -> Deferred[None] | None:
        """A failed Deferred for a session call made before the login ended, else ``None``."""
        return None if self.logged_in else fail(ConnectionLost("not logged in"))

