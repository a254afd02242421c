"""The link plumbing core took over from pb (issue 13): the worker's
:class:`~workerwire.worker_link.WorkerLink`, :class:`~workerwire.transfer.CarriedHandles`,
:func:`~workerwire.base_connection.update_pairs`, the Twisted failure mapping of
:mod:`workerwire.errors`, and :class:`~workerwire.stream_link.StreamLink` on a real socket.
Backends use them through the conformance suite; these pin the contracts each promises."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pytest_twisted import ensureDeferred as async_test
from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from workerwire import LinkOptions
from workerwire.base_connection import update_pairs
from workerwire.base_worker import BaseCommandChannel, BaseWorkerConnector, WorkerSession
from workerwire.conformance import within
from workerwire.errors import (
    ConnectionLost,
    LoginRefused,
    ProtocolError,
    RemoteCallFailed,
    UnknownBuilder,
    describe_loss,
    translate_native,
    type_name_of,
)
from workerwire.login_guard import MAX_LOGIN_INPUT, LoginGuard
from workerwire.stream_link import StreamLink
from workerwire.transfer import CarriedHandles, TransferLink
from workerwire.worker_link import WorkerLink, builder_pairs


def test_builder_pairs_takes_name_builddir_pairs_and_refuses_anything_else() -> None:
    assert builder_pairs([["a", "da"], ("b", "db")]) == [("a", "da"), ("b", "db")]
    for bad in (None, "ab", [["a"]], [["a", None]], [["a", "b", "c"]], [[1, "b"]]):
        with pytest.raises(ProtocolError, match=r"\[\(name, builddir\), \.\.\.\]"):
            builder_pairs(bad)


def test_update_pairs_takes_key_value_lists_and_names_what_was_wrong() -> None:
    assert update_pairs([["stdout", "x"], ["rc", 0]]) == [("stdout", "x"), ("rc", 0)]
    with pytest.raises(ProtocolError, match="must be a list of \\[key, value\\] pairs, not a dict"):
        update_pairs({"stdout": "x"})
    with pytest.raises(ProtocolError, match="key: str"):
        update_pairs([[1, "x"]])
    with pytest.raises(ProtocolError, match="key: str"):
        update_pairs([["stdout", "x", "y"]])


def test_carried_handles_name_only_their_command_and_are_forgotten_with_it() -> None:
    handles = CarriedHandles(TransferLink(lambda *call: Deferred(), 1024))
    writer, reader = object(), object()
    p1 = handles.proxy("c1", "writer", writer)
    p2 = handles.proxy("c2", "reader", reader)
    assert p1.handle_id != p2.handle_id
    assert handles.carrier("c1", p1.handle_id) is writer
    with pytest.raises(ProtocolError, match="no transfer handle .* for command 'c2'"):
        handles.carrier("c2", p1.handle_id)  # another command's handle names nothing
    handles.forget("c1")
    with pytest.raises(ProtocolError):
        handles.carrier("c1", p1.handle_id)
    assert handles.carrier("c2", p2.handle_id) is reader


class _Connector(BaseWorkerConnector):
    """A connector that never dials: WorkerLink's events below are pure
    bookkeeping, so no transport is needed (nothing else is faked)."""

    backendName = "test"

    def connect_once(self) -> Deferred[WorkerSession]:
        raise AssertionError("not dialled here")


class _Link(WorkerLink):
    def build_factory(self) -> Any: ...
    def connected(self, protocol: Any) -> None: ...
    def drop(self, abort: bool) -> None: ...
    def keepalive(self) -> Any: ...
    def request_shutdown(self) -> Any: ...
    def close(self, abort: bool = False) -> None: ...


def _link() -> _Link:
    return _Link(_Connector(object(), "tcp:host=127.0.0.1:port=1", "w", "pw", LinkOptions(), Clock()))


@pytest.mark.parametrize("answer, expected", [
    (RemoteCallFailed("RuntimeError", "rejecting duplicate worker"), LoginRefused),
    (RuntimeError("no"), LoginRefused),
    (ConnectionLost("gone"), ConnectionLost),
    (LoginRefused("bad password"), LoginRefused),
    (ProtocolError("garbage"), ProtocolError),
])
def test_a_failed_login_call_is_a_refusal_unless_it_is_a_core_error(answer: Exception, expected: type) -> None:
    link = _link()
    link.login_failed(Failure(answer))
    failure = []
    link.result.addErrback(failure.append)
    assert type(failure[0].value) is expected
    if expected is LoginRefused and not isinstance(answer, LoginRefused):
        assert "the master refused the login" in str(failure[0].value)


def test_a_link_lost_before_the_login_fails_the_attempt_and_after_it_the_session() -> None:
    link = _link()
    link.lost("reset by peer")
    failure = []
    link.result.addErrback(failure.append)
    assert failure[0].check(ConnectionLost) and "closed during login: reset by peer" in str(failure[0].value)
    late = _link()
    late.login_succeeded()
    assert late.logged_in and late.result.called
    seen: list[Any] = []
    late.connector.session_lost = lambda session, reason: seen.append((session, reason))  # type: ignore[method-assign]
    late.lost("reset")
    assert seen == [(late, "reset")]


def test_set_builder_list_refuses_malformed_lists_before_the_bot_sees_them() -> None:
    called = []

    class Bot:
        def remote_setBuilderList(self, pairs: Any) -> list[str]:
            called.append(pairs)
            return [name for name, _ in pairs]

    link = _link()
    link.connector.bot = Bot()
    results: list[Any] = []
    link.set_builder_list([["a", "da"]]).addCallback(results.append)
    link.set_builder_list([["a"]]).addErrback(results.append)
    assert results[0] == ["a"] and called == [[("a", "da")]]
    assert results[1].check(ProtocolError)


class _Channel(BaseCommandChannel):
    def send_update(self, updates: Any) -> Deferred[None]:
        return succeed(None)

    def send_complete(self, failure: BaseException | None) -> Deferred[None]:
        return succeed(None)


def test_a_link_keeps_a_command_channel_until_refused_completed_or_lost() -> None:
    class Bot:
        def remote_startCommand(self, channel: Any, builder: str, command_id: str, name: str, args: Any) -> None:
            if name == "nonesuch":
                raise UnknownBuilder(f"no builder {builder!r}")

    link = _link()
    link.connector.bot = Bot()
    link.login_succeeded()
    running, done, refused = _Channel("b", "c1"), _Channel("b", "c2"), _Channel("b", "c3")
    link.start_command(running, "shell", {})
    link.start_command(done, "shell", {})
    errors: list[Failure] = []
    link.start_command(refused, "nonesuch", {}).addErrback(errors.append)
    assert errors[0].check(UnknownBuilder)
    assert link.channels == {"c1": running, "c2": done}  # the refused one is forgotten
    link.forget_channel(done)  # what a channel does when it completes
    assert link.channels == {"c1": running}
    link.lost("reset")
    assert link.channels == {}
    failures: list[Failure] = []
    running.update([("stdout", "x")]).addErrback(failures.append)
    assert failures[0].check(ConnectionLost) and "reset" in str(failures[0].value)


def test_twisted_failures_map_to_core_errors() -> None:
    assert type_name_of("buildbot_worker.base.UnknownCommand") == "UnknownCommand"
    assert type_name_of(b"builtins.ValueError") == "ValueError"
    assert type_name_of(UnknownBuilder) == "UnknownBuilder"
    assert describe_loss(Failure(net_error.ConnectionDone())) == "connection closed"
    assert describe_loss("why") == "why"
    assert translate_native(Failure(net_error.ConnectionLost())).check(ConnectionLost)
    assert translate_native(Failure(CancelledError())).check(ConnectionLost)
    other = translate_native(Failure(KeyError("k"))).value
    assert isinstance(other, RemoteCallFailed) and other.type_name == "KeyError"


class _Held(Protocol):
    def __init__(self, stream: StreamLink, made: Deferred[None], gone: Deferred[None]) -> None:
        self.stream, self.made, self.gone, self.refused = stream, made, gone, False

    def connectionMade(self) -> None:
        self.stream.made(self.transport)
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if not self.stream.take(data):
            self.refused = True
            self.stream.protocol_error(self.stream.too_much_before_login(), "test")

    def connectionLost(self, reason: Any = None) -> None:
        self.stream.gone()
        self.gone.callback(None)


@async_test
async def test_a_stream_link_sets_tcp_options_and_enforces_the_pre_login_limit(reactor: Any) -> None:
    """On a real TCP connection: keepalive and no Nagle delay are set, and a
    client that sends more than the pre-login limit is dropped as a protocol
    error with the reason kept for the loss report."""
    options = LinkOptions()
    guard = LoginGuard(options, reactor, "test")
    made: Deferred[None] = Deferred()
    gone: Deferred[None] = Deferred()
    stream = StreamLink(options, reactor, "test master", guard.stats)
    server = _Held(stream, made, gone)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(lambda: server))
    try:
        client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Protocol())
        await within(made, reactor, what="the server side of the connection")
        stream.ticket = guard.admit(client.transport.getHost(), lambda: stream.close(abort=True))
        sock = server.transport.getHandle()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert stream.budget is not None
        client.transport.write(b"x" * (MAX_LOGIN_INPUT + 1))
        await within(gone, reactor, what="the connection over the pre-login limit to be dropped")
        assert server.refused
        assert stream.drop_reason is not None and "before logging in" in stream.drop_reason
        assert stream.ticket is not None and stream.ticket.is_done
        client.transport.loseConnection()
    finally:
        await port.stopListening()
        guard.stop()
