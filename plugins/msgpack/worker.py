"""Worker side of the msgpack backend: dials a master's WebSocket and serves a bot.

The login is the upgrade request's ``Authorization: Basic`` header, one
attempt of core's :class:`~workerwire.worker_link.WorkerLink` (its timeout,
cancelling, outcome and loss are core's).  Against a
workerwire master (it answers the upgrade with ``X-Workerwire-Dialect``) the
login has finished when the master's ``ww_attached`` request arrives, and a
refusal after the upgrade arrives as WebSocket close code 4003 with the reason;
against a stock Buildbot master the login has finished when the WebSocket is
open (Buildbot has nothing later to wait for).  The master's calls are served
from the moment the WebSocket is open.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, ClassVar

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire.addresses import split_description
from workerwire.backend import LinkOptions
from workerwire.backoff import Backoff
from workerwire.base_worker import BaseCommandChannel, BaseWorkerConnector, WorkerSession, builder_pairs, call_bot_now
from workerwire.errors import ConnectionLost, LoginRefused, ProtocolError, error_from_wire, error_to_wire
from workerwire.flow import approx_size
from workerwire.login_guard import GENERIC_REFUSAL
from workerwire.master import Update
from workerwire.transfer import attach_proxies
from workerwire.worker import WorkerBot
from workerwire.worker_link import WorkerLink

from .buildbot import (
    COMMAND_NAMES_FROM_MASTER,
    ROOT_BUILDER,
    TRANSFER_COMMANDS,
    absolute_transfer_paths,
    stock_transfer_message,
    updates_for_stock_master,
)
from .errors import translate_failure
from .wire import (
    CLOSE_REFUSED,
    DIALECT_HEADER,
    DIALECT_VERSION,
    MAX_MESSAGE_HEADER,
    PART_SIZE,
    WINDOW_HEADER,
    MessageLink,
)

__all__ = ["MsgpackConnector", "WorkerProtocol", "websocket_url"]

_log = Logger()

#: Most bytes of updates in one ``update`` message.
BATCH = 1024 * 1024


def websocket_url(address: str) -> str:
    """The ``ws://`` / ``wss://`` URL (for the upgrade's Host header) of a client endpoint string."""
    try:
        scheme, _, kwargs = split_description(address)
    except Exception:
        scheme, kwargs = "tcp", {}
    host = kwargs.get("host", "localhost")
    if ":" in host:
        host = f"[{host}]"
    port = kwargs.get("port", "")
    return f"{'wss' if scheme == 'tls' else 'ws'}://{host}{':' + port if port else ''}/"


class _Channel(BaseCommandChannel):
    """One running command's way back to the master, through the session's window."""

    def __init__(self, session: "_Link", builderName: str, commandId: str):
        super().__init__(builderName, commandId)
        self._session = session
        self._label = f"an update of command {commandId!r}"

    def send_update(self, updates: list[Update]) -> Deferred[None]:
        return self._session.window.send_mergeable(self, approx_size(updates), updates, self._send_batch, self._label)

    def _send_batch(self, batches: list[list[Update]]) -> Deferred[Any]:
        pairs = [pair for batch in batches for pair in batch]
        proto = self._session.proto
        args: list[Any] = (updates_for_stock_master(pairs) if not proto.extended
                           else [[key, value] for key, value in pairs])
        return proto.request("update", command_id=self.commandId, args=args)

    def send_complete(self, failure: BaseException | None) -> Deferred[None]:
        self._session.forget_channel(self)
        proto = self._session.proto
        fields: dict[str, Any] = {"command_id": self.commandId, "args": None}
        if failure is not None:
            type_name, message = error_to_wire(failure)
            fields["args"] = f"{type_name}: {message}"
            if proto.extended:
                fields["error"] = [type_name, message]
        return self._session.window.send_ordered(lambda: proto.request("complete", **fields),
                                                 label=f"the completion of command {self.commandId!r}")


class _Link(WorkerLink):
    """One dial, upgrade and login (core's :class:`WorkerLink`); once logged
    in, the session: the WebSocket to the master."""

    connector: "MsgpackConnector"

    def __init__(self, connector: "MsgpackConnector"):
        super().__init__(connector, translate=translate_failure, batch_limit=BATCH)
        self._proto: WorkerProtocol | None = None
        #: Builders told to the bot for a stock master (all at the base directory).
        self.stock_builders: dict[str, str] = {}

    @property
    def proto(self) -> "WorkerProtocol":
        """The protocol; it exists from the connection on (the session's calls come later)."""
        assert self._proto is not None, "no protocol before the connection"
        return self._proto

    def build_factory(self) -> "_ClientFactory":
        return _ClientFactory(self.connector, self)

    def connected(self, proto: "WorkerProtocol") -> None:
        self._proto, self.peer = proto, proto.stream.peer  # the upgrade, which is the login, is under way

    def keepalive(self) -> Deferred[None]:
        if self.proto.extended:
            return self.settled(self.proto.request("keepalive"))
        # A stock Buildbot master has no keepalive request for workers; every
        # WebSocket peer answers a ping.
        return self.proto.ping()

    def request_shutdown(self) -> Deferred[None]:
        if not self.proto.extended:
            return fail(ProtocolError(
                "a Buildbot master's msgpack dialect has no worker-initiated shutdown "
                "(its master answers 'Command shutdown does not exist.'); stop the worker instead"))
        return self.settled(self.proto.request("shutdown"))

    def close(self, abort: bool = False) -> None:
        if self._proto is not None:
            self._proto.close(abort=abort)

    def with_stock_handle(self, command_id: str, command_name: str, args: dict[str, Any]) -> dict[str, Any]:
        """*args* with a proxy for the handle a stock master keeps for a
        transfer command (it sends none): carried as the command's name, whose
        transfer messages name the command (core's :attr:`carried`)."""
        key = TRANSFER_COMMANDS.get(command_name)
        return args if key is None else {**args, key: self.carried.proxy(command_id, key, command_name)}

    def send_transfer(self, command_id: str, handle_id: int, method: str, args: list[Any]) -> Deferred[Any]:
        if self.proto.extended:
            d = self.proto.request("ww_transfer", command_id=command_id, handle=handle_id, method=method, args=args)
        else:
            try:
                command_name = self.carried.carrier(command_id, handle_id)
                fields = stock_transfer_message(command_name, TRANSFER_COMMANDS[command_name], method, args)
            except ProtocolError as e:
                return fail(e)
            d = self.proto.request(fields.pop("op"), command_id=command_id, **fields)
        return d.addErrback(translate_failure)


# autobahn's own bases disagree on peer / _transport_details (see MessageLink).
class WorkerProtocol(MessageLink, WebSocketClientProtocol):  # type: ignore[misc]
    """The worker's end of the WebSocket: serves the master's requests."""

    side = "worker"

    def __init__(self, connector: "MsgpackConnector", link: _Link):
        WebSocketClientProtocol.__init__(self)
        self.link_setup(connector.options, connector.reactor)
        self.connector = connector
        self.link = link
        self.bot: WorkerBot = connector.bot
        #: The link, once the WebSocket is open (the master's calls are served from then on).
        self.session: _Link | None = None
        self.window = connector.options.output_window
        self.refused_status: int | None = None
        self.on_traffic = connector.on_traffic
        self.stream.link_bytes = connector.link_bytes

    def who(self) -> str:
        return f"master at {self.stream.peer}"

    def _str(self, msg: dict[str, Any], key: str) -> str:
        value = msg.get(key)
        if not isinstance(value, str):
            error = ProtocolError(f"{msg['op']} needs {key!r} as a string")
            self.protocol_error(error)
            raise error
        return value

    # -- the upgrade ------------------------------------------------------------

    def onConnect(self, response: Any) -> None:
        headers = response.headers
        self.extended = headers.get(DIALECT_HEADER.lower()) == DIALECT_VERSION
        if self.extended:
            try:
                self.peer_max_message_size = max(1024, int(headers.get(MAX_MESSAGE_HEADER.lower(), "")))
                self.window = max(1024, int(headers.get(WINDOW_HEADER.lower(), "")))
            except ValueError:
                self.extended = False
                raise ProtocolError(f"the master's {MAX_MESSAGE_HEADER} / {WINDOW_HEADER} headers are not integers")

    def failHandshake(self, reason: str, *args: Any, **kwargs: Any) -> None:
        status_line = getattr(self, "http_status_line", "") or ""
        parts = status_line.split()
        if len(parts) > 1 and parts[1].isdigit():
            self.refused_status = int(parts[1])
        super().failHandshake(reason, *args, **kwargs)

    def onOpen(self) -> None:
        self.link_opened()
        self.session = session = self.link
        session.adopt_window(self.window, self.peer_max_message_size - 4096)
        if not self.extended:
            session.login_succeeded()  # Buildbot's master has nothing later to say

    def _attached(self, msg: dict[str, Any]) -> None:
        self.link.login_succeeded()

    def link_lost(self, reason: str, code: int | None, text: str | None) -> None:
        if code == CLOSE_REFUSED:
            self.link.failed(_refusal(text or GENERIC_REFUSAL))
        elif self.refused_status in (401, 403):
            self.link.failed(LoginRefused(f"{GENERIC_REFUSAL} (HTTP {self.refused_status})"))
        elif self.refused_status is not None:
            self.link.failed(ConnectionLost(f"the master refused the WebSocket upgrade (HTTP {self.refused_status})"))
        self.link.lost(reason)  # during the login: the attempt's failure, unless one came first

    # -- requests from the master ------------------------------------------------

    def _set_builder_list(self, msg: dict[str, Any]) -> Deferred[Any]:
        assert self.session is not None
        try:
            builders = builder_pairs(msg.get("builders"))
        except ProtocolError as error:
            self.protocol_error(error)
            raise
        return self.session.set_builder_list(builders)

    def _start_command(self, msg: dict[str, Any]) -> Any:
        session = self.session
        assert session is not None
        command_id = self._str(msg, "command_id")
        name = self._str(msg, "command_name")
        args = msg.get("args")
        if not isinstance(args, dict):
            raise ProtocolError("start_command needs 'args' as a map")
        builder = msg.get("builder_name")
        if self.extended:
            builder = self._str(msg, "builder_name")
            handles = msg.get("handles")
            if handles is not None:
                args = attach_proxies(args, handles, session.transfers, command_id)
            return self._run(session, builder, command_id, name, args)
        # A stock Buildbot master: builder-less commands of its builder-list
        # emulation, absolute paths, Buildbot's names for the transfers.
        builder = builder if isinstance(builder, str) and builder else ROOT_BUILDER
        name = COMMAND_NAMES_FROM_MASTER.get(name, name)
        args = absolute_transfer_paths(name, args)
        args = session.with_stock_handle(command_id, name, args)
        if builder in session.stock_builders:
            return self._run(session, builder, command_id, name, args)
        session.stock_builders[builder] = "."
        d = session.set_builder_list(sorted(session.stock_builders.items()))
        return d.addCallback(lambda _: self._run(session, builder, command_id, name, args))

    def _run(self, session: _Link, builder: str, command_id: str, name: str,
             args: dict[str, Any]) -> Deferred[Any]:
        return session.start_command(_Channel(session, builder, command_id), name, args)

    def _interrupt_command(self, msg: dict[str, Any]) -> Any:
        command_id = self._str(msg, "command_id")
        builder = msg.get("builder_name")
        if not isinstance(builder, str):
            channel = self.session.channels.get(command_id) if self.session else None
            builder = channel.builderName if channel is not None else ROOT_BUILDER
        why = msg.get("why")
        return call_bot_now(self.bot, "interruptCommand", builder, command_id, str(why))

    # call_bot_now: a bot that answers at once is answered at once (no
    # Deferred per call); its exception becomes the error answer.
    handlers: ClassVar[dict[str, Callable[[Any, dict[str, Any]], Any]]] = {
        "print": lambda self, msg: call_bot_now(self.bot, "print", self._str(msg, "message")),
        "keepalive": lambda self, msg: None,
        "get_worker_info": lambda self, msg: call_bot_now(self.bot, "getWorkerInfo"),
        "set_worker_settings": lambda self, msg: None,  # Buildbot's line buffering; this worker sends as it goes
        "set_builder_list": _set_builder_list,
        "start_build": lambda self, msg: call_bot_now(self.bot, "startBuild", self._str(msg, "builder_name")),
        "start_command": _start_command,
        "interrupt_command": _interrupt_command,
        "shutdown": lambda self, msg: call_bot_now(self.bot, "shutdown"),
        "ww_attached": _attached,
    }


def _refusal(reason: str) -> LoginRefused:
    """A workerwire master's close reason ("<error type>: <message>") as the refusal it names."""
    type_name, sep, message = reason.partition(": ")
    error = error_from_wire(type_name, message) if sep else None
    return error if isinstance(error, LoginRefused) else LoginRefused(reason)


class _ClientFactory(WebSocketClientFactory):
    def __init__(self, connector: "MsgpackConnector", link: _Link):
        credentials = f"{connector.name}:{connector.password}".encode("utf-8")
        super().__init__(connector.url, headers={
            "Authorization": "Basic " + base64.b64encode(credentials).decode("ascii"),
            DIALECT_HEADER: DIALECT_VERSION,
            MAX_MESSAGE_HEADER: str(connector.options.max_message_size),
        })
        self.noisy = False
        self.connector = connector
        self.link = link
        limit = max(connector.options.max_message_size, PART_SIZE + 1024)
        self.setProtocolOptions(maxMessagePayloadSize=limit, maxFramePayloadSize=limit,
                                openHandshakeTimeout=0,
                                closeHandshakeTimeout=min(5.0, connector.options.keepalive_timeout),
                                # Text messages are refused as they are (a protocol error).
                                utf8validateIncoming=False)

    def buildProtocol(self, addr: Any) -> WorkerProtocol:
        proto = WorkerProtocol(self.connector, self.link)
        proto.factory = self
        return proto


class MsgpackConnector(BaseWorkerConnector):
    """Dials a msgpack master (a workerwire master or a stock Buildbot one) at a
    client endpoint string and serves a bot.

    :raises AddressError: *address* is not a client endpoint string.
    """

    backendName = "msgpack"
    dials_address = True  # core parses the address into self.endpoint

    def __init__(self, bot: WorkerBot, address: str, name: str, password: str,
                 options: LinkOptions | None = None, reactor: Any = None, backoff: Backoff | None = None):
        super().__init__(bot, address, name, password, options, reactor, backoff)
        if ":" in name:
            raise ValueError("a msgpack worker name cannot contain ':' (HTTP Basic authentication)")
        self.url = websocket_url(address)

    def connect_once(self) -> Deferred[WorkerSession]:
        return _Link(self).start()
