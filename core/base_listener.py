"""Protocol-neutral listener behaviour: registrations, shared ports, logins.

:class:`BaseListener` implements :class:`~workerwire.master.Listener`; a
backend supplies how to open and close one port (:meth:`BaseListener._open_port`)
and builds connections.  Each open port has a :class:`WorkerCredentials`
checker (``twisted.cred``) over the workers registered on it, and all logins
end in :meth:`BaseListener.attach`, which offers the connection to the master.
Connections that have not logged in are the business of the listener's
:attr:`~BaseListener.login_guard` (:mod:`workerwire.login_guard`), which the
backend calls on accept, on input, on the credentials and at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, TypeVar

from twisted.cred import credentials
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, ensureDeferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorCore
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from .addresses import bound_port_of, client_address_for
from .backend import LinkOptions
from .base_connection import BaseConnection
from .credentials import IWorkerName, WorkerRealm
from .endpoints import parse_server_port
from .errors import AddressError, LoginRefused, RegistrationError, WorkerwireError
from .link_bytes import LinkTotals
from .login_guard import GENERIC_REFUSAL, BadCredentials, LoginGuard, LoginTicket, refusal_reason
from .master import Connection, Listener, MasterHooks, Registration
from .tls import dial_address

__all__ = ["BaseListener", "OpenPort", "WorkerCredentials"]

_log = Logger()

_Conn = TypeVar("_Conn", bound=BaseConnection)


@implementer(ICredentialsChecker)
class WorkerCredentials:
    """Checks worker logins against the registrations of one port.

    Accepts plain (``IUsernamePassword``) and challenge-response
    (``IUsernameHashedPassword``, as PB uses) credentials.  The avatar id is
    the worker name as ``bytes``.  Failures never reveal which part was wrong
    to the peer: a refusal is a :class:`~workerwire.login_guard.BadCredentials`
    whose ``reason`` says which, without any password, for the backend to
    hand to its :class:`~workerwire.login_guard.LoginTicket` (which logs it,
    rate-limited, with the peer's address).
    """

    credentialInterfaces = (credentials.IUsernamePassword, credentials.IUsernameHashedPassword)

    def __init__(self, users: dict[str, str], port_str: str):
        self._users = users
        self._port_str = port_str

    def requestAvatarId(self, creds: Any) -> Deferred[Any]:
        raw = creds.username
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        password = self._users.get(name)
        if password is None:
            return _refused(f"unknown worker {name!r} on {self._port_str}")
        d = maybeDeferred(creds.checkPassword, password.encode("utf-8"))

        def checked(ok: bool) -> Any:
            if ok:
                return name.encode("utf-8")
            return _refused(f"wrong password for worker {name!r} on {self._port_str}")

        return d.addCallback(checked)


def _refused(reason: str) -> Deferred[Any]:
    return fail(BadCredentials(reason))


@dataclass
class OpenPort:
    """One listening port shared by every registration on the same port string."""

    port_str: str
    users: dict[str, str] = field(default_factory=dict)
    listening: Any = None  # backend's handle; see BaseListener._open_port
    port: int | str = 0
    address: str = ""
    opening: Deferred[None] | None = None
    factory: Any = None  # the protocol factory BaseListener.listen listens with
    logging_in: set[LoginTicket] = field(default_factory=set)  # see BaseListener.admit

    @property
    def checker(self) -> WorkerCredentials:
        return WorkerCredentials(self.users, self.port_str)

    @property
    def portal(self) -> Portal:
        """A ``twisted.cred`` portal over :attr:`checker` and the :class:`WorkerRealm`."""
        return Portal(WorkerRealm(), [self.checker])


class _Registration(Registration):
    def __init__(self, listener: "BaseListener", username: str, password: str, entry: OpenPort):
        self._listener = listener
        self.username = username
        self.password = password
        self._entry = entry

    def unregister(self) -> Deferred[None]:
        return ensureDeferred(self._listener._unregister(self))

    def getPort(self) -> int | str:
        return self._entry.port

    def getAddress(self) -> str:
        return self._entry.address

    @property
    def portStr(self) -> str:
        return self._entry.port_str

    def __repr__(self) -> str:
        return f"<Registration {self.username!r} on {self._entry.port_str!r} (port {self._entry.port})>"


class BaseListener(Listener):
    """Base of every backend's listener.

    :param backend_name: the name the backend is registered under (its
        ``Backend.name``); defaults to the class's :attr:`backendName`.  A
        backend passes its own name, so that a backend wrapping another one
        (or the same class under another entry point) is told apart.
    """

    backendName: str = "?"

    def __init__(self, master: MasterHooks, options: LinkOptions | None, reactor: IReactorCore | None,
                 backend_name: str | None = None):
        if backend_name is not None:
            self.backendName = backend_name
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.master = master
        self.options = options or LinkOptions()
        self.reactor: Any = reactor
        self._registrations: dict[str, _Registration] = {}
        self._ports: dict[str, OpenPort] = {}
        self._connections: set[BaseConnection] = set()
        #: Login timeout, caps and failed-login delays of this listener's ports.
        self.login_guard = LoginGuard(self.options, self.reactor, self.backendName)
        #: Bytes read and written by this listener's connections, logged in or
        #: not (its backend's protocols open a counter each; see
        #: :mod:`workerwire.link_bytes`).
        self.link_totals = LinkTotals()
        cls = type(self)
        if cls.build_factory is BaseListener.build_factory and cls._open_port is BaseListener._open_port:
            raise TypeError(f"{cls.__name__} must implement build_factory(entry) (backend API 1), "
                            "or _open_port(entry) (API 0, deprecated)")

    # -- backend hooks ------------------------------------------------------

    def build_factory(self, entry: OpenPort) -> Factory:
        """The protocol factory of one port (backend API 1: the hook a network
        backend implements).  Core listens with it on ``entry.port_str``
        (:meth:`listen`), behind the :attr:`login_guard`; its protocols check
        logins with :meth:`check_login` and end them in :meth:`attach`."""
        raise NotImplementedError(f"{type(self).__name__}.build_factory")

    def _open_port(self, entry: OpenPort) -> Deferred[None]:
        """Start listening on ``entry.port_str``: by default :meth:`listen` with
        :meth:`build_factory`.  (API 0 backends override this instead; they
        set ``entry.listening``, ``entry.port`` and ``entry.address``.)

        :raises AddressError: bad port string or port in use.
        """
        return ensureDeferred(self.listen(entry, self.build_factory(entry)))

    def _close_port(self, entry: OpenPort) -> Deferred[None]:
        """Stop listening on a port opened by :meth:`_open_port` (by default,
        the listening port :meth:`listen` stored in ``entry.listening``), and
        close its connections that have not logged in (see :meth:`admit`)."""
        for ticket in list(entry.logging_in):
            if not ticket.is_verified:
                ticket.done()
                ticket.close()
        port = entry.listening
        if port is None or not hasattr(port, "stopListening"):
            return succeed(None)
        return maybeDeferred(port.stopListening).addBoth(lambda _: None)

    def _check_port_str(self, portStr: str) -> None:
        """Raise :class:`AddressError` for a port string this backend rejects
        (by default: not a server endpoint string, see
        :func:`workerwire.endpoints.parse_server_port`)."""
        parse_server_port(self.reactor, portStr, self.backendName)

    # -- plumbing core owns ---------------------------------------------------

    async def listen(self, entry: OpenPort, factory: Factory) -> None:
        """Listen on ``entry.port_str`` with *factory*, behind the login guard;
        set ``entry.listening`` (the listening port), ``entry.port``
        (:func:`~workerwire.addresses.bound_port_of`) and ``entry.address``
        (what a worker dials, ``tls:`` for a TLS port).

        :raises AddressError: not a server endpoint string, or the port cannot
            be opened (in use, not permitted); the message names the backend,
            the port string and the reason.
        """
        endpoint = parse_server_port(self.reactor, entry.port_str, self.backendName)
        try:
            port = await endpoint.listen(self.login_guard.guarded(factory))
        except Exception as e:
            why = getattr(e, "socketError", None) or e
            raise AddressError(f"cannot listen on {self.backendName} port {entry.port_str!r}: {why}") from None
        entry.listening = port
        entry.factory = factory
        host = port.getHost()
        entry.port = bound_port_of(host)  # a UNIX socket's path, not its address object
        entry.address = dial_address(entry.port_str, client_address_for(host))  # tls:host=... for a TLS port
        _log.info("{backend} listening on {port} (workers dial {address})", backend=self.backendName,
                  port=entry.port_str, address=entry.address)

    def admit(self, entry: OpenPort, addr: Any, close: Callable[[], None]) -> LoginTicket | None:
        """Call it in the port factory's ``buildProtocol``: the
        :attr:`login_guard`'s ticket for a connection from *addr* on *entry*'s
        port (its login timer, input limit and refusal delays), or ``None``
        when the connection is over a cap (build ``CloseAtOnce()`` then).
        *close* drops the connection; core calls it on the login timeout, and
        when the port closes before the connection logged in.  Call
        ``ticket.done()`` when the login finished or the connection is gone."""
        ticket = self.login_guard.admit(addr, close)
        if ticket is not None:
            entry.logging_in.add(ticket)
            ticket.on_done = lambda: entry.logging_in.discard(ticket)
        return ticket

    async def check_login(self, entry: OpenPort, ticket: LoginTicket | None, creds: Any) -> str:
        """The master's login sequence, the same for every backend; returns the
        worker's name.  In order: the :attr:`login_guard` may refuse to check
        at all (a host over its failed-login budget: ``ticket.throttled``); the
        credentials (plain ``UsernamePassword``, :class:`~workerwire.
        credentials.ChallengeResponse` or any ``IUsernameHashedPassword``) are
        checked through ``twisted.cred`` with ``entry.portal``; a refusal
        waits the guard's delay (``ticket.refused``, which logs it without any
        password) before this raises; good credentials are
        ``ticket.verified()``.  The backend then builds its connection and
        awaits :meth:`attach` before answering the login.

        :raises LoginRefused: with :data:`~workerwire.login_guard.GENERIC_REFUSAL`
            (the peer learns nothing about which part was wrong); the backend
            answers the login with it and closes the connection.
        """
        raw = getattr(creds, "username", b"?")
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if ticket is not None and not ticket.may_check():
            ticket.throttled(name)
            raise LoginRefused(GENERIC_REFUSAL)
        try:
            _, avatar, _ = await entry.portal.login(creds, None, IWorkerName)
        except UnauthorizedLogin as e:
            if ticket is not None:
                await ticket.refused(name, refusal_reason(e))  # logs it, and says when to answer
            else:
                _log.warn("{backend}: login of {name!r} refused: {why}", backend=self.backendName, name=name,
                          why=refusal_reason(e))
            raise LoginRefused(GENERIC_REFUSAL) from None
        except Exception:
            _log.failure("{backend}: checking the login of {name!r} failed", backend=self.backendName, name=name)
            raise LoginRefused(GENERIC_REFUSAL) from None
        if ticket is not None:
            ticket.verified()
        return str(avatar)

    async def log_in(self, entry: OpenPort, ticket: LoginTicket | None, creds: Any,
                     connect: Callable[[str], _Conn | Awaitable[_Conn]], close: Callable[[], None],
                     mind: object = None) -> _Conn:
        """One connection's whole login, the same for every backend:
        :meth:`check_login`, then ``connect(name)`` -- the backend builds its
        :class:`BaseConnection` (it may return an awaitable of it, and raise
        :class:`LoginRefused` to refuse) -- then :meth:`attach` with *mind*.
        The ticket is done however it ended.  Await it before answering the
        login; the result is the attached connection.

        :raises LoginRefused: a refusal (what ``connect`` raises is logged
            and raised as it is); *close* is then called on the next reactor
            turn, after the backend answered the login with it.
        """
        try:
            name = await self.check_login(entry, ticket, creds)
            try:
                made = connect(name)
                conn = made if isinstance(made, BaseConnection) else await made
            except Exception as e:
                _log.info("{backend} login of {name!r} from {peer} refused: {why}", backend=self.backendName,
                          name=name, peer=ticket.peer if ticket is not None else "?", why=e)
                raise
            await self.attach(conn, mind)  # logs the master's refusals
            return conn
        except BaseException:
            self.reactor.callLater(0, close)  # the refusal is answered first
            raise
        finally:
            if ticket is not None:
                ticket.done()

    # -- registrations ------------------------------------------------------

    def updateRegistration(
        self, username: str, password: str | None, portStr: str | None
    ) -> Deferred[Registration | None]:
        return ensureDeferred(self._update(username, password, portStr))

    async def _update(self, username: str, password: str | None, portStr: str | None) -> Registration | None:
        if not isinstance(username, str) or not username:
            raise RegistrationError("worker name must be a non-empty str")
        old = self._registrations.get(username)
        if portStr is None or not password:
            if old is not None:
                await self._unregister(old)
            return None
        if old is not None and old.password == password and old.portStr == portStr:
            return old
        if old is not None and old.portStr == portStr:
            # A new password on the same port: swap it in place; the port stays open.
            old._entry.users[username] = password
            reg = _Registration(self, username, password, old._entry)
            self._registrations[username] = reg
            return reg
        self._check_port_str(portStr)
        entry = await self._share_or_open(portStr)
        if old is not None:
            # Only now that the new port is open: a failed move keeps the old registration.
            await self._unregister(old)
        if username in entry.users:
            raise RegistrationError(f"worker {username!r} is already registered on {portStr!r}")
        entry.users[username] = password
        reg = _Registration(self, username, password, entry)
        self._registrations[username] = reg
        return reg

    async def _share_or_open(self, portStr: str) -> OpenPort:
        entry = self._ports.get(portStr)
        if entry is None:
            entry = OpenPort(portStr)
            self._ports[portStr] = entry
            entry.opening = Deferred()
            try:
                await self._open_port(entry)
            except Exception as e:
                del self._ports[portStr]
                entry.opening.callback(None)
                if isinstance(e, WorkerwireError):
                    raise
                raise AddressError(f"cannot listen on {portStr!r}: {e}") from e
            entry.opening.callback(None)
            entry.opening = None
        elif entry.opening is not None:
            await _wait(entry.opening)
            if self._ports.get(portStr) is not entry:
                return await self._share_or_open(portStr)
        return entry

    async def _unregister(self, reg: _Registration) -> None:
        if self._registrations.get(reg.username) is not reg:
            return
        del self._registrations[reg.username]
        entry = reg._entry
        entry.users.pop(reg.username, None)
        if not entry.users and self._ports.get(entry.port_str) is entry:
            del self._ports[entry.port_str]
            await self._close_port(entry)

    def getRegistration(self, username: str) -> Registration | None:
        return self._registrations.get(username)

    def connections(self) -> list[Connection]:
        return [c for c in self._connections if c.isConnected]

    def stopListening(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        for reg in list(self._registrations.values()):
            await self._unregister(reg)
        for conn in list(self._connections):
            conn.loseConnection()
        self.login_guard.stop()

    # -- logins -------------------------------------------------------------

    def attach(self, conn: BaseConnection, mind: object = None) -> Deferred[BaseConnection]:
        """Offer a logged-in worker's connection to the master, then attach it.

        Fails with :class:`LoginRefused` (or its subclass ``DuplicateWorker``)
        when the master refuses; the caller then closes the link.
        """
        return ensureDeferred(self._attach(conn, mind))

    async def _attach(self, conn: BaseConnection, mind: object) -> BaseConnection:
        self._connections.add(conn)
        conn.notifyOnDisconnect(lambda: self._connections.discard(conn))
        try:
            await maybeDeferred(self.master.newConnection, conn, conn.workerName)
        except Exception as e:
            self._connections.discard(conn)
            refusal = e if isinstance(e, LoginRefused) else LoginRefused(f"master refused the connection: {e}")
            _log.warn(
                "worker {worker} at {peer} over {backend} refused by the master: {why}",
                worker=conn.workerName, peer=conn.get_peer(), backend=self.backendName, why=refusal,
            )
            raise refusal from None
        if not conn.isConnected:
            raise LoginRefused(f"worker {conn.workerName!r} disconnected while logging in")
        conn.attached(mind)
        _log.info(
            "worker {worker} connected from {peer} over {backend}",
            worker=conn.workerName, peer=conn.get_peer(), backend=self.backendName,
        )
        conn.notifyOnDisconnect(
            lambda: _log.info(
                "worker {worker} at {peer} over {backend} disconnected",
                worker=conn.workerName, peer=conn.get_peer(), backend=self.backendName,
            )
        )
        return conn


async def _wait(d: Deferred[None]) -> None:
    waiter: Deferred[None] = Deferred()

    def passed(result: object) -> object:
        waiter.callback(None)
        return result

    d.addBoth(passed)
    await waiter
