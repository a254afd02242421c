"""Worker side of the amp backend: dial, handshake, log in, serve the bot.

One connection attempt (:class:`_Attempt`): connect to the client endpoint,
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
from workerwire.base_worker import BaseCommandChannel, BaseWorkerConnector, LoginAttempt, WorkerSession, call_bot
from workerwire.errors import LoginRefused, ProtocolError, error_detail
from workerwire.flow import SendWindow, UpdateBatch, encode_updates, merge_updates
from workerwire.master import Update as UpdatePair
from workerwire.transfer import TransferLink, attach_proxies
from workerwire.values import array_header, encode
from workerwire.worker import WorkerBot

from workerwire.credentials import login_response
from workerwire.endpoints import parse_client_address
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

    def __init__(self, session: "_Session", builderName: str, commandId: str):
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


class _Session(WorkerSession):
    """One connection to the master, from ``Hello`` on."""

    def __init__(self, connector: "AMPConnector", proto: "WorkerProtocol"):
        super().__init__()
        self.connector = connector
        self.proto = proto
        self.peer = proto.peer
        self.window = SendWindow(connector.window, clock=connector.reactor, batch_limit=BATCH,
                                 translate=translate_failure, name="amp worker")
        #: Transfer calls of the commands' handles (``TransferCall``), under
        #: the same window size (set again from the master's ``Hello`` answer).
        self.transfers = TransferLink(self._send_transfer, connector.window)

    def keepalive(self) -> Deferred[None]:
        return self._call(Keepalive)

    def request_shutdown(self) -> Deferred[None]:
        return self._call(ShutdownRequest)

    def close(self, abort: bool = False) -> None:
        self.proto.close(abort=abort)

    def _call(self, command: type[WireCommand]) -> Deferred[None]:
        return self.proto.call(command).addCallbacks(lambda _: None, translate_failure)

    def _send_transfer(self, commandId: str, handleId: int, method: str, args: list[Any]) -> Deferred[Any]:
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
        self.session: _Session | None = None
        self.on_traffic = connector.on_traffic
        self.link_bytes = connector.link_bytes

    def who(self) -> str:
        return f"master at {self.peer}"

    def refuses(self, command: type[WireCommand]) -> str | None:
        if self.phase == "hello":
            return f"{command.__name__} from the master before the worker sent its Login"
        return None

    def link_lost(self, reason: Failure) -> None:
        if self.session is not None:
            self.session.lost(self.drop_reason or describe_loss(reason))

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
        pairs = [(name, builddir) for name, builddir in builders]
        return call_bot(self.bot, "setBuilderList", pairs).addCallback(lambda names: {"names": names})

    def amp_StartBuild(self, builder: str) -> Deferred[Any]:
        return call_bot(self.bot, "startBuild", builder)

    def amp_StartCommand(self, builder: str, command_id: str, command_name: str,
                         args: dict[str, Any], handles: dict[str, Any] | None = None) -> Deferred[dict[str, Any]]:
        assert self.session is not None
        session = self.session
        if handles is not None:
            args = attach_proxies(args, handles, session.transfers, command_id)
        channel = _Channel(session, builder, command_id)
        session.add_channel(channel)
        d = call_bot(self.bot, "startCommand", channel, builder, command_id, command_name, args)

        def refused(failure: Failure) -> Failure:
            session.forget_channel(channel)
            return failure

        return d.addCallbacks(lambda _: {}, refused)

    def amp_InterruptCommand(self, builder: str, command_id: str, why: str) -> Deferred[Any]:
        return call_bot(self.bot, "interruptCommand", builder, command_id, why)

    def amp_Shutdown(self) -> Deferred[Any]:
        return call_bot(self.bot, "shutdown")

    def amp_Ping(self) -> dict[str, Any]:
        return {}


class _Attempt(LoginAttempt):
    """One connect-and-login: ``Hello``, then ``Login`` with the challenge's answer."""

    def __init__(self, connector: "AMPConnector"):
        super().__init__(connector)
        self.proto: WorkerProtocol | None = None
        self.session: _Session | None = None

    def build_factory(self) -> Factory[Any]:
        connector = self.connector
        factory: Factory[Any] = Factory.forProtocol(lambda: WorkerProtocol(connector))  # type: ignore[arg-type]
        factory.noisy = False
        return factory

    def drop(self, abort: bool) -> None:
        if self.proto is not None:
            self.proto.close(abort=abort)

    def connected(self, proto: WorkerProtocol) -> None:
        self.proto, self.peer = proto, proto.peer
        self.session = session = _Session(proto.connector, proto)
        proto.session = session
        session.lost_before_login = self.lost_during_login
        proto.call(
            Hello, min_version=MIN_PROTOCOL_VERSION, max_version=PROTOCOL_VERSION,
            capabilities=list(CAPABILITIES), max_message_size=proto.options.max_message_size,
        ).addCallbacks(self._hello_answered, self._refused)

    def _hello_answered(self, answer: dict[str, Any]) -> None:
        if self.result.called:
            return
        assert self.proto is not None and self.session is not None
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
        self.session.adopt_window(answer["window"], self.proto.outgoing_limit)
        self.proto.phase = "serving"
        self.proto.call(
            Login, username=self.connector.name,
            response=login_response(self.connector.password, answer["challenge"]),
        ).addCallbacks(self._logged_in, self._refused)
        return None

    def _logged_in(self, answer: dict[str, Any]) -> None:
        if self.session is not None and not self.result.called:
            self.session.logged_in = True
            self.succeeded(self.session)

    def _refused(self, failure: Failure) -> None:
        self.refused(translate_failure(failure))


class AMPConnector(BaseWorkerConnector):
    """Dials an amp master at a client endpoint string and serves a bot.

    :param window: the most update bytes in flight unanswered (the master may
        ask for less).
    :raises AddressError: *address* is not a client endpoint string.
    """

    backendName = "amp"

    def __init__(self, bot: WorkerBot, address: str, name: str, password: str,
                 options: LinkOptions | None = None, reactor: Any = None, backoff: Backoff | None = None,
                 window: int | None = None, backend_name: str | None = None):
        super().__init__(bot, address, name, password, options, reactor, backoff, backend_name)
        # Default: the shared option (LinkOptions.output_window), so the window
        # is configured like every other link option.
        self.window = self.options.output_window if window is None else window
        if self.window < 1:
            raise ValueError("window must be positive")
        self.endpoint = parse_client_address(self.reactor, address, self.backendName)

    @property
    def session(self) -> _Session | None:
        """The logged-in session, if any (for tests and diagnostics)."""
        return self._session  # type: ignore[return-value]

    def connect_once(self) -> Deferred[WorkerSession]:
        return _Attempt(self).start()
