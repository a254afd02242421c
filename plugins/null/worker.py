"""Worker side of the null backend."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from workerwire.base_worker import BaseCommandChannel, BaseWorkerConnector, WorkerSession, call_bot, call_bot_now
from workerwire.errors import ConnectionLost, error_to_wire
from workerwire.master import Update
from workerwire.transfer import TransferLink, attach_proxies

from .master import parse_port
from .network import network_for
from .rpc import MessagePeer

__all__ = ["NullConnector"]


class _Channel(BaseCommandChannel):
    def __init__(self, session: "_Session", builderName: str, commandId: str):
        super().__init__(builderName, commandId)
        self._session = session

    def send_update(self, updates: list[Update]) -> Deferred[None]:
        # update() has checked the values; commandId came checked from the master.
        return self._session.peer_rpc.call("update", self.commandId, [list(u) for u in updates], checked=True)

    def send_complete(self, failure: BaseException | None) -> Deferred[None]:
        self._session.connector._forget_channel(self)
        err = None if failure is None else list(error_to_wire(failure))
        return self._session.peer_rpc.call("complete", self.commandId, err)


class _Session(WorkerSession):
    def __init__(self, connector: "NullConnector"):
        self.connector = connector
        self.peer_rpc: MessagePeer = None  # type: ignore[assignment]
        self.peer = connector.address
        #: Transfer calls of the commands' handles, under the output window.
        self.transfers = TransferLink(self._send_transfer, connector.options.output_window)

    def _send_transfer(self, commandId: str, handleId: int, method: str, args: list[Any]) -> Deferred[Any]:
        return self.peer_rpc.call("transfer", commandId, handleId, method, args)

    def keepalive(self) -> Deferred[None]:
        return self.peer_rpc.call("keepalive")

    def request_shutdown(self) -> Deferred[None]:
        return self.peer_rpc.call("shutdown")

    def close(self, abort: bool = False) -> None:
        self.peer_rpc.close("connection closed by the worker")

    def serve(self, method: str, args: list[Any]) -> Any:
        if method == "ping":
            return None
        if method == "startCommand":
            builderName, commandId, commandName, cmd_args = args[:4]
            if len(args) == 5:  # transfer handles: {key: [id, kind]}
                cmd_args = attach_proxies(cmd_args, args[4], self.transfers, str(commandId))
            channel = _Channel(self, str(builderName), str(commandId))
            self.connector._register_channel(channel)
            d = call_bot(self.connector.bot, "startCommand", channel, builderName, commandId, commandName, cmd_args)

            def refused(f: Failure) -> Failure:
                self.connector._forget_channel(channel)
                return f

            return d.addErrback(refused)
        if method == "setBuilderList":
            args = [[tuple(pair) for pair in args[0]]]
        return call_bot_now(self.connector.bot, method, *args)  # a value at once, or a Deferred


class NullConnector(BaseWorkerConnector):
    """Attaches a worker bot to a null listener of the same reactor."""

    backendName = "null"

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self._port_name = parse_port(self.address)

    def connect_once(self) -> Deferred[WorkerSession]:
        try:
            pipe = network_for(self.reactor).connect(self._port_name)
        except ConnectionLost as e:
            return fail(e)
        session = _Session(self)
        result: Deferred[WorkerSession] = Deferred(lambda d: pipe.close("login cancelled"))
        logged_in = False

        def lost(reason: str) -> None:
            session.transfers.lost(reason)
            if logged_in:
                self.session_lost(session, reason)
            elif not result.called:
                result.errback(Failure(ConnectionLost(f"link closed during login: {reason}")))

        session.peer_rpc = MessagePeer(pipe, session.serve, lost, self.options.max_message_size, self.on_traffic,
                                       self.options, "worker")
        # Calls from the master are served from here on, before the login answer.
        d = session.peer_rpc.call("login", self.name, self.password)

        def ok(_: Any) -> None:
            nonlocal logged_in
            logged_in = True
            if not result.called:
                result.callback(session)

        def refused(f: Failure) -> None:
            pipe.close("login refused")
            if not result.called:
                result.errback(f)

        d.addCallbacks(ok, refused)
        return result
