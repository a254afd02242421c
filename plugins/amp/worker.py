"""Worker side of the amp backend: dial, handshake, log in, serve the bot.

One connection attempt (:class:`_Link`, core's ``WorkerLink``): connect to the client endpoint,
send ``Hello``, check the master's version and capabilities, send ``Login``
with the HMAC of the challenge, and from then on serve the master's calls
(the master may call before it answers the login).  The whole attempt is
bounded by ``LinkOptions.login_timeout`` and can be cancelled.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire.backend import LinkOptions
from workerwire.backoff import Backoff
from workerwire.base_worker import BaseCommandChannel, BaseWorkerConnector, WorkerSession, call_bot
from workerwire.errors import LoginRefused, ProtocolError, error_detail
from workerwire.flow import UpdateBatch, encode_updates, merge_updates
from workerwire.master import Update as UpdatePair
from workerwire.transfer import attach_proxies
from workerwire.values import array_header, encode
from workerwire.worker import WorkerBot
from workerwire.worker_link import WorkerLink

from workerwire.credentials import login_response
from .commands import (
    CAPABILITIES,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    REQUIRED_BY_WORKER,
    Chunk,
    Complete,
    Encoded,
    GetWorkerInfo,
    Hello,
    InterruptCommand,
    Keepalive,
    Login,
    Ping,
    Print,
    SetBuilderList,
    Shutdown,
    ShutdownRequest,
    StartBuild,
    StartCommand,
    TransferCall,
    Update,
    WireCommand,
)
from .errors import describe_loss, translate_failure
from .wire import WireProtocol

__all__ = ["AMPConnector", "WorkerProtocol", "BATCH"]

_log = Logger()

#: Most bytes of updates merged into one ``Update`` box (core's default is
#: 288 KiB).  Per box the worker and the master each pay AMP's framing, a
#: Deferred, an answer and a wake-up of the other process; with 1 MiB boxes
#: (the window holds four) both spent about half the CPU per GB of 288 KiB
#: ones.  The master's allocator no longer makes larger boxes dearer (see
#: ``workerwire.speedups.allocator.prime_allocator``); 1.5 and 1.8 MiB were
#: slower again (fewer boxes in flight).
BATCH = 1024 * 1024


class _Channel(BaseCommandChannel):
    """One running command's way back to the master, through the session's window.

    Updates handed over in one reactor turn leave as one ``Update`` box (up to
    the window's ``batch_limit`` bytes): its ``updates`` array is the
    concatenation of theirs.
    """

    def __init__(self, session: "_Link", builderName: str, commandId: str):
        super().__init__(builderName, commandId)
        self._session = session
        self._command_id = encode(commandId, "commandId")
        self._encoded_id = Encoded(self._command_id)
        self._label = f"an update of command {commandId!r}"

    def send_update(self, updates: list[UpdatePair]) -> Deferred[None]:
        proto = self._session.proto
        batch = encode_updates(updates)
        total = len(self._command_id) + len(array_header(len(updates))) + batch[2]
        if total > proto.outgoing_limit:
            return fail(ProtocolError(
                f"update of {total} bytes exceeds the message limit of {proto.outgoing_limit} bytes"))
        return self._session.window.send_mergeable(self, total, batch, self._send_batch, self._label)

    def _send_batch(self, batches: list[UpdateBatch]) -> Deferred[Any]:
        pieces, size = merge_updates(batches)  # handed on as pieces, never joined
        updates = Encoded(pieces=pieces, size=size)
        return self._session.proto.call_encoded(Update, [(b"command_id", self._encoded_id), (b"updates", updates)])

    def send_complete(self, failure: BaseException | None) -> Deferred[None]:
        self._session.forget_channel(self)
        proto = self._session.proto
        error = None if failure is None else error_detail(failure, proto.options.send_tracebacks)
        return self._session.window.send_ordered(
            lambda: proto.call(Complete, command_id=self.commandId, error=error),
            label=f"the completion of command {self.commandId!r}", key=self)


class _Link(WorkerLink):
    """One connect-and-login (``Hello``, then ``Login`` with the challenge's
    answer); once logged in, the session."""

    def __init__(self, connector: "AMPConnector"):
        # The output window: the connector's (the master's Hello answer may
        # lower it); transfer calls of the commands' handles under the same size.
        super().__init__(connector, translate=translate_failure, window=connector.window, batch_limit=BATCH)
        self._proto: WorkerProtocol | None = None

    @property
    def proto(self) -> "WorkerProtocol":
        """The protocol; it exists from the connection on (channels and the
        session's calls come later)."""
        assert self._proto is not None, "no protocol before the connection"
        return self._proto

    def build_factory(self) -> Factory[Any]:
        connector = self.connector
        factory: Factory[Any] = Factory.forProtocol(lambda: WorkerProtocol(connector))  # type: ignore[arg-type]
        factory.noisy = False
        return factory

    def connected(self, proto: "WorkerProtocol") -> None:
        self._proto, self.peer = proto, proto.peer
        proto.session = self
        proto.call(
            Hello, min_version=MIN_PROTOCOL_VERSION, max_version=PROTOCOL_VERSION,
            capabilities=list(CAPABILITIES), max_message_size=proto.options.max_message_size,
        ).addCallbacks(self._hello_answered, self._refused)

    def _hello_answered(self, answer: dict[str, Any]) -> None:
        if self.result.called:
            return
        version = answer["version"]
        if not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
            return self.failed(LoginRefused(
                f"the master chose amp dialect version {version}; this worker speaks "
                f"{MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"))
        missing = REQUIRED_BY_WORKER - set(answer["capabilities"])
        if missing:
            return self.failed(LoginRefused(
                f"the master lacks the capabilities {', '.join(sorted(missing))} this worker requires"))
        if answer["max_message_size"] < 1024 or answer["window"] < 1:
            self.proto.protocol_error(ProtocolError("Hello answer with max_message_size < 1024 or window < 1"))
            return self.failed(ProtocolError("malformed Hello answer from the master"))
        self.proto.peer_max_message_size = answer["max_message_size"]
        self.proto.peer_parts = "parts" in answer["capabilities"]
        self.adopt_window(answer["window"], self.proto.outgoing_limit)
        self.proto.phase = "serving"
        self.proto.call(
            Login, username=self.connector.name,
            response=login_response(self.connector.password, answer["challenge"]),
        ).addCallbacks(lambda _: self.login_succeeded(), self._refused)
        return None

    def _refused(self, failure: Failure) -> None:
        self.refused(translate_failure(failure))

    # -- the session ------------------------------------------------------------

    def keepalive(self) -> Deferred[None]:
        return self.settled(self.proto.call(Keepalive))

    def request_shutdown(self) -> Deferred[None]:
        return self.settled(self.proto.call(ShutdownRequest))

    def close(self, abort: bool = False) -> None:
        if self._proto is not None:
            self._proto.close(abort=abort)

    def send_transfer(self, commandId: str, handleId: int, method: str, args: list[Any]) -> Deferred[Any]:
        d = self.proto.call(TransferCall, command_id=commandId, handle=handleId, method=method, args=args)
        return d.addCallbacks(lambda answer: answer["result"], translate_failure)


class WorkerProtocol(WireProtocol):
    """The worker's end of the connection: serves the master's calls."""

    side = "worker"
    responders = {
        command.commandName: (command, "amp_" + command.__name__)
        for command in (Chunk, Print, GetWorkerInfo, SetBuilderList, StartBuild, StartCommand,
                        InterruptCommand, Shutdown, Ping)
    }

    def __init__(self, connector: "AMPConnector"):
        super().__init__(connector.options, connector.reactor)
        self.connector = connector
        self.bot: WorkerBot = connector.bot
        #: ``hello`` (only answers accepted), then ``serving`` once Login is sent.
        self.phase = "hello"
        self.session: _Link | None = None
        self.on_traffic = connector.on_traffic
        self.stream.link_bytes = connector.link_bytes

    def refuses(self, command: type[WireCommand]) -> str | None:
        if self.phase == "hello":
            return f"{command.__name__} from the master before the worker sent its Login"
        return None

    def link_lost(self, reason: Failure) -> None:
        if self.session is not None:
            self.session.lost(self.stream.drop_reason or describe_loss(reason))

    # -- calls from the master ----------------------------------------------

    # A command whose answer has no fields may answer with anything (the
    # bot's result is dropped).

    def amp_Print(self, message: str) -> Deferred[Any]:
        return call_bot(self.bot, "print", message)

    def amp_GetWorkerInfo(self) -> Deferred[dict[str, Any]]:
        return call_bot(self.bot, "getWorkerInfo").addCallback(lambda info: {"info": info})

    def amp_SetBuilderList(self, builders: list[Any]) -> Deferred[dict[str, Any]]:
        if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in builders):
            error = ProtocolError("SetBuilderList.builders must be a list of [name, builddir] str pairs")
            self.protocol_error(error)
            raise error
        assert self.session is not None
        return self.session.set_builder_list(builders).addCallback(lambda names: {"names": names})

    def amp_StartBuild(self, builder: str) -> Deferred[Any]:
        return call_bot(self.bot, "startBuild", builder)

    def amp_StartCommand(self, builder: str, command_id: str, command_name: str,
                         args: dict[str, Any], handles: dict[str, Any] | None = None) -> Deferred[dict[str, Any]]:
        assert self.session is not None
        session = self.session
        if handles is not None:
            args = attach_proxies(args, handles, session.transfers, command_id)
        return session.start_command(_Channel(session, builder, command_id), command_name, args).addCallback(
            lambda _: {})

    def amp_InterruptCommand(self, builder: str, command_id: str, why: str) -> Deferred[Any]:
        return call_bot(self.bot, "interruptCommand", builder, command_id, why)

    def amp_Shutdown(self) -> Deferred[Any]:
        return call_bot(self.bot, "shutdown")

    def amp_Ping(self) -> dict[str, Any]:
        return {}


class AMPConnector(BaseWorkerConnector):
    """Dials an amp master at a client endpoint string and serves a bot.

    :param window: the most update bytes in flight unanswered (the master may
        ask for less).
    :raises AddressError: *address* is not a client endpoint string.
    """

    backendName = "amp"
    dials_address = True

    def __init__(self, bot: WorkerBot, address: str, name: str, password: str,
                 options: LinkOptions | None = None, reactor: Any = None, backoff: Backoff | None = None,
                 window: int | None = None, backend_name: str | None = None):
        super().__init__(bot, address, name, password, options, reactor, backoff, backend_name)
        # Default: the shared option (LinkOptions.output_window), so the window
        # is configured like every other link option.
        self.window = self.options.output_window if window is None else window
        if self.window < 1:
            raise ValueError("window must be positive")

    @property
    def session(self) -> _Link | None:
        """The logged-in session, if any (for tests and diagnostics)."""
        return self._session  # type: ignore[return-value]

    def connect_once(self) -> Deferred[WorkerSession]:
        return _Link(self).start()
