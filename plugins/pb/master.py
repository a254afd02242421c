"""Master side of the pb backend: listening ports and logins.

One PB server factory per port string, shared by every worker registered on
it, with a ``twisted.cred`` portal whose checker is the port's
:class:`~workerwire.base_listener.WorkerCredentials`.  The login is PB's
challenge-response (``root.login(name)`` -> ``(challenge, challenger)``,
``challenger.respond(hash, mind)`` -> perspective), where the *mind* is the
worker's bot.  As in Buildbot, the whole attach -- the master's
``newConnection`` hook and whatever it calls on the worker -- runs before the
answer to ``respond`` goes back.
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.cred import credentials, error as cred_error
from twisted.cred.portal import IRealm, Portal
from twisted.internet import protocol
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.logger import Logger
from twisted.spread import pb
from zope.interface import implementer

from workerwire.addresses import bound_port_of, client_address_for
from workerwire.backend import LinkOptions
from workerwire.base_listener import BaseListener, OpenPort
from workerwire.errors import AddressError, LoginRefused, ProtocolError
from workerwire.login_guard import GENERIC_REFUSAL, CloseAtOnce, refusal_reason
from workerwire.tls import dial_address

from .address import normalize_port, server_endpoint
from .broker import Servant, WireBroker
from .connection import PBConnection

__all__ = ["PBListener"]

_log = Logger()


@implementer(credentials.IUsernameHashedPassword)
class _Challenger(Servant):
    """PB's challenge-response credentials for one login attempt."""

    def __init__(self, factory: "_PortFactory", broker: WireBroker, username: bytes, challenge: bytes):
        self.factory = factory
        self.broker = broker
        self.username = username
        self.challenge = challenge
        self.response: bytes | None = None

    def checkPassword(self, password: bytes) -> bool:
        if self.response is None:
            return False
        return hmac.compare_digest(pb.respond(self.challenge, password), self.response)

    def remote_respond(self, response: Any, mind: Any) -> Deferred[Any]:
        if self.response is not None or self.broker.logged_in:
            raise ProtocolError("respond was already called on this connection")
        if not isinstance(response, bytes):
            raise ProtocolError("respond expects the hashed password as bytes")
        self.response = response
        self.broker.logged_in = True
        ticket = self.broker.login_ticket
        if ticket is not None and not ticket.may_check():
            ticket.throttled(self.username)
            self.broker.reactor.callLater(0, self.broker.close)
            return fail(cred_error.UnauthorizedLogin(GENERIC_REFUSAL))
        d = self.factory.portal.login(self, mind, pb.IPerspective)  # type: ignore[arg-type]
        d.addCallbacks(lambda result: result[1], self._refused)
        return d

    def _refused(self, failure: Any) -> Any:
        ticket = self.broker.login_ticket
        if ticket is not None and failure.check(cred_error.UnauthorizedLogin):
            # Bad credentials: the guard logs them and says when to answer.
            def answer(_: object) -> Any:
                self.broker.reactor.callLater(0, self.broker.close)
                return failure

            return ticket.refused(self.username, refusal_reason(failure.value)).addCallback(answer)
        if not failure.check(LoginRefused):  # the master's refusals are logged by the listener
            name = self.username.decode("utf-8", "replace")
            _log.info("pb login of {name!r} from {peer} refused: {why}", name=name, peer=self.broker.peer,
                      why=failure.getErrorMessage())
        # The refusal is answered first; then this connection closes.
        self.broker.reactor.callLater(0, self.broker.close)
        return failure


class _LoginRoot(Servant):
    """The PB root object of a master port: only ``login``."""

    def __init__(self, factory: "_PortFactory", broker: WireBroker):
        self.factory = factory
        self.broker = broker

    def remote_login(self, username: Any) -> tuple[bytes, _Challenger]:
        if isinstance(username, str):
            username = username.encode("utf-8")
        if not isinstance(username, bytes) or len(username) > 4096:
            raise ProtocolError("login expects the worker name as bytes")
        if self.broker.logged_in:
            raise ProtocolError("this connection already logged in")
        challenge = pb.challenge()
        return challenge, _Challenger(self.factory, self.broker, username, challenge)


@implementer(IRealm)
class _Realm:
    """Builds the connection and attaches it, before the login is answered."""

    def __init__(self, listener: "PBListener"):
        self.listener = listener

    def requestAvatar(self, avatarId: bytes, mind: Any, *interfaces: Any) -> Deferred[Any]:
        if pb.IPerspective not in interfaces:
            return fail(NotImplementedError("pb logins ask for IPerspective"))
        if not isinstance(mind, pb.RemoteReference):
            return fail(LoginRefused("a pb worker logs in with its bot as the mind"))
        return ensureDeferred(self._attach(avatarId.decode("utf-8"), mind))

    async def _attach(self, workerName: str, mind: pb.RemoteReference) -> Any:
        broker: WireBroker = mind.broker
        broker.transfers.accepting = True
        broker.factory.authenticated(broker)
        try:
            await broker.features_known()
            conn = PBConnection(self.listener, workerName, broker, mind)
            await self.listener.attach(conn, mind)
        finally:
            if broker.login_ticket is not None:
                broker.login_ticket.done()
        return (pb.IPerspective, conn.perspective, lambda: None)


class _PortFactory(protocol.ServerFactory):
    """The PB server factory of one port string."""

    noisy = False

    def __init__(self, listener: "PBListener", entry: OpenPort):
        self.listener = listener
        self.options: LinkOptions = listener.options
        self.reactor = listener.reactor
        self.portal = Portal(_Realm(listener), [entry.checker])  # type: ignore[arg-type, list-item]
        self.unsafeTracebacks = self.options.send_tracebacks
        self.unauthenticated: dict[WireBroker, Any] = {}

    def buildProtocol(self, addr: Any) -> Any:
        broker = WireBroker(False, self.options, self.reactor)
        ticket = self.listener.login_guard.admit(addr, lambda: broker.close(abort=True))
        if ticket is None:
            return CloseAtOnce()  # at the cap of unauthenticated connections
        broker.login_ticket = ticket
        broker.budget_stats = self.listener.login_guard.stats
        broker.factory = self
        broker.setNameForLocal("root", _LoginRoot(self, broker))
        broker.on_connected = self._connected
        broker.on_lost = lambda reason: self._forget(broker)
        return broker

    def clientConnectionMade(self, broker: WireBroker) -> None:
        """PB calls this once the dialect is agreed; nothing to do."""

    def _connected(self, broker: WireBroker) -> None:
        # The login timer runs from the accept (workerwire.login_guard).
        self.unauthenticated[broker] = broker.login_ticket

    def authenticated(self, broker: WireBroker) -> None:
        ticket = self.unauthenticated.pop(broker, None)
        if ticket is not None:
            ticket.verified()

    def _forget(self, broker: WireBroker) -> None:
        self.unauthenticated.pop(broker, None)
        if broker.login_ticket is not None:
            broker.login_ticket.done()

    def close_unauthenticated(self) -> None:
        for broker in list(self.unauthenticated):
            self._forget(broker)
            broker.close(abort=True)


class PBListener(BaseListener):
    """Listens for PB workers (workerwire's own connector or a stock buildbot-worker)."""

    backendName = "pb"

    def _check_port_str(self, portStr: str) -> None:
        server_endpoint(self.reactor, portStr)

    def _open_port(self, entry: OpenPort) -> Deferred[None]:
        return ensureDeferred(self._listen(entry))

    async def _listen(self, entry: OpenPort) -> None:
        endpoint = server_endpoint(self.reactor, entry.port_str)
        factory = _PortFactory(self, entry)
        try:
            port = await endpoint.listen(self.login_guard.guarded(factory))
        except Exception as e:
            raise AddressError(f"cannot listen on pb port {entry.port_str!r} "
                               f"({normalize_port(entry.port_str)}): {e}") from None
        entry.listening = (port, factory)
        host = port.getHost()
        entry.port = bound_port_of(host)  # a UNIX socket's path, not its address object
        entry.address = dial_address(entry.port_str, client_address_for(host))  # tls:host=... for a TLS port
        _log.info("pb listening on {port} (workers dial {address})", port=entry.port_str, address=entry.address)

    def _close_port(self, entry: OpenPort) -> Deferred[None]:
        if entry.listening is None:
            return succeed(None)
        port, factory = entry.listening
        factory.close_unauthenticated()
        d: Deferred[None] = Deferred()
        closing = port.stopListening()
        if isinstance(closing, Deferred):
            closing.addBoth(lambda _: d.callback(None))
        else:
            d.callback(None)
        return d
