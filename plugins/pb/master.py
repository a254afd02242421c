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

from typing import Any

from twisted.cred import error as cred_error
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.spread import pb

from workerwire.base_listener import BaseListener, OpenPort
from workerwire.credentials import ChallengeResponse
from workerwire.errors import LoginRefused, ProtocolError
from workerwire.login_guard import GENERIC_REFUSAL
from workerwire.stream_link import StreamServerFactory

from .broker import Servant, WireBroker
from .connection import PBConnection

__all__ = ["PBListener"]


class _Challenger(Servant):
    """What ``login`` answers beside the challenge: ``respond(hash, mind)``
    checks PB's MD5 challenge-response through core's login sequence."""

    def __init__(self, root: "_LoginRoot", username: bytes, challenge: bytes):
        self.root = root
        self.broker = root.broker
        self.username = username
        self.challenge = challenge

    def remote_respond(self, response: Any, mind: Any) -> Deferred[Any]:
        if self.broker.logged_in:
            raise ProtocolError("respond was already called on this connection")
        if not isinstance(response, bytes):
            raise ProtocolError("respond expects the hashed password as bytes")
        self.broker.logged_in = True
        creds = ChallengeResponse(self.username.decode("utf-8", "replace"), self.challenge, response, _pb_digest)
        return ensureDeferred(self._login(creds, mind))

    async def _login(self, creds: ChallengeResponse, mind: Any) -> Any:
        broker, listener = self.broker, self.root.listener

        async def connect(name: str) -> PBConnection:
            if not isinstance(mind, pb.RemoteReference):
                raise LoginRefused("a pb worker logs in with its bot as the mind")
            broker.transfers.accepting = True
            await broker.features_known()
            return PBConnection(listener, name, broker, mind)

        # As in Buildbot, the whole attach -- the master's newConnection hook and
        # whatever it calls on the worker -- runs before the answer to respond.
        try:
            conn = await listener.log_in(self.root.entry, broker.stream.ticket, creds, connect, broker.close, mind)
        except LoginRefused as e:
            if e.message == GENERIC_REFUSAL:  # bad credentials: PB's own refusal (what buildbot-worker expects)
                raise cred_error.UnauthorizedLogin(GENERIC_REFUSAL) from None
            raise
        return conn.perspective


def _pb_digest(password: bytes, challenge: bytes) -> bytes:
    return pb.respond(challenge, password)


class _LoginRoot(Servant):
    """The PB root object of a master port: only ``login``."""

    def __init__(self, listener: "PBListener", entry: OpenPort, broker: WireBroker):
        self.listener = listener
        self.entry = entry
        self.broker = broker

    def remote_login(self, username: Any) -> tuple[bytes, _Challenger]:
        if isinstance(username, str):
            username = username.encode("utf-8")
        if not isinstance(username, bytes) or len(username) > 4096:
            raise ProtocolError("login expects the worker name as bytes")
        if self.broker.logged_in:
            raise ProtocolError("this connection already logged in")
        challenge = pb.challenge()
        return challenge, _Challenger(self, username, challenge)


class _PortFactory(StreamServerFactory):
    """The PB server factory of one port string: core's (login ticket, cap
    of unauthenticated connections, byte counter), with what PB's broker
    asks of its factory."""

    def __init__(self, listener: "PBListener", entry: OpenPort):
        super().__init__(listener, entry, lambda: _broker(listener, entry))
        self.unsafeTracebacks = listener.options.send_tracebacks

    def clientConnectionMade(self, broker: WireBroker) -> None:
        """PB calls this once the dialect is agreed; nothing to do."""


def _broker(listener: "PBListener", entry: OpenPort) -> WireBroker:
    """The broker of one accepted connection: only ``login`` is served until it logged in."""
    broker = WireBroker(False, listener.options, listener.reactor, listener.login_guard.stats)
    broker.setNameForLocal("root", _LoginRoot(listener, entry, broker))
    return broker


class PBListener(BaseListener):
    """Listens for PB workers (workerwire's own connector or a stock buildbot-worker)."""

    backendName = "pb"

    def build_factory(self, entry: OpenPort) -> _PortFactory:
        return _PortFactory(self, entry)
