"""Master side of the null backend."""

from __future__ import annotations

from typing import Any

from twisted.cred import credentials
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger

from workerwire.backend import LinkOptions
from workerwire.base_connection import BaseConnection
from workerwire.base_listener import BaseListener, OpenPort
from workerwire.errors import AddressError, LoginRefused, ProtocolError, error_from_wire, peer_text
from workerwire.flow import approx_size
from workerwire.login_guard import MAX_LOGIN_INPUT
from workerwire.transfer import split_refs

from .network import PipeEnd, network_for
from .rpc import MessagePeer

__all__ = ["NullListener", "NullConnection", "parse_port"]

_log = Logger()

PREFIX = "null:"


def parse_port(portStr: str) -> str:
    """``null:NAME`` -> ``NAME`` (``null:`` or ``null:0`` pick a fresh name)."""
    if not isinstance(portStr, str) or not portStr.startswith(PREFIX):
        raise AddressError(f"null addresses look like 'null:NAME' (or 'null:0' for a fresh one), not {portStr!r}")
    name = portStr[len(PREFIX):]
    if ":" in name or "/" in name:
        raise AddressError(f"null port name {name!r} may not contain ':' or '/'")
    return name


class NullConnection(BaseConnection):
    """One worker attached in-process."""

    def __init__(self, listener: "NullListener", workerName: str, peer: MessagePeer):
        super().__init__(listener.master, workerName, listener.backendName, listener.options, listener.reactor)
        self._peer = peer

    def get_peer(self) -> str:
        return self._peer.pipe.description

    # Arguments core has checked (_checked_call) are not walked again.

    def call_print(self, message: str) -> Deferred[Any]:
        return self._peer.call("print", message, checked=True)

    def call_get_worker_info(self) -> Deferred[dict[str, Any]]:
        return self._peer.call("getWorkerInfo")

    def call_set_builder_list(self, builders: list[list[str]]) -> Deferred[list[str]]:
        return self._peer.call("setBuilderList", builders)

    def call_start_build(self, builderName: str) -> Deferred[Any]:
        return self._peer.call("startBuild", builderName, checked=True)

    def call_start_command(self, builderName: str, commandId: str, commandName: str,
                              args: dict[str, Any]) -> Deferred[Any]:
        plain, handles = split_refs(args)
        if handles:  # transfer handles travel as {key: [id, kind]} after the args
            return self._peer.call("startCommand", builderName, commandId, commandName, plain, handles)
        return self._peer.call("startCommand", builderName, commandId, commandName, plain)

    def call_interrupt_command(self, builderName: str, commandId: str, why: str) -> Deferred[Any]:
        return self._peer.call("interruptCommand", builderName, commandId, why, checked=True)

    def call_shutdown(self) -> Deferred[Any]:
        return self._peer.call("shutdown")

    def call_keepalive(self) -> Deferred[Any]:
        return self._peer.call("ping")

    def lose_connection(self, abort: bool) -> None:
        self._peer.close("connection closed by the master")

    def serve(self, method: str, args: list[Any]) -> Any:
        """Calls from the worker."""
        if method == "update":
            commandId, updates = args
            # The answer waits for a master that asks to be waited for: backpressure.
            pairs = [(str(k), v) for k, v in updates]
            size = approx_size(pairs)
            try:
                self.receive_window.admit(size)
            except ProtocolError as e:  # the worker overran its window
                _log.warn("protocol error from {peer}: {why}; closing the link", peer=self.get_peer(), why=str(e))
                self._peer.close(f"protocol error: {e}")
                raise
            held = self.receive_window.hold(size, self.on_update(str(commandId), pairs))
            if held is not None:
                return held.addBoth(lambda _: None)
        elif method == "complete":
            commandId, err = args
            self.on_complete(str(commandId), None if err is None else error_from_wire(str(err[0]), str(err[1])))
        elif method == "transfer":
            commandId, handleId, name, call_args = args
            if not isinstance(call_args, list):
                raise ProtocolError("transfer(command_id, handle_id, method, [args])")
            return self.on_transfer_call(str(commandId), handleId, str(name), call_args)
        elif method == "keepalive":
            self.on_worker_keepalive()
        elif method == "shutdown":
            self.on_shutdown_request()
        else:
            raise ProtocolError(f"unknown call {peer_text(method)} from the worker")
        return None


class NullListener(BaseListener):
    backendName = "null"

    def __init__(self, master: Any, options: LinkOptions | None = None, reactor: Any = None,
                 backend_name: str | None = None):
        super().__init__(master, options, reactor, backend_name)
        self._network = network_for(self.reactor)

    def _check_port_str(self, portStr: str) -> None:
        parse_port(portStr)

    def _open_port(self, entry: OpenPort) -> Deferred[None]:
        name = self._network.listen(parse_port(entry.port_str), lambda pipe: self._accept(pipe, entry))
        entry.listening = name
        entry.port = name
        entry.address = PREFIX + name
        return succeed(None)

    def _close_port(self, entry: OpenPort) -> Deferred[None]:
        self._network.stop(entry.listening)
        return succeed(None)

    def _accept(self, pipe: PipeEnd, entry: OpenPort) -> None:
        state: dict[str, Any] = {"conn": None}
        timeout = self.reactor.callLater(
            self.options.login_timeout, lambda: pipe.close("no login within the login timeout"))

        def serve(method: str, args: list[Any]) -> Any:
            conn = state["conn"]
            if conn is not None:
                return conn.serve(method, args)
            if method != "login" or state.get("logging_in"):
                refuse(f"{peer_text(method)} before login; log in first")
            state["logging_in"] = True
            name, password = str(args[0]), str(args[1])
            return self._login(entry, peer, name, password, state, timeout)

        def lost(reason: str) -> None:
            if timeout.active():
                timeout.cancel()
            if state["conn"] is not None:
                state["conn"].on_connection_lost(reason)

        def traffic() -> None:
            if state["conn"] is not None:
                state["conn"].on_traffic()

        def refuse(why: str) -> None:
            _log.warn("protocol error from {peer}: {why}; closing the link", peer=pipe.description, why=why)
            pipe.close(f"protocol error: {why}")
            raise ProtocolError(why)

        peer = MessagePeer(pipe, serve, lost, self.options.max_message_size, traffic, self.options, "master",
                           self.login_guard.stats)
        received, taken = pipe.on_message, [0]

        def before_login(data: bytes) -> None:  # the pre-login input limit, as on a network backend
            if state["conn"] is None and not pipe.closed:
                taken[0] += len(data)
                if taken[0] > MAX_LOGIN_INPUT:
                    try:
                        refuse(f"more than {MAX_LOGIN_INPUT} bytes before logging in")
                    except ProtocolError:
                        return
            received(data)

        pipe.on_message = before_login

    async def _login_async(self, entry: OpenPort, peer: MessagePeer, name: str, password: str,
                           state: dict[str, Any], timeout: Any) -> None:
        creds = credentials.UsernamePassword(name.encode("utf-8"), password.encode("utf-8"))
        avatar_name = await self.check_login(entry, None, creds)  # logs a refusal and raises LoginRefused
        conn = NullConnection(self, avatar_name, peer)
        peer.worker_name = avatar_name
        state["conn"] = conn
        try:
            await self.attach(conn, peer)
        except LoginRefused:
            state["conn"] = None
            self.reactor.callLater(0, peer.close, "login refused")
            raise
        if timeout.active():
            timeout.cancel()

    def _login(self, entry: OpenPort, peer: MessagePeer, name: str, password: str, state: dict[str, Any],
               timeout: Any) -> Deferred[None]:
        return ensureDeferred(self._login_async(entry, peer, name, password, state, timeout))
