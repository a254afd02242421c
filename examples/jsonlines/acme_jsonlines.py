"""A minimal reference backend, written against ``workerwire.backend_api`` only: one flat JSON object per
line over TCP, both ways ``{"call": ID, "method": NAME, "args": B64}`` answered by ``{"answer": ID, "result":
B64}`` or ``{"error": ID, "type": NAME, "message": TEXT}`` (B64: base64 of the ``workerwire.values`` encoding).
The worker calls ``hello`` (-> challenge), ``login(name, HMAC-SHA256(password, challenge))``, then ``update``,
``complete``, ``keepalive``, ``shutdown``, ``transfer``; the master calls the contract's methods and ``ping``.
Entry point: ``acme-jsonlines = acme_jsonlines:backend``; the hostile-peer tests' frames: ``acme_jsonlines_raw``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Callable

from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.protocol import Factory, Protocol

from workerwire.backend_api import (Backend, BaseCommandChannel, BaseConnection, BaseListener, BaseWorkerConnector,
                                   ChallengeResponse, LinkOptions, OpenPort, PendingRequests, StreamLink,
                                   StreamServerFactory, WorkerLink, WorkerSession, call_bot, describe_peer,
                                   login_response, new_challenge, serve_request, update_pairs)
from workerwire.errors import ConnectionLost, LoginRefused, ProtocolError, error_from_wire, error_to_wire
from workerwire.flow import approx_size
from workerwire.transfer import attach_proxies, split_refs
from workerwire.values import decode, encode

#: JSON strings: a line without them must be one flat object (json.loads recurses: check nesting first).
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _pack(value: Any) -> str:
    return base64.b64encode(encode(value)).decode("ascii")


def _unpack(text: str, limit: int, framing: int = 0) -> Any:  # a TypeError for a non-string: malformed
    return decode(base64.b64decode(text, validate=True), limit, framing)


class Line(Protocol):
    """Calls and answers; *serve(method, args)* answers the peer's calls (a value or a Deferred of one)."""

    def __init__(self, options: LinkOptions, serve: Callable[[str, list[Any]], Any], stream: StreamLink):
        self.options = options
        self.serve = serve
        self.stream = stream  # core's transport plumbing: TCP options, send budget, pre-login input limit
        self.max_line = options.max_message_size * 4 // 3 + 4096  # base64 and the JSON around it
        self.parts: list[bytes] = []  # of the line being received (no copy per read)
        self.size = 0
        self.pending: PendingRequests[int] = PendingRequests(int)  # calls sent, by id
        self.lost = False
        self.on_traffic: Callable[[], None] = lambda: None
        self.on_lost: Callable[[str], None] = lambda reason: None

    def call(self, method: str, *args: Any) -> Deferred[Any]:
        if self.lost:
            return fail(ConnectionLost("the link is closed"))
        try:
            line = json.dumps({"call": (call_id := self.pending.new_tag()), "method": method,
                               "args": _pack(list(args))}).encode()
        except Exception as e:
            return fail(e)
        if len(line) > self.max_line:
            return fail(ProtocolError(f"{method} of {len(line)} bytes exceeds the message limit"))
        d = self.pending.wait(call_id)
        self.send(line)
        return d

    def close(self, abort: bool = False) -> None:
        if not self.lost:
            self.stream.close(abort)

    def connectionMade(self) -> None:
        self.stream.made(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.stream.read(data, lambda why: self.protocol_error(ProtocolError(why))):
            self.split(data)
            self.stream.after_read()

    def split(self, data: bytes) -> None:
        start = 0
        while not self.lost:
            end = data.find(b"\n", start)
            if end < 0:
                self.parts.append(data[start:])
                self.size += len(data) - start
                if self.size > self.max_line:
                    self.protocol_error(ProtocolError(f"a message longer than {self.max_line} bytes"))
                return
            self.parts.append(data[start:end])
            line, self.parts, self.size = b"".join(self.parts), [], 0
            start = end + 1
            self.lineReceived(line)

    def lineReceived(self, line: bytes) -> None:
        self.on_traffic()
        try:
            rest = _STRINGS.sub(b"", line)
            if rest.count(b"{") + rest.count(b"[") > 1:
                raise ProtocolError("a message must be one JSON object of strings and numbers, nested in nothing")
            msg, limit = json.loads(line), self.options.max_message_size
            if "call" in msg:  # values count their nesting from themselves, not from [id, [[key, value]]]
                self._dispatch(int(msg["call"]), str(msg["method"]), _unpack(msg["args"], limit, 3))
            elif "answer" in msg:
                self.pending.answered(msg["answer"], "answer to call").callback(_unpack(msg["result"], limit))
            else:
                error = error_from_wire(str(msg["type"]), str(msg["message"]))
                self.pending.answered(msg["error"], "answer to call").errback(error)
        except Exception as e:
            self.protocol_error(e if isinstance(e, ProtocolError) else ProtocolError(f"malformed message: {e}"))

    def protocol_error(self, error: ProtocolError) -> None:
        self.stream.protocol_error(str(error), "acme-jsonlines")

    def _dispatch(self, call_id: int, method: str, args: Any) -> None:
        if not isinstance(args, list):
            raise ProtocolError("call arguments must be a list")
        serve_request(lambda: self.serve(method, args), lambda result: self._answer(result, call_id),
                      lambda exc: self._error(exc, call_id))

    def _answer(self, result: Any, call_id: int) -> None:
        if not self.lost:  # a result that does not encode is answered as an error
            self.send(json.dumps({"answer": call_id, "result": _pack(result)}).encode())

    def _error(self, exc: BaseException, call_id: int) -> None:
        if not self.lost:
            kind, message = error_to_wire(exc)
            self.send(json.dumps({"error": call_id, "type": kind, "message": message}).encode())

    def send(self, line: bytes) -> None:
        self.transport.writeSequence([line, b"\n"])  # type: ignore[union-attr]
        self.stream.link_bytes.sent += len(line) + 1

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        self.stream.gone()
        self.pending.fail_all(ConnectionLost("connection lost"))
        self.on_lost(self.stream.drop_reason or (reason.getErrorMessage() if reason is not None else "connection closed"))


def _forward(method: str) -> Any:
    return lambda self, *args: self.line.call(method, *args)


class JsonConnection(BaseConnection):
    def __init__(self, listener: "JsonListener", name: str, line: Line):
        super().__init__(listener.master, name, listener.backendName, listener.options, listener.reactor)
        self.line = line

    def get_peer(self) -> str:
        return describe_peer(self.line.transport)

    call_print, call_get_worker_info = _forward("print"), _forward("getWorkerInfo")
    call_set_builder_list, call_start_build = _forward("setBuilderList"), _forward("startBuild")
    call_interrupt_command, call_shutdown = _forward("interruptCommand"), _forward("shutdown")
    call_keepalive = _forward("ping")

    def call_start_command(self, builderName: str, commandId: str, commandName: str,
                           args: dict[str, Any]) -> Deferred[Any]:
        plain, handles = split_refs(args)
        return self.line.call("startCommand", builderName, commandId, commandName, plain, handles)

    def lose_connection(self, abort: bool) -> None:
        self.line.close(abort)

    def serve(self, method: str, args: list[Any]) -> Any:
        """The worker's calls, once logged in."""
        if method == "update":  # the answer waits for a Deferred; a window overrun is a protocol error
            size = approx_size(updates := update_pairs(args[1]))
            try:
                self.receive_window.admit(size)
            except ProtocolError as e:
                self.line.protocol_error(e)
                raise
            result = self.on_update(str(args[0]), updates)
            self.receive_window.hold(size, result)
            return result
        if method == "complete":
            self.on_complete(str(args[0]), None if args[1] is None else error_from_wire(*args[1]))
        elif method == "keepalive":
            self.on_worker_keepalive()
        elif method == "shutdown":
            self.on_shutdown_request()
        elif method == "transfer":
            return self.on_transfer_call(str(args[0]), args[1], str(args[2]), list(args[3]))
        else:
            raise ProtocolError(f"unknown call {method!r} from the worker")
        return None


class JsonListener(BaseListener):
    backendName = "acme-jsonlines"

    def build_factory(self, entry: OpenPort) -> Factory:  # each connection's Line gets its login ticket
        return StreamServerFactory(self, entry, lambda: _MasterLogin(self, entry).line)


class _MasterLogin:
    """One accepted connection: ``hello``, ``login``, then its connection's calls."""

    def __init__(self, listener: JsonListener, entry: OpenPort):
        self.listener, self.entry = listener, entry
        self.phase, self.challenge = "hello", b""
        self.conn: JsonConnection | None = None
        self.line = Line(listener.options, self.serve,
                         StreamLink(listener.options, listener.reactor, "acme-jsonlines master", listener.login_guard.stats))
        self.line.on_traffic = lambda: self.conn.on_traffic() if self.conn is not None else None
        self.line.on_lost = self.lost

    def serve(self, method: str, args: list[Any]) -> Any:
        if self.conn is not None:
            return self.conn.serve(method, args)
        if method == "hello" and self.phase == "hello":
            self.phase, self.challenge = "login", new_challenge()
            return self.challenge
        if method == "login" and self.phase == "login":
            self.phase = "checking"
            return ensureDeferred(self.login(str(args[0]), bytes(args[1]), self.challenge))
        self.line.protocol_error(ProtocolError(f"{method} before the login"))
        raise ProtocolError(f"{method} before the login")

    async def login(self, name: str, response: bytes, challenge: bytes) -> None:
        def connect(worker: str) -> JsonConnection:
            self.conn = JsonConnection(self.listener, worker, self.line)
            return self.conn

        try:
            await self.listener.log_in(self.entry, self.line.stream.ticket, ChallengeResponse(name, challenge, response), connect,
                                       self.line.close)
        except LoginRefused:
            self.conn = None
            raise

    def lost(self, reason: str) -> None:
        if self.conn is not None:
            self.conn.on_connection_lost(reason)


class _Channel(BaseCommandChannel):
    def __init__(self, attempt: "_Attempt", builderName: str, commandId: str):
        super().__init__(builderName, commandId)
        self.attempt = attempt

    def send_update(self, updates: list[Any]) -> Deferred[None]:
        line = self.attempt.line

        def send_many(batches: list[list[Any]]) -> Deferred[Any]:
            return line.call("update", self.commandId, [list(u) for batch in batches for u in batch])

        return self.attempt.window.send_mergeable(self, approx_size(updates), updates, send_many)

    def send_complete(self, failure: BaseException | None) -> Deferred[None]:
        self.attempt.forget_channel(self)
        error = None if failure is None else list(error_to_wire(failure))
        line = self.attempt.line
        return self.attempt.window.send_ordered(lambda: line.call("complete", self.commandId, error), key=self)


class _Attempt(WorkerLink):
    """One dial and login; once logged in, the session."""

    def __init__(self, connector: "JsonConnector"):
        super().__init__(connector)
        self.line = Line(connector.options, self.serve, StreamLink(connector.options, self.reactor, "acme-jsonlines worker"))
        self.line.on_traffic = connector.on_traffic
        self.line.on_lost = self.lost

    def build_factory(self) -> Factory:
        return Factory.forProtocol(lambda: self.line)

    def connected(self, line: Line) -> None:
        self.peer = describe_peer(line.transport)
        c = self.connector
        d = line.call("hello")
        d.addCallback(lambda challenge: line.call("login", c.name, login_response(c.password, challenge)))
        d.addCallbacks(lambda _: self.login_succeeded(), self.login_failed)

    def drop(self, abort: bool) -> None:
        self.line.close(abort)

    def send_transfer(self, command_id: str, handle_id: int, method: str, args: list[Any]) -> Deferred[Any]:
        return self.line.call("transfer", command_id, handle_id, method, args)

    def serve(self, method: str, args: list[Any]) -> Any:
        if method == "ping":
            return None
        if method == "setBuilderList":
            return self.set_builder_list(args[0])
        if method == "startCommand":
            cmd_args = attach_proxies(args[3], args[4], self.transfers, str(args[1]))
            return self.start_command(_Channel(self, str(args[0]), str(args[1])), str(args[2]), cmd_args)
        return call_bot(self.connector.bot, method, *args)

    def keepalive(self) -> Deferred[None]:
        return self.line.call("keepalive")

    def request_shutdown(self) -> Deferred[None]:
        return self.line.call("shutdown")

    def close(self, abort: bool = False) -> None:
        self.line.close(abort)


class JsonConnector(BaseWorkerConnector):
    backendName = "acme-jsonlines"

    def connect_once(self) -> Deferred[WorkerSession]:
        return _Attempt(self).start()


class JsonLinesBackend(Backend):
    name = "acme-jsonlines"
    description = "reference backend: JSON lines over TCP (examples/jsonlines)"
    api_version = 1
    listener_class = JsonListener
    connector_class = JsonConnector

    def raw_frames(self, connector: Any) -> Any:  # the hostile-peer tests' hooks
        from acme_jsonlines_raw import JsonRawFrames
        return JsonRawFrames(connector._session.line)

    def raw_connect(self, address: str, reactor: Any) -> Any:
        from acme_jsonlines_raw import JsonRawFrames, dial_raw
        return ensureDeferred(dial_raw(reactor, address, JsonRawFrames(), self.name))


backend = JsonLinesBackend()
