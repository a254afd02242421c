"""Master side of the msgpack backend: one WebSocket port per port string.

The login is the HTTP upgrade (Basic authentication); until the credentials
are verified the listener's :mod:`~workerwire.login_guard` caps the
connection's input, its time and the connections per host, and delays
repeated refusals.  A wrong password is answered ``401`` before any
WebSocket exists.  Good credentials open the WebSocket; then the connection
is offered to the master (``listener.attach``), which may already call the
worker; a refusal then (a duplicate worker) closes the WebSocket with code
4003 and the reason.  A workerwire worker is told the login finished with a
``ww_attached`` request.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, ClassVar

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from workerwire.addresses import bound_port_of, client_address_for
from workerwire.backend import LinkOptions
from workerwire.base_connection import BaseConnection
from workerwire.base_listener import BaseListener, OpenPort
from workerwire.buildbot_dialect import worker_info
from workerwire.endpoints import parse_server_port
from workerwire.errors import AddressError, LoginRefused, ProtocolError, RemoteCallFailed, error_from_wire, error_to_wire
from workerwire.flow import ReceiveWindow
from workerwire.login_guard import GENERIC_REFUSAL, CloseAtOnce, LoginTicket, refusal_reason
from workerwire.master import MasterHooks
from workerwire.tls import dial_address
from workerwire.transfer import split_refs

from .buildbot import STOCK_TRANSFER_OPS, WORKER_SETTINGS, StockWorkerPaths, updates_from_stock_worker
from .errors import translate_failure
from .wire import CLOSE_REFUSED, DIALECT_HEADER, DIALECT_VERSION, MAX_MESSAGE_HEADER, WINDOW_HEADER, MessageLink

__all__ = ["MsgpackListener", "MsgpackConnection", "MasterProtocol", "parse_basic_auth"]

_log = Logger()


def parse_basic_auth(value: str) -> tuple[str, str]:
    """``(name, password)`` of an HTTP ``Authorization: Basic`` header.

    :raises ValueError: not Basic, not base64, not UTF-8 or without a colon.
    """
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        raise ValueError("the Authorization header must be 'Basic <base64 of name:password>'")
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except Exception:
        raise ValueError("the Authorization header's credentials are not base64 of UTF-8 text") from None
    name, colon, password = text.partition(":")
    if not colon or not name:
        raise ValueError("the Authorization header's credentials must be 'name:password'")
    return name, password


class MsgpackConnection(BaseConnection):
    """One worker logged in over msgpack."""

    def __init__(self, listener: "MsgpackListener", workerName: str, proto: "MasterProtocol"):
        super().__init__(listener.master, workerName, "msgpack", listener.options, listener.reactor)
        self._proto = proto
        self.link_bytes = proto.stream.link_bytes
        #: Set for a stock buildbot-worker, whose paths the master makes absolute.
        self.stock: StockWorkerPaths | None = None if proto.extended else StockWorkerPaths()
        self._settings_sent = False
        #: Commands of the builder-list emulation: command id -> collected updates.
        self._internal: dict[str, tuple[dict[str, Any], Deferred[dict[str, Any]]]] = {}
        self._next_internal = 0

    def get_peer(self) -> str:
        return self._proto.stream.peer

    # -- primitives ---------------------------------------------------------

    def call_print(self, message: str) -> Deferred[Any]:
        return self._proto.request_done("print", message=message)

    def call_get_worker_info(self) -> Deferred[dict[str, Any]]:
        def got(answer: Any) -> dict[str, Any]:
            info = worker_info(answer)
            if self.stock is not None:
                self.stock.info = info
            return info

        return self._proto.request("get_worker_info").addCallback(got)

    def call_set_builder_list(self, builders: list[list[str]]) -> Deferred[list[str]]:
        if self.stock is None:
            return self._proto.request("set_builder_list", builders=builders)
        return ensureDeferred(self._emulate_set_builder_list(builders))

    def call_start_build(self, builderName: str) -> Deferred[Any]:
        if self.stock is None:
            return self._proto.request_done("start_build", builder_name=builderName)
        self.stock.builder_dir(builderName)  # Buildbot sends nothing; an unknown builder still fails here
        return succeed(None)

    def call_start_command(self, builderName: str, commandId: str, commandName: str,
                              args: dict[str, Any]) -> Deferred[Any]:
        plain, handles = split_refs(args)
        fields: dict[str, Any] = {}
        if self.stock is not None:
            # Buildbot keeps the writer/reader on the master and takes them out of
            # the args; its transfer messages name the command (core's table finds the handle).
            commandName, plain = self.stock.translate(builderName, commandName, plain)
        elif handles:
            fields["handles"] = handles
        return self._proto.request_done("start_command", builder_name=builderName, command_id=commandId,
                                        command_name=commandName, args=plain, **fields)

    def call_interrupt_command(self, builderName: str, commandId: str, why: str) -> Deferred[Any]:
        return self._proto.request_done("interrupt_command", builder_name=builderName, command_id=commandId,
                                        why=why)

    def call_shutdown(self) -> Deferred[Any]:
        return self._proto.request_done("shutdown")

    def call_keepalive(self) -> Deferred[Any]:
        return self._proto.request_done("keepalive")

    def lose_connection(self, abort: bool) -> None:
        self._proto.close(abort=abort)

    def translate_failure(self, failure: Failure) -> Failure:
        return translate_failure(failure)

    # -- a stock worker's builder list ----------------------------------------

    async def _emulate_set_builder_list(self, builders: list[list[str]]) -> list[str]:
        """What Buildbot's master does for ``remoteSetBuilderList`` over msgpack:
        settings once, ``listdir`` of the base directory, ``mkdir`` of the missing
        builder directories (leftovers are left alone)."""
        stock = self.stock
        assert stock is not None
        if stock.info is None:
            await self.call_get_worker_info()
        if not self._settings_sent:
            await self._proto.request("set_worker_settings", args=dict(WORKER_SETTINGS))
            self._settings_sent = True
        basedir = stock.basedir
        listing = await self._internal_command("listdir", {"path": str(basedir)})
        present = set(listing.get("files") or [])
        wanted = {builddir for _, builddir in builders} | {"info"}
        missing = sorted(d for d in wanted if d not in present)
        if missing:
            await self._internal_command("mkdir", {"paths": [str(basedir.joinpath(d)) for d in missing]})
        stock.builder_dirs = {name: basedir.joinpath(builddir) for name, builddir in builders}
        return [name for name, _ in builders]

    async def _internal_command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        command_id = f"ww-builder-list-{self._next_internal}"
        self._next_internal += 1
        done: Deferred[dict[str, Any]] = Deferred()
        self._internal[command_id] = ({}, done)
        try:
            await self._proto.request("start_command", command_id=command_id, command_name=name, args=args)
        except Exception:
            self._internal.pop(command_id, None)
            raise
        return await done

    def _internal_update(self, command_id: str, updates: list[Any]) -> bool:
        entry = self._internal.get(command_id)
        if entry is None:
            return False
        for key, value in updates:
            entry[0].setdefault(key, value)
        return True

    def _internal_complete(self, command_id: str, error: Any) -> bool:
        entry = self._internal.pop(command_id, None)
        if entry is None:
            return False
        results, done = entry
        rc = results.get("rc")
        if error is not None or rc != 0:
            done.errback(Failure(RemoteCallFailed(
                "RemoteWorkerError", f"the worker could not set up its builder directories "
                f"(rc {rc!r}{', ' + str(error) if error else ''})")))
        else:
            done.callback(results)
        return True

    def _internal_lost(self) -> None:
        internal, self._internal = self._internal, {}
        for _, done in internal.values():
            done.errback(Failure(RemoteCallFailed("ConnectionLost", "the link closed during the builder list")))

    # -- from the worker ------------------------------------------------------

    def worker_update(self, msg: dict[str, Any]) -> Any:
        command_id, args = msg.get("command_id"), msg.get("args")
        if not isinstance(command_id, str):
            raise ProtocolError("update without a command_id string")
        if self.stock is not None:
            pairs = updates_from_stock_worker(args)
            if self._internal_update(command_id, pairs):
                return None
        else:
            if not isinstance(args, list) or not all(
                    isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in args):
                raise ProtocolError("update args must be a list of [key, value] pairs")
            pairs = [(key, value) for key, value in args]
        pending = self.on_update(command_id, pairs)
        return pending.addCallback(lambda _: None) if isinstance(pending, Deferred) else None

    def worker_complete(self, msg: dict[str, Any]) -> None:
        command_id = msg.get("command_id")
        if not isinstance(command_id, str):
            raise ProtocolError("complete without a command_id string")
        args = msg.get("args")
        if self.stock is not None and self._internal_complete(command_id, args):
            return None
        error = None
        detail = msg.get("error")
        if isinstance(detail, list) and len(detail) >= 2 and all(isinstance(p, str) for p in detail[:3]):
            error = error_from_wire(detail[0], detail[1], detail[2] if len(detail) > 2 else None)
        elif args is not None:
            error = RemoteCallFailed("Failure", str(args))
        self.on_complete(command_id, error)
        return None

    def worker_transfer(self, msg: dict[str, Any]) -> Deferred[Any]:
        """``ww_transfer {command_id, handle, method, args}`` from a workerwire worker."""
        command_id, args = msg.get("command_id"), msg.get("args")
        if not isinstance(command_id, str) or not isinstance(msg.get("method"), str) or not isinstance(args, list):
            raise ProtocolError("ww_transfer needs command_id (str), handle (int), method (str) and args (list)")
        return self.on_transfer_call(command_id, msg.get("handle"), msg["method"], args)

    def stock_transfer(self, msg: dict[str, Any]) -> Deferred[Any]:
        """One of Buildbot's ``update_upload_*`` / ``update_read_file*`` messages."""
        key, method, arg_keys = STOCK_TRANSFER_OPS[msg["op"]]
        command_id = msg.get("command_id")
        handle = self.transfer_handles.of_command(command_id, key) if isinstance(command_id, str) else None
        if handle is None:
            raise ProtocolError(f"{msg['op']} for command {command_id!r}, which has no {key} handle")
        if method == "utime":
            args: list[Any] = [[msg.get("access_time"), msg.get("modified_time")]]
        else:
            args = [msg.get(k) for k in arg_keys]
        return self.on_transfer_call(command_id, handle, method, args)

    def on_connection_lost(self, reason: str = "connection closed") -> None:
        self._internal_lost()
        super().on_connection_lost(reason)


@implementer(IRealm)
class _Realm:
    def requestAvatar(self, avatarId: bytes | tuple[()], mind: Any, *interfaces: Any) -> Any:
        if not isinstance(avatarId, bytes):  # twisted.cred's ANONYMOUS: no checker here answers it
            raise NotImplementedError("a msgpack login names its worker")
        return (Interface, avatarId.decode("utf-8"), lambda: None)


# autobahn's own bases disagree on peer / _transport_details (see MessageLink).
class MasterProtocol(MessageLink, WebSocketServerProtocol):  # type: ignore[misc]
    """The master's end of one worker's WebSocket."""

    side = "master"

    def __init__(self, listener: "MsgpackListener", entry: OpenPort, ticket: LoginTicket):
        WebSocketServerProtocol.__init__(self)
        self.link_setup(listener.options, listener.reactor, listener.login_guard.stats)
        self.listener = listener
        self.entry = entry
        #: The login ticket until the login finished (the stream holds every
        #: read before the login to its input limit).
        self.stream.ticket = ticket
        self.conn: MsgpackConnection | None = None
        #: Updates received and not yet acknowledged (held by a slow master).
        #: A workerwire worker counts the window in its own estimate of the
        #: updates' size; the master allows twice the window (plus a batch)
        #: before it calls the worker hostile.
        self.received = ReceiveWindow(2 * listener.options.output_window + 1024 * 1024,
                                      listener.options.output_window)

    def on_traffic(self) -> None:  # a method, not a bound method kept per connection
        if self.conn is not None:
            self.conn.on_traffic()

    def connectionMade(self) -> None:
        self.listener._protocols.add(self)
        super().connectionMade()

    # -- the login: the HTTP upgrade --------------------------------------------

    #: The upgrade request was parsed and reached onConnect (which logs its own refusals).
    upgrade_parsed = False

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        if not self.upgrade_parsed:
            _log.warn("msgpack master: {peer} sent no valid WebSocket upgrade (the login): {reason}; closed",
                      peer=self.stream.peer, reason=reason[:200])
        super().failHandshake(reason, code, responseHeaders)

    # autobahn accepts a Deferred of the answer (its docstring says so) but
    # annotates onConnect with the plain answer only.
    def onConnect(self, request: Any) -> Deferred[Any]:  # type: ignore[override]
        self.upgrade_parsed = True
        return ensureDeferred(self._login(request))

    async def _login(self, request: Any) -> Any:
        ticket = self.stream.ticket
        value = request.headers.get("authorization")
        if value is None:
            if ticket is not None:
                await ticket.refused("?", "no Authorization header in the WebSocket upgrade")
            raise ConnectionDeny(401, "Unauthorized: HTTP Basic credentials (worker name and password) required")
        try:
            name, password = parse_basic_auth(value)
        except ValueError as e:
            if ticket is not None:
                await ticket.refused("?", str(e))
            raise ConnectionDeny(400, f"Bad request: {e}") from None
        if ticket is not None and not ticket.may_check():
            ticket.throttled(name)
            raise ConnectionDeny(401, GENERIC_REFUSAL)
        portal = Portal(_Realm(), [self.entry.checker])
        try:
            _, avatar, _ = await portal.login(UsernamePassword(name.encode("utf-8"), password.encode("utf-8")),
                                              self, Interface)
        except UnauthorizedLogin as e:
            if ticket is not None:
                await ticket.refused(name, refusal_reason(e))
            else:
                _log.warn("msgpack master: refused {name!r} from {peer}", name=name, peer=self.stream.peer)
            raise ConnectionDeny(401, GENERIC_REFUSAL) from None
        except Exception:
            _log.failure("msgpack master: checking the login of {name!r} failed", name=name)
            raise ConnectionDeny(500, "the master could not check the login") from None
        if ticket is not None:
            ticket.verified()
        self.stream.worker_name = str(avatar)  # log lines name the worker from here on
        self.extended = request.headers.get(DIALECT_HEADER.lower()) == DIALECT_VERSION
        if not self.extended:
            return None
        try:
            self.peer_max_message_size = max(1024, int(request.headers.get(MAX_MESSAGE_HEADER.lower(), "")))
        except ValueError:
            raise ConnectionDeny(400, f"Bad request: {MAX_MESSAGE_HEADER} must be an integer") from None
        return (None, {
            DIALECT_HEADER: DIALECT_VERSION,
            WINDOW_HEADER: str(self.listener.options.output_window),
            MAX_MESSAGE_HEADER: str(self.options.max_message_size),
        })

    def onOpen(self) -> None:
        self.link_opened()
        ensureDeferred(self._attach()).addErrback(
            lambda f: _log.failure("msgpack master: attaching {who} failed", f, who=self.who()))

    async def _attach(self) -> None:
        name = self.stream.worker_name
        assert name is not None
        self.conn = conn = MsgpackConnection(self.listener, name, self)
        try:
            await self.listener.attach(conn, self)
        except LoginRefused as e:
            self._done()
            type_name, message = error_to_wire(e)
            self.close_with(CLOSE_REFUSED, f"{type_name}: {message or GENERIC_REFUSAL}")
            return
        self._done()
        if self.extended and self.lost is None:
            self.request("ww_attached").addErrback(lambda _: None)

    def _done(self) -> None:
        if self.stream.ticket is not None:
            self.stream.ticket.done()
            self.stream.ticket = None

    def link_lost(self, reason: str, code: int | None, text: str | None) -> None:
        self._done()
        self.listener._protocols.discard(self)
        if self.conn is not None:
            self.conn.on_connection_lost(reason)

    # -- requests from the worker ----------------------------------------------

    def _connection(self) -> MsgpackConnection:
        if self.conn is None:
            raise ProtocolError("Worker not authenticated.")
        return self.conn

    def _update(self, msg: dict[str, Any]) -> Any:
        size = self.message_size
        try:
            if self.extended:
                self.received.admit(size)
            pending = self._connection().worker_update(msg)
        except ProtocolError as e:
            self.protocol_error(e)
            raise
        return self.received.hold(size, pending)

    def _complete(self, msg: dict[str, Any]) -> None:
        try:
            self._connection().worker_complete(msg)
        except ProtocolError as e:
            self.protocol_error(e)
            raise

    def _keepalive(self, msg: dict[str, Any]) -> None:
        self._connection().on_worker_keepalive()

    def _shutdown_request(self, msg: dict[str, Any]) -> None:
        self._connection().on_shutdown_request()

    def _transfer(self, msg: dict[str, Any]) -> Any:
        return self._connection().worker_transfer(msg)

    def _stock_transfer(self, msg: dict[str, Any]) -> Any:
        return self._connection().stock_transfer(msg)

    handlers: ClassVar[dict[str, Callable[[Any, dict[str, Any]], Any]]] = {
        "update": _update,
        "complete": _complete,
        "keepalive": _keepalive,
        "shutdown": _shutdown_request,
        "ww_transfer": _transfer,
        **dict.fromkeys(STOCK_TRANSFER_OPS, _stock_transfer),
    }


class _Factory(WebSocketServerFactory):
    def __init__(self, listener: "MsgpackListener", entry: OpenPort):
        super().__init__()
        self.listener = listener
        self.entry = entry
        self.noisy = False
        self.setProtocolOptions(
            maxMessagePayloadSize=listener.options.max_message_size,
            maxFramePayloadSize=listener.options.max_message_size,
            # The login guard times the upgrade; the close handshake is bounded by keepalive_timeout.
            openHandshakeTimeout=0,
            closeHandshakeTimeout=min(5.0, listener.options.keepalive_timeout),
            # Text messages are refused as they are (a protocol error), valid UTF-8 or not.
            utf8validateIncoming=False,
        )

    def buildProtocol(self, addr: Any) -> Any:
        box: list[MasterProtocol] = []

        def close() -> None:
            if box and box[0].transport is not None:
                box[0].stream.closing = True
                box[0].transport.abortConnection()

        ticket = self.listener.login_guard.admit(addr, close)
        if ticket is None:
            return CloseAtOnce()
        proto = MasterProtocol(self.listener, self.entry, ticket)
        proto.factory = self
        proto.stream.link_bytes = self.listener.link_totals.open()
        box.append(proto)
        return proto


class MsgpackListener(BaseListener):
    """Listens on server endpoint strings (``tcp:9989``, ``ssl:...``); Buildbot's
    bare port number is accepted too."""

    backendName = "msgpack"

    def __init__(self, master: MasterHooks, options: LinkOptions | None = None, reactor: Any = None):
        super().__init__(master, options, reactor)
        self._protocols: set[MasterProtocol] = set()

    def _check_port_str(self, portStr: str) -> None:
        parse_server_port(self.reactor, portStr, "msgpack")

    def _open_port(self, entry: OpenPort) -> Deferred[None]:
        return ensureDeferred(self._open(entry))

    async def _open(self, entry: OpenPort) -> None:
        endpoint = parse_server_port(self.reactor, entry.port_str, "msgpack")
        try:
            port = await endpoint.listen(self.login_guard.guarded(_Factory(self, entry)))
        except CannotListenError as e:
            raise AddressError(f"cannot listen on {entry.port_str!r}: {e.socketError or e}") from None
        entry.listening = port
        host = port.getHost()
        entry.port = bound_port_of(host)
        entry.address = dial_address(entry.port_str, client_address_for(host))
        _log.info("msgpack master: listening on {address} ({port_str})", address=entry.address,
                  port_str=entry.port_str)

    def _close_port(self, entry: OpenPort) -> Deferred[None]:
        return maybeDeferred(entry.listening.stopListening)

    def stopListening(self) -> Deferred[None]:
        """As the contract says; also drops connections that have not logged in."""
        d = super().stopListening()

        def drop_unauthenticated(result: object) -> object:
            for proto in list(self._protocols):
                if proto.conn is None:
                    proto.close(abort=True)
            return result

        return d.addBoth(drop_unauthenticated)
