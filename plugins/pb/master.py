"""Master side of the pb backend: listening ports and logins.

One PB server factory per port string, shared by every worker registered on
it (core listens with it and checks the credentials: ``BaseListener.listen``
and ``check_login``).  The login is PB's
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
from twisted.internet import protocol
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.spread import pb
from zope.interface import implementer

from workerwire.backend import LinkOptions
from workerwire.base_listener import BaseListener, OpenPort
from workerwire.errors import LoginRefused, ProtocolError
from workerwire.login_guard import GENERIC_REFUSAL, CloseAtOnce

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
        return ensureDeferred(self._login(mind))

    async def _login(self, mind: Any) -> Any:
        broker, listener = self.broker, self.factory.listener
        try:
            name = await listener.check_login(self.factory.entry, broker.login_ticket, self)
        except LoginRefused:
            # Answered as PB's own refusal (what buildbot-worker expects); then this connection closes.
            broker.reactor.callLater(0, broker.close)
            raise cred_error.UnauthorizedLogin(GENERIC_REFUSAL) from None
        # As in Buildbot, the whole attach -- the master's newConnection hook and
        # whatever it calls on the worker -- runs before the answer to respond.
        try:
            if not isinstance(mind, pb.RemoteReference):
                _log.info("pb login of {name!r} from {peer} refused: it gave no bot as the mind", name=name,
                          peer=broker.peer)
                raise LoginRefused("a pb worker logs in with its bot as the mind")
            broker.transfers.accepting = True
            await broker.features_known()
            conn = PBConnection(listener, name, broker, mind)
            await listener.attach(conn, mind)
        except Exception as e:
            if not isinstance(e, LoginRefused):  # the master's refusals are logged by the listener
                _log.info("pb login of {name!r} from {peer} refused: {why}", name=name, peer=broker.peer,
                          why=e)
            broker.reactor.callLater(0, broker.close)  # the refusal is answered first
            raise
        finally:
            if broker.login_ticket is not None:
                broker.login_ticket.done()
        return conn.perspective


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


class _PortFactory(protocol.ServerFactory):
    """The PB server factory of one port string."""

    noisy = False

    def __init__(self, listener: "PBListener", entry: OpenPort):
        self.listener = listener
        self.entry = entry
        self.options: LinkOptions = listener.options
        self.reactor = listener.reactor
        self.unsafeTracebacks = self.options.send_tracebacks

    def buildProtocol(self, addr: Any) -> Any:
        broker = WireBroker(False, self.options, self.reactor)
        ticket = self.listener.admit(self.entry, addr, lambda: broker.close(abort=True))
        if ticket is None:
            return CloseAtOnce()  # at the cap of unauthenticated connections
        broker.login_ticket = ticket
        broker.budget_stats = self.listener.login_guard.stats
        broker.factory = self
        broker.setNameForLocal("root", _LoginRoot(self, broker))
        broker.on_lost = lambda reason: ticket.done()
        return broker

    def clientConnectionMade(self, broker: WireBroker) -> None:
        """PB calls this once the dialect is agreed; nothing to do."""


class PBListener(BaseListener):
    """Listens for PB workers (workerwire's own connector or a stock buildbot-worker)."""

    backendName = "pb"

    def build_factory(self, entry: OpenPort) -> _PortFactory:
        return _PortFactory(self, entry)
