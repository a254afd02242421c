"""Protocol-neutral worker-side behaviour: reconnecting, keepalive, command channels.

A backend's connector subclasses :class:`BaseWorkerConnector` and supplies
:meth:`~BaseWorkerConnector.connect_once`, which dials and logs in and returns
a :class:`WorkerSession`; a backend's command channel subclasses
:class:`BaseCommandChannel`.  Calls from the master reach the bot through
:func:`call_bot`, which also checks what the bot returns.
"""

from __future__ import annotations

import abc
from types import CoroutineType
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorCore
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from .api_compat import CHANNEL_HOOKS, CONNECTOR_EVENTS, CONNECTOR_HOOKS, adopt_legacy_hooks, legacy_event
from .backend import LinkOptions
from .backoff import Backoff
from .errors import ConnectionLost, LoginRefused, ProtocolError, UnknownCommand, WorkerwireError
from .flow import SendWindow
from .keepalive import KeepaliveMonitor
from .link_bytes import LinkBytes
from .master import Subscription, Update
from .subscriptions import SubscriptionList
from .transfer import TransferLink
from .values import check_value, is_value
from .worker import CommandChannel, WorkerBot, WorkerConnector

__all__ = ["BaseWorkerConnector", "BaseCommandChannel", "WorkerSession", "LoginAttempt", "call_bot", "call_bot_now",
           "BOT_METHODS", "builder_pairs"]

_log = Logger()

#: The calls a master may make on a worker, by wire name.
BOT_METHODS = (
    "print",
    "getWorkerInfo",
    "setBuilderList",
    "startBuild",
    "startCommand",
    "interruptCommand",
    "shutdown",
)


def call_bot(bot: WorkerBot, method: str, *args: Any) -> Deferred[Any]:
    """Call ``bot.remote_<method>(*args)``; the result must be a contract value.

    :raises UnknownCommand: *method* is not a worker call.
    """
    try:
        result = call_bot_now(bot, method, *args)
    except BaseException:
        return fail()
    return result if isinstance(result, Deferred) else succeed(result)


def call_bot_now(bot: WorkerBot, method: str, *args: Any) -> Any:
    """:func:`call_bot` for a backend that can answer at once: the checked
    result itself when the bot answered synchronously (its exception raised
    here), else a Deferred of it.

    :raises UnknownCommand: *method* is not a worker call.
    """
    if method not in BOT_METHODS:
        raise UnknownCommand(f"no worker call named {method!r}; valid: {', '.join(BOT_METHODS)}")
    result = getattr(bot, "remote_" + method)(*args)
    if isinstance(result, (Deferred, Failure)) or type(result) is CoroutineType:
        return maybeDeferred(lambda: result).addCallback(_bot_result, method)
    return _bot_result(result, method)


def _bot_result(result: Any, method: str) -> Any:
    if method == "startCommand":
        return None
    check_value(result, f"result of {method}")
    return result


def builder_pairs(wanted: Any) -> list[tuple[str, str]]:
    """The master's ``setBuilderList`` argument as ``[(name, builddir), ...]``.

    :raises ProtocolError: not a list of two-str pairs (lists or tuples).
    """
    if not isinstance(wanted, (list, tuple)) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in wanted
    ):
        raise ProtocolError("setBuilderList expects [(name, builddir), ...] with str names and directories")
    return [(name, builddir) for name, builddir in wanted]


def _names(names: Any) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ProtocolError(f"the bot's setBuilderList must return a list of names, not {names!r}")
    return names


class BaseCommandChannel(CommandChannel):
    """Enforces the channel rules once: nothing after ``complete``, values checked,
    everything fails with ConnectionLost once the link is gone."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        adopt_legacy_hooks(cls, CHANNEL_HOOKS)

    def __init__(self, builderName: str, commandId: str):
        self.builderName = builderName
        self.commandId = commandId
        self.completed = False
        self._lost: ConnectionLost | None = None

    @abc.abstractmethod
    def send_update(self, updates: list[Update]) -> Deferred[None]: ...

    @abc.abstractmethod
    def send_complete(self, failure: BaseException | None) -> Deferred[None]: ...

    def link_lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = ConnectionLost(f"link to the master lost: {reason}")

    def update(self, updates: list[Update]) -> Deferred[None]:
        if self._lost is not None:
            return fail(self._lost)
        if self.completed:
            return fail(ProtocolError(f"command {self.commandId!r} already completed"))
        try:
            if not isinstance(updates, (list, tuple)):
                raise TypeError("updates must be a list of (key, value) pairs")
            batch = []
            for pair in updates:
                key, value = pair
                if not isinstance(key, str):
                    raise TypeError(f"update {len(batch)}: key must be a str, not {type(key).__name__}")
                if not is_value(value):  # no message built per update unless it is needed
                    check_value(value, f"update {key!r}")
                batch.append((key, value))
        except Exception as e:
            return fail(e)
        if not batch:
            return succeed(None)
        return self.send_update(batch)

    def complete(self, failure: BaseException | None = None) -> Deferred[None]:
        if self._lost is not None:
            return fail(self._lost)
        if self.completed:
            return fail(ProtocolError(f"command {self.commandId!r} already completed"))
        self.completed = True
        if isinstance(failure, Failure):
            failure = failure.value
        return self.send_complete(failure)


class WorkerSession(abc.ABC):
    """One logged-in link, as a backend's connector made it.

    Core keeps the session's command bookkeeping: the backend sets
    :attr:`connector`, :attr:`window` and :attr:`transfers` (the session's
    :class:`~workerwire.flow.SendWindow` and
    :class:`~workerwire.transfer.TransferLink`), registers each command it
    starts with :meth:`add_channel` (and :meth:`forget_channel` when the bot
    refused it or the command completed), sets :attr:`logged_in` when the
    login completed, and reports the end of its link with :meth:`lost`.
    :meth:`start_command` and :meth:`set_builder_list` serve those two calls
    of the master's the same way for every backend (the channel registered
    first, the builder list checked).
    """

    #: Where the master is, e.g. ``"127.0.0.1:9989"``.
    peer: str = "?"
    #: Which master instance this link is with, when the address does not say
    #: (several masters behind one address); None: the connector's address names it.
    master: str | None = None
    #: The connector whose session this is (set by the backend).
    connector: "BaseWorkerConnector"
    #: The session's output window and transfer calls (set by the backend):
    #: :meth:`lost` fails what waits in them.
    window: SendWindow
    transfers: TransferLink

    def __init__(self) -> None:
        #: The commands running on this session, by id.
        self.channels: dict[str, BaseCommandChannel] = {}
        #: Set by the backend once the login completed: a loss is then the
        #: connector's (``session_lost``); before, :attr:`lost_before_login`'s.
        self.logged_in = False
        #: Told about a loss that happens before the login completed.
        self.lost_before_login: Callable[[str], None] = lambda reason: None

    def adopt_window(self, window: int, batch_limit: int) -> None:
        """The master announced its window and the largest batch it takes (in
        bytes): updates and transfer calls stay within both from now on."""
        self.window.limit = min(self.window.limit, window)
        self.window.batch_limit = min(self.window.batch_limit, batch_limit)
        self.transfers.window = self.window.limit

    def add_channel(self, channel: BaseCommandChannel) -> None:
        """A command started on this session (before the bot is asked to run it)."""
        self.channels[channel.commandId] = channel
        self.connector._register_channel(channel)

    def forget_channel(self, channel: BaseCommandChannel) -> None:
        """The command completed, or the bot refused it."""
        if self.channels.get(channel.commandId) is channel:
            del self.channels[channel.commandId]
        self.connector._forget_channel(channel)

    def fail_pending(self, reason: str) -> None:
        """The link is gone: fail the window's sends, the transfer calls and the
        running commands' channels."""
        self.window.lost(reason)
        self.transfers.lost(reason)
        channels, self.channels = self.channels, {}
        for channel in channels.values():
            channel.link_lost(reason)

    def lost(self, reason: str) -> None:
        """The backend's link closed: :meth:`fail_pending`, then report it to the
        connector (logged in) or to :attr:`lost_before_login`."""
        self.fail_pending(reason)
        if self.logged_in:
            self.connector.session_lost(self, reason)
        else:
            self.lost_before_login(reason)

    # -- serving the master's calls (every backend the same way) --------------------

    def start_command(self, channel: BaseCommandChannel, commandName: str, args: dict[str, Any],
                      refused: Callable[[], None] | None = None) -> Deferred[Any]:
        """Hand the master's ``startCommand`` to the bot through *channel*.

        The channel is registered first (the link's loss reaches it from then
        on) and forgotten again if the bot refuses the command; *refused* runs
        then too (to drop what the backend kept for the command).  Fires with
        ``None`` once the bot accepted it.
        """
        self.add_channel(channel)
        d = call_bot(self.connector.bot, "startCommand", channel, channel.builderName, channel.commandId,
                     commandName, args)

        def refusal(failure: Failure) -> Failure:
            self.forget_channel(channel)
            if refused is not None:
                refused()
            return failure

        return d.addErrback(refusal)

    def set_builder_list(self, wanted: Any) -> Deferred[list[str]]:
        """Hand the master's ``setBuilderList`` to the bot (checked with
        :func:`builder_pairs`); fires with the names now present."""
        try:
            pairs = builder_pairs(wanted)
        except ProtocolError:
            return fail()
        return call_bot(self.connector.bot, "setBuilderList", pairs).addCallback(_names)

    @abc.abstractmethod
    def keepalive(self) -> Deferred[None]: ...

    @abc.abstractmethod
    def request_shutdown(self) -> Deferred[None]: ...

    @abc.abstractmethod
    def close(self, abort: bool = False) -> None:
        """Close the link; the backend then reports it through ``session_lost``."""


class LoginAttempt(abc.ABC):
    """One dial-and-login of a network backend's worker (backend API 1).

    Core dials ``connector.address`` (:func:`workerwire.endpoints.parse_client_address`;
    ``connector.endpoint`` when the connector parsed it already: ``dials_address``)
    with :meth:`build_factory`, runs the ``LinkOptions.login_timeout`` timer
    from the dial on, and makes :attr:`result` cancellable (a stopped
    connector cancels it).  The backend writes the three hooks and reports
    how the login ended with :meth:`succeeded`, :meth:`failed` or
    :meth:`lost_during_login`; whichever comes first wins, later ones are
    ignored.  ``BaseWorkerConnector.connect_once`` is then
    ``return MyAttempt(self).start()``.
    """

    def __init__(self, connector: "BaseWorkerConnector"):
        super().__init__()  # a WorkerSession too, when the attempt is also the session
        self.connector = connector
        self.reactor: Any = connector.reactor
        #: Where the master is: the address until the transport is up, then its ``host:port``.
        self.peer = connector.address
        #: Fires with the session once logged in; fails with LoginRefused or
        #: ConnectionLost (or the dial's failure).
        self.result: Deferred[WorkerSession] = Deferred(self._cancelled)
        self._timer: IDelayedCall | None = None
        self._dialling: Deferred[Any] | None = None

    # -- hooks ------------------------------------------------------------------

    @abc.abstractmethod
    def build_factory(self) -> Factory[Any]:
        """The protocol factory of this attempt's connection."""

    @abc.abstractmethod
    def connected(self, protocol: Any) -> None:
        """The transport is up (*protocol* is what the factory built): log in."""

    @abc.abstractmethod
    def drop(self, abort: bool) -> None:
        """Close this attempt's connection, if it has one (*abort*: at once)."""

    # -- plumbing ---------------------------------------------------------------

    def start(self) -> Deferred[WorkerSession]:
        """Dial and start the login timer; returns :attr:`result`."""
        from .endpoints import parse_client_address

        c = self.connector
        self._timer = self.reactor.callLater(c.options.login_timeout, self._timed_out)
        try:
            endpoint = c.endpoint or parse_client_address(self.reactor, c.address, c.backendName)
            self._dialling = endpoint.connect(self.build_factory())
        except Exception:
            self.failed(Failure())
            return self.result
        self._dialling.addCallbacks(self._dialled, self._dial_failed)
        return self.result

    def _dialled(self, protocol: Any) -> None:
        self._dialling = None
        if self.result.called:  # timed out or cancelled while dialling
            protocol.transport.abortConnection()
            return
        self.connected(protocol)

    def _dial_failed(self, failure: Failure) -> None:
        self._dialling = None
        self.failed(failure)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._dialling is not None:
            self._dialling.cancel()
        if not self.result.called:
            self.drop(abort=True)
            self.failed(ConnectionLost(f"no login answer from the master at {self.peer} within "
                                       f"{self.connector.options.login_timeout:g} s"))

    def _cancelled(self, d: Deferred[WorkerSession]) -> None:
        self._stop_timer()
        if self._dialling is not None:
            self._dialling.cancel()
        self.drop(abort=True)

    # -- events the backend reports ----------------------------------------------

    def succeeded(self, session: WorkerSession) -> None:
        """Logged in: *session* is the link from now on."""
        self._stop_timer()
        if not self.result.called:
            self.result.callback(session)

    def failed(self, error: BaseException | Failure) -> None:
        """The login failed (a :class:`LoginRefused` for a refusal); the
        connection is closed."""
        self._stop_timer()
        if not self.result.called:
            self.drop(abort=False)
            self.result.errback(error if isinstance(error, Failure) else Failure(error))

    def refused(self, failure: Failure) -> None:
        """The master answered the login with *failure* (a core error already):
        :meth:`failed` with it when it is a :class:`LoginRefused` or a
        :class:`ConnectionLost`, else with a :class:`LoginRefused` saying what
        the master answered."""
        if not failure.check(LoginRefused, ConnectionLost):
            failure = Failure(LoginRefused(f"the master refused the login: {failure.getErrorMessage()}"))
        self.failed(failure)

    def lost_during_login(self, reason: str) -> None:
        """The connection closed before the login ended."""
        self.failed(ConnectionLost(f"link to the master at {self.peer} closed during login: {reason}"))


class BaseWorkerConnector(WorkerConnector):
    """Reconnect loop, login waiters, keepalive and channel bookkeeping."""

    backendName: str = "?"
    #: True for a network backend's connector: *address* is a Twisted client
    #: endpoint string, which core parses when the connector is made (a bad
    #: one raises :class:`~workerwire.errors.AddressError` then, not at the
    #: first attempt) into :attr:`endpoint`; :class:`LoginAttempt` dials it.
    dials_address: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        adopt_legacy_hooks(cls, {**CONNECTOR_HOOKS, **CONNECTOR_EVENTS})

    def __init__(
        self,
        bot: WorkerBot,
        address: str,
        name: str,
        password: str,
        options: LinkOptions | None = None,
        reactor: IReactorCore | None = None,
        backoff: Backoff | None = None,
        backend_name: str | None = None,
    ):
        if backend_name is not None:
            self.backendName = backend_name
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        #: The client endpoint of *address* (see :attr:`dials_address`), else None.
        self.endpoint: Any = None
        if self.dials_address:
            from .endpoints import parse_client_address

            self.endpoint = parse_client_address(reactor, address, self.backendName)
        self.bot = bot
        self.address = address
        self.name = name
        self._password = password
        self.options = options or LinkOptions()
        self.reactor: Any = reactor
        self.backoff = backoff or Backoff()
        self._running = False
        self._session: WorkerSession | None = None
        self._connecting: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._failures = 0
        self._waiters: list[Deferred[None]] = []
        self._stop_waiters: list[Deferred[None]] = []
        self._disconnect_subs = SubscriptionList()
        self._channels: dict[str, BaseCommandChannel] = {}
        self._keepalive: KeepaliveMonitor | None = None
        self._close_timer: IDelayedCall | None = None
        self.connections_made = 0
        self.last_error: BaseException | None = None
        #: Bytes every connection of this connector read and wrote (its
        #: backend's protocols add to it; see :mod:`workerwire.link_bytes`).
        self.link_bytes = LinkBytes()

    @property
    def password(self) -> str:
        return self._password

    # -- backend hook -------------------------------------------------------

    @abc.abstractmethod
    def connect_once(self) -> Deferred[WorkerSession]:
        """Dial and log in once; fire with the session.

        Calls from the master that arrive before the login answer must already
        be served (a PB master attaches before it answers).  Fails with
        :class:`LoginRefused` for a refused login, anything else for a failed
        connection attempt.
        """

    # -- events a backend reports ----------------------------------------

    def on_traffic(self) -> None:
        if self._keepalive is not None:
            self._keepalive.touch()

    def session_lost(self, session: WorkerSession | None, reason: str) -> None:
        """A logged-in session (or the one still logging in) is gone."""
        if session is None or session is not self._session:
            return
        self._session = None
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        if self._keepalive is not None:
            self._keepalive.stop()
            self._keepalive = None
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.link_lost(reason)
        _log.info("worker {name}: link to master at {peer} lost: {reason}", name=self.name, peer=session.peer,
                  reason=reason)
        try:
            self.bot.linkLost()
        except Exception:
            _log.failure("bot.linkLost raised")
        self._disconnect_subs.deliver()
        if self._running:
            # Full jitter: a master restart must not bring every worker back at once.
            self._schedule(self.backoff.delay_after_loss())
        else:
            self._fire_stop_waiters()

    # API 1.0 names of the events (see api_compat).
    _on_traffic = legacy_event("_on_traffic", on_traffic)
    _session_lost = legacy_event("_session_lost", session_lost)

    def _register_channel(self, channel: BaseCommandChannel) -> None:
        self._channels[channel.commandId] = channel

    def _forget_channel(self, channel: BaseCommandChannel) -> None:
        if self._channels.get(channel.commandId) is channel:
            del self._channels[channel.commandId]

    # -- the contract ---------------------------------------------------------

    @property
    def isConnected(self) -> bool:
        return self._session is not None

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._attempt()

    def stop(self) -> Deferred[None]:
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
        if self._session is None:
            self._fail_waiters(ConnectionLost("connector stopped"))
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stop_waiters.append(d)
        session = self._session
        session.close()
        if self._session is session and self._close_timer is None:
            # A dead master never takes what is still queued: bound the close.
            self._close_timer = self.reactor.callLater(self.options.keepalive_timeout, self._close_overdue, session)
        return d

    def _close_overdue(self, session: WorkerSession) -> None:
        self._close_timer = None
        if session is self._session:
            why = f"it did not close within {self.options.keepalive_timeout:g} s (keepalive timeout); dropped"
            _log.warn("worker {name}: link to the master at {peer}: {why}", name=self.name, peer=session.peer,
                      why=why)
            session.close(abort=True)
            self.session_lost(session, why)

    def whenConnected(self) -> Deferred[None]:
        if self._session is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    def notifyOnDisconnect(self, callback: Callable[[], object]) -> Subscription:
        return self._disconnect_subs.subscribe(callback)

    def probe(self) -> Deferred[None]:
        d = maybeDeferred(self.connect_once)

        def logged_in(session: WorkerSession) -> None:
            session.close()

        def failed(failure: Failure) -> Failure:
            if failure.check(WorkerwireError):
                return failure
            return Failure(ConnectionLost(f"cannot reach the master at {self.address}: {failure.getErrorMessage()}"))

        return d.addCallbacks(logged_in, failed)

    def requestShutdown(self) -> Deferred[None]:
        if self._session is None:
            return fail(ConnectionLost("not connected to the master"))
        return self._session.request_shutdown()

    def sendKeepalive(self) -> Deferred[None]:
        if self._session is None:
            return fail(ConnectionLost("not connected to the master"))
        return self._session.keepalive()

    # -- internals ----------------------------------------------------------

    def _next_delay(self) -> float:
        delay = self.backoff.delay(self._failures)
        self._failures += 1
        return delay

    def _schedule(self, delay: float) -> None:
        if self._running and (self._retry is None or not self._retry.active()):
            self._retry = self.reactor.callLater(delay, self._attempt)

    def _attempt(self) -> None:
        self._retry = None
        if not self._running or self._session is not None or self._connecting is not None:
            return
        d = self._connecting = self.connect_once()
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, session: WorkerSession) -> None:
        self._connecting = None
        if not self._running:
            session.close()
            return
        self._session = session
        self._failures = 0
        self.connections_made += 1
        self.last_error = None
        if self.options.keepalive_interval is not None:
            self._keepalive = KeepaliveMonitor(
                self.reactor, self.options.keepalive_interval, self.options.keepalive_timeout,
                session.keepalive, lambda why: self._dead(session, why),
            )
            self._keepalive.start()
        _log.info("worker {name}: connected to master at {peer} over {backend}", name=self.name,
                  peer=session.peer, backend=self.backendName)
        try:
            established_to = getattr(self.bot, "linkEstablishedTo", None)
            if established_to is not None:
                established_to(session.master or self.address)
            else:  # a bot written before linkEstablishedTo
                self.bot.linkEstablished()
        except Exception:
            _log.failure("bot.linkEstablished raised")
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.callback(None)

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        self.last_error = failure.value
        # Commands the master started while this login was pending die with it.
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.link_lost(f"login failed: {failure.getErrorMessage()}")
        if channels:
            try:
                self.bot.linkLost()
            except Exception:
                _log.failure("bot.linkLost raised")
        if not self._running:
            self._fail_waiters(ConnectionLost("connector stopped"))
            self._fire_stop_waiters()
            return
        delay = self._next_delay()
        if failure.check(LoginRefused):
            _log.warn("worker {name}: login refused by {address}: {why}; retrying in {delay:.1f} s",
                      name=self.name, address=self.address, why=failure.value, delay=delay)
            self._fail_waiters(failure)
        else:
            _log.info("worker {name}: cannot reach master at {address} ({why}); retrying in {delay:.1f} s",
                      name=self.name, address=self.address, why=failure.getErrorMessage(), delay=delay)
        self._schedule(delay)

    def _dead(self, session: WorkerSession, why: str) -> None:
        _log.warn("worker {name}: master at {peer} declared dead: {why}", name=self.name, peer=session.peer, why=why)
        session.close(abort=True)
        self.session_lost(session, f"declared dead: {why}")

    def _fail_waiters(self, error: BaseException | Failure) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.errback(error if isinstance(error, Failure) else Failure(error))

    def _fire_stop_waiters(self) -> None:
        waiters, self._stop_waiters = self._stop_waiters, []
        for w in waiters:
            w.callback(None)


def wire_error(exc: BaseException | Failure | None) -> WorkerwireError | None:
    """Normalize what a worker reports as a command failure into a core error."""
    from .errors import error_from_wire, error_to_wire

    if exc is None:
        return None
    if isinstance(exc, Failure):
        exc = exc.value
        if exc is None:
            return None
    return error_from_wire(*error_to_wire(exc))
