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

import abc
from dataclasses import dataclass, field
from typing import Any

from twisted.cred import credentials
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, ensureDeferred, fail, maybeDeferred
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from zope.interface import implementer

from .backend import LinkOptions
from .base_connection import BaseConnection
from .errors import AddressError, LoginRefused, RegistrationError, WorkerwireError
from .login_guard import BadCredentials, LoginGuard
from .master import Connection, Listener, MasterHooks, Registration

__all__ = ["BaseListener", "OpenPort", "WorkerCredentials"]

_log = Logger()


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

    def requestAvatarId(self, creds: Any) -> Deferred[bytes]:
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

    @property
    def checker(self) -> WorkerCredentials:
        return WorkerCredentials(self.users, self.port_str)


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

            reactor = default_reactor  # type: ignore[assignment]
        self.master = master
        self.options = options or LinkOptions()
        self.reactor: Any = reactor
        self._registrations: dict[str, _Registration] = {}
        self._ports: dict[str, OpenPort] = {}
        self._connections: set[BaseConnection] = set()
        #: Login timeout, caps and failed-login delays of this listener's ports.
        self.login_guard = LoginGuard(self.options, self.reactor, self.backendName)

    # -- backend hooks ------------------------------------------------------

    @abc.abstractmethod
    def _open_port(self, entry: OpenPort) -> Deferred[None]:
        """Start listening on ``entry.port_str``; set ``entry.listening``,
        ``entry.port`` and ``entry.address``.  Logins on it are checked with
        ``entry.checker`` and end in :meth:`attach`.

        :raises AddressError: bad port string or port in use.
        """

    @abc.abstractmethod
    def _close_port(self, entry: OpenPort) -> Deferred[None]:
        """Stop listening on a port opened by :meth:`_open_port`."""

    def _check_port_str(self, portStr: str) -> None:
        """Raise :class:`AddressError` for a port string this backend rejects."""

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
    d.addBoth(lambda r: (waiter.callback(None), r)[1])
    await waiter
