"""Master side of the amp backend: one listening port per port string, many workers each.

A connection goes through these states; a command that arrives out of turn
is a protocol error that closes the connection:

``hello``
    only ``Hello`` is accepted (the login timer runs from the TCP accept; the
    listener's :mod:`~workerwire.login_guard` also caps connections in these
    first three states, their input, and delays repeated refusals);
``login``
    only ``Login``;
``authenticating``
    nothing (the credentials are being checked through ``twisted.cred``);
``attaching``
    the credentials were good: a :class:`AMPConnection` exists and is offered to
    the master (``listener.attach``) *before* the ``Login`` answer, like PB, so
    the master may already call the worker; the worker's commands are accepted;
``ready``
    logged in; the login timer is cancelled;
``refused``
    the refusal was answered and the connection is closing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire.backend import LinkOptions
from workerwire.base_connection import BaseConnection, update_pairs
from workerwire.base_listener import BaseListener, OpenPort
from workerwire.credentials import ChallengeResponse, new_challenge
from workerwire.errors import LoginRefused, ProtocolError, UnsupportedValue, error_from_wire
from workerwire.flow import ReceiveWindow
from workerwire.master import MasterHooks
from workerwire.stream_link import StreamServerFactory
from workerwire.transfer import split_refs

from .commands import (
    CAPABILITIES,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    REQUIRED_BY_MASTER,
    Chunk,
    Complete,
    GetWorkerInfo,
    Hello,
    InterruptCommand,
    Keepalive,
    Login,
    MissingCapability,
    Ping,
    Print,
    SetBuilderList,
    Shutdown,
    ShutdownRequest,
    StartBuild,
    StartCommand,
    TransferCall,
    Update,
    VersionMismatch,
    WireCommand,
)
from .errors import describe_loss, translate_failure
from .wire import WireProtocol

__all__ = ["AMPListener", "AMPConnection", "MasterProtocol"]

_log = Logger()

_AFTER_LOGIN = frozenset({Chunk, Update, Complete, TransferCall, Keepalive, ShutdownRequest})
_ALLOWED: dict[str, frozenset[type[WireCommand]]] = {
    "hello": frozenset({Hello}),
    "login": frozenset({Login}),
    "authenticating": frozenset(),
    "attaching": _AFTER_LOGIN,
    "ready": _AFTER_LOGIN,
    "refused": frozenset(),
}


class AMPConnection(BaseConnection):
    """One worker logged in over amp."""

    def __init__(self, listener: "AMPListener", workerName: str, proto: "MasterProtocol"):
        super().__init__(listener.master, workerName, listener.backendName, listener.options, listener.reactor)
        self._proto = proto
        self.link_bytes = proto.stream.link_bytes

    def get_peer(self) -> str:
        return self._proto.peer

    # -- primitives ---------------------------------------------------------

    def call_print(self, message: str) -> Deferred[Any]:
        return self._proto.call(Print, message=message).addCallback(lambda _: None)

    def call_get_worker_info(self) -> Deferred[dict[str, Any]]:
        return self._proto.call(GetWorkerInfo).addCallback(lambda answer: answer["info"])

    def call_set_builder_list(self, builders: list[list[str]]) -> Deferred[list[str]]:
        return self._proto.call(SetBuilderList, builders=builders).addCallback(lambda answer: answer["names"])

    def call_start_build(self, builderName: str) -> Deferred[Any]:
        return self._proto.call(StartBuild, builder=builderName).addCallback(lambda _: None)

    def call_start_command(self, builderName: str, commandId: str, commandName: str,
                              args: dict[str, Any]) -> Deferred[Any]:
        plain, handles = split_refs(args)
        if handles and not self._proto.peer_transfers:
            return fail(UnsupportedValue(
                f"worker {self.workerName!r} does not announce the amp capability 'transfers': "
                "it cannot take file transfer handles"))
        return self._proto.call(
            StartCommand, builder=builderName, command_id=commandId, command_name=commandName, args=plain,
            handles=handles or None,
        ).addCallback(lambda _: None)

    def call_interrupt_command(self, builderName: str, commandId: str, why: str) -> Deferred[Any]:
        return self._proto.call(
            InterruptCommand, builder=builderName, command_id=commandId, why=why).addCallback(lambda _: None)

    def call_shutdown(self) -> Deferred[Any]:
        return self._proto.call(Shutdown).addCallback(lambda _: None)

    def call_keepalive(self) -> Deferred[Any]:
        return self._proto.call(Ping).addCallback(lambda _: None)

    def lose_connection(self, abort: bool) -> None:
        self._proto.close(abort=abort)

    def translate_failure(self, failure: Failure) -> Failure:
        return translate_failure(failure)


class MasterProtocol(WireProtocol):
    """The master's end of one worker connection."""

    side = "master"
    responders = {
        command.commandName: (command, "amp_" + command.__name__)
        for command in (Hello, Login, Chunk, Update, Complete, TransferCall, Keepalive, ShutdownRequest)
    }

    def __init__(self, listener: "AMPListener", entry: OpenPort):
        super().__init__(listener.options, listener.reactor, listener.login_guard.stats)
        self.listener = listener
        self.entry = entry
        self.phase = "hello"
        self.conn: AMPConnection | None = None
        self.window = listener.window
        #: Update bytes not yet acknowledged (core's window accounting).
        self.received = ReceiveWindow(self.window)
        self._challenge = b""
        self.peer_transfers = False
        self.on_traffic = self._traffic

    def _traffic(self) -> None:
        if self.conn is not None:
            self.conn.on_traffic()

    def refuses(self, command: type[WireCommand]) -> str | None:
        allowed = _ALLOWED[self.phase]
        if command in allowed:
            return None
        if self.phase in ("hello", "login", "authenticating"):
            expected = " or ".join(sorted(c.__name__ for c in allowed)) or "nothing until the login is answered"
            return f"{command.__name__} before login (expected {expected})"
        return f"{command.__name__} is not accepted {'after login' if self.phase != 'refused' else 'now'}"

    # -- connection lifetime ------------------------------------------------
    # (the login ticket -- timer, pre-login input limit, refusal delays -- is
    # ``stream.ticket``, set by the factory)

    def link_lost(self, reason: Failure) -> None:
        if self.conn is not None:
            self.conn.on_connection_lost(self.stream.drop_reason or describe_loss(reason))

    def _refuse(self, why: object, logged: bool = False) -> None:
        """The refusal is being answered; close once the answer is written."""
        if not logged:
            _log.warn("amp master: refused {peer}: {why}", peer=self.stream.who(), why=str(why))
        self.phase = "refused"
        self.clock.callLater(0, self.close)

    # -- handshake ----------------------------------------------------------

    def amp_Hello(self, min_version: int, max_version: int, capabilities: list[str],
                  max_message_size: int) -> dict[str, Any]:
        if min_version > max_version or max_message_size < 1024:
            raise self._malformed("Hello needs min_version <= max_version and max_message_size >= 1024")
        version = min(PROTOCOL_VERSION, max_version)
        if version < max(MIN_PROTOCOL_VERSION, min_version):
            error: Exception = VersionMismatch(
                f"the master speaks amp dialect versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; "
                f"the worker offered {min_version} to {max_version}")
            self._refuse(error)
            raise error
        missing = REQUIRED_BY_MASTER - set(capabilities)
        if missing:
            error = MissingCapability(
                f"the master requires the capabilities {', '.join(sorted(REQUIRED_BY_MASTER))}; "
                f"the worker lacks {', '.join(sorted(missing))}")
            self._refuse(error)
            raise error
        self.peer_max_message_size = max_message_size
        self.peer_parts = "parts" in capabilities
        self.peer_transfers = "transfers" in capabilities
        self._challenge = new_challenge()
        self.phase = "login"
        return {
            "version": version,
            "capabilities": list(CAPABILITIES),
            "challenge": self._challenge,
            "max_message_size": self.options.max_message_size,
            "window": self.window,
        }

    def amp_Login(self, username: str, response: bytes) -> Deferred[dict[str, Any]]:
        self.phase = "authenticating"
        return ensureDeferred(self._login(username, response))

    async def _login(self, username: str, response: bytes) -> dict[str, Any]:
        def connect(name: str) -> AMPConnection:
            if self.stream.lost:
                raise LoginRefused("the connection closed during the login")
            self.conn = AMPConnection(self.listener, name, self)
            self.stream.worker_name = name
            self.phase = "attaching"
            return self.conn

        creds = ChallengeResponse(username, self._challenge, response)
        try:  # core's login sequence: it logs a refusal and closes once it is answered
            await self.listener.log_in(self.entry, self.stream.ticket, creds, connect, self.close, mind=self)
        except LoginRefused:
            self.phase = "refused"
            raise
        self.phase = "ready"
        return {}

    # -- calls from the worker ----------------------------------------------

    def amp_Update(self, command_id: str, updates: list[Any]) -> Any:
        size = self.box_value_bytes
        try:
            self.received.admit(size)
            pairs = update_pairs(updates, "Update.updates")
        except ProtocolError as e:
            raise self._malformed(str(e)) from None
        assert self.conn is not None
        pending = self.received.hold(size, self.conn.on_update(command_id, pairs))

        def acked(result: object) -> dict[str, Any]:
            if isinstance(result, Failure):
                _log.failure("remote_update of command {cid} failed", result, cid=command_id)
            return {}

        return {} if pending is None else pending.addBoth(acked)

    def amp_TransferCall(self, command_id: str, handle: int, method: str, args: list[Any]) -> Any:
        # Core checks the handle and the transfer window (ProtocolError answers,
        # the connection stays open, as on every backend).
        assert self.conn is not None
        d = self.conn.on_transfer_call(command_id, handle, method, args)
        return d.addCallback(lambda result: {"result": result})

    def amp_Complete(self, command_id: str, error: list[Any] | None) -> dict[str, Any]:
        if error is not None:
            if len(error) not in (2, 3) or not all(isinstance(part, str) for part in error):
                raise self._malformed("Complete.error must be nil or [type_name, message(, traceback)] of str")
            failure = error_from_wire(*error)
        else:
            failure = None
        assert self.conn is not None
        self.conn.on_complete(command_id, failure)
        return {}

    def amp_Keepalive(self) -> dict[str, Any]:
        assert self.conn is not None
        self.conn.on_worker_keepalive()
        return {}

    def amp_ShutdownRequest(self) -> dict[str, Any]:
        assert self.conn is not None
        self.conn.on_shutdown_request()
        return {}

    def _malformed(self, why: str) -> ProtocolError:
        error = ProtocolError(why)
        self.protocol_error(error)
        return error


class AMPListener(BaseListener):
    """Listens on Twisted server endpoint strings; many workers share each port.

    :param window: the flow-control window offered to workers, in bytes.
    """

    backendName = "amp"

    def __init__(self, master: MasterHooks, options: LinkOptions | None = None, reactor: Any = None,
                 window: int | None = None, backend_name: str | None = None):
        super().__init__(master, options, reactor, backend_name)
        # Default: the shared option (LinkOptions.output_window), so the window
        # is configured like every other link option.
        self.window = self.options.output_window if window is None else window
        if self.window < 1:
            raise ValueError("window must be positive")

    def build_factory(self, entry: OpenPort) -> ServerFactory:
        return StreamServerFactory(self, entry, lambda: MasterProtocol(self, entry))
