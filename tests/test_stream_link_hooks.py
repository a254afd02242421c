"""The hooks core's :class:`~workerwire.stream_link.StreamLink` gained for amp
(issue 13), on real TCP connections, and :mod:`workerwire.pending`, the
request table and request serving amp, msgpack, null and the reference backend share.

The StreamLink tests run its timers on a :class:`~twisted.internet.task.Clock`
(the only fake here: it stands for waiting ten seconds), over real sockets."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from workerwire import LinkOptions
from workerwire.conformance import within
from workerwire.errors import ConnectionLost, ProtocolError
from workerwire.pending import PendingRequests, serve_request
from workerwire.base_listener import BaseListener, OpenPort
from workerwire.login_guard import MAX_LOGIN_INPUT
from workerwire.stream_link import READ_SIZE, StreamLink, StreamServerFactory


class _Server(Protocol):
    def __init__(self, stream: StreamLink) -> None:
        self.stream = stream
        self.made: Deferred[None] = Deferred()
        self.gone: Deferred[None] = Deferred()
        self.received: list[bytes] = []
        self.arrived: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.stream.made(self.transport)
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        if not self.arrived.called:
            self.arrived.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.stream.gone()
        self.gone.callback(None)


async def _connect(reactor: Any, stream: StreamLink) -> tuple[_Server, Protocol, Any]:
    server = _Server(stream)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(lambda: server))
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Protocol())
    await within(server.made, reactor, what="the server side of the connection")
    return server, client, port


@async_test
async def test_a_graceful_close_the_peer_does_not_let_finish_is_aborted_after_abort_after(reactor: Any) -> None:
    clock = Clock()
    stream = StreamLink(LinkOptions(), clock, "test master", abort_after=10.0)
    server, client, port = await _connect(reactor, stream)
    try:
        client.transport.pauseProducing()  # type: ignore[union-attr]  # the peer reads nothing
        server.transport.write(b"x" * (32 * 1024 * 1024))  # type: ignore[union-attr]  # more than the socket holds
        stream.close()
        assert stream.closing is False, "a graceful close leaves reading to the protocol"
        clock.advance(9.9)
        assert not server.gone.called and not stream.lost
        clock.advance(0.2)
        await within(server.gone, reactor, what="the overdue close to be aborted")
        assert stream.lost and stream.closing
        assert not clock.getDelayedCalls()
    finally:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()


@async_test
async def test_gone_cancels_the_abort_of_a_graceful_close_that_finished(reactor: Any) -> None:
    clock = Clock()
    stream = StreamLink(LinkOptions(), clock, "test master", abort_after=10.0)
    server, client, port = await _connect(reactor, stream)
    try:
        stream.close()
        await within(server.gone, reactor, what="the graceful close to finish")
        assert not clock.getDelayedCalls()
        stream.close()  # after the loss: nothing to do, no timer
        assert not clock.getDelayedCalls()
    finally:
        await port.stopListening()


@async_test
async def test_the_budgets_pause_sets_paused_and_its_resume_calls_resumed(reactor: Any) -> None:
    resumed: list[bool] = []
    stream = StreamLink(LinkOptions(), reactor, "test worker", resumed=lambda: resumed.append(stream.paused))
    server, client, port = await _connect(reactor, stream)
    try:
        stream.pause()
        assert stream.paused and not resumed
        client.transport.write(b"while paused")  # type: ignore[union-attr]
        stream.resume()
        assert resumed == [False], "resumed runs once reading is on again"
        await within(server.arrived, reactor, what="what the peer sent during the pause")
        assert b"".join(server.received) == b"while paused"
        stream.closing = True  # a closing link does not resume
        stream.pause()
        stream.resume()
        assert stream.paused and resumed == [False]
    finally:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()


@async_test
async def test_large_reads_start_at_the_connection_or_after_a_full_default_read(reactor: Any) -> None:
    eager = StreamLink(LinkOptions(), reactor, "test master", large_reads=True)
    server, client, port = await _connect(reactor, eager)
    try:
        assert server.transport.bufferSize == READ_SIZE  # type: ignore[union-attr]
        assert eager.socket is server.transport.getHandle()  # type: ignore[union-attr]
    finally:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()
    lazy = StreamLink(LinkOptions(), reactor, "test master")
    server, client, port = await _connect(reactor, lazy)
    try:
        default = server.transport.bufferSize  # type: ignore[union-attr]
        assert default < READ_SIZE
        lazy.take(b"x" * 10)
        assert server.transport.bufferSize == default  # type: ignore[union-attr]
        lazy.take(b"x" * default)
        assert server.transport.bufferSize == READ_SIZE  # type: ignore[union-attr]
    finally:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()


def test_pending_requests_tag_wait_answer_and_refuse_what_is_not_waiting() -> None:
    pending: PendingRequests[bytes] = PendingRequests(b"%x".__mod__, first=1)
    tags = [pending.new_tag() for _ in range(11)]
    assert tags[:2] == [b"1", b"2"] and tags[-1] == b"b"
    first, last = pending.wait(tags[0]), pending.wait(tags[-1])
    assert len(pending) == 2 and tags[0] in pending
    results: list[Any] = []
    first.addCallback(results.append)
    pending.answered(b"1").callback("answer")
    assert results == ["answer"] and len(pending) == 1
    with pytest.raises(ProtocolError, match=r"an answer to request b'1', which is not waiting"):
        pending.answered(b"1")  # answered already
    with pytest.raises(ProtocolError, match=r"^an error answer to \[1\], which is not waiting"):
        pending.answered([1], "an error answer to")  # type: ignore[arg-type]  # unhashable, as a decoder may give
    failures: list[Failure] = []
    last.addErrback(failures.append)
    pending.fail_all(ConnectionLost("gone"))
    assert len(failures) == 1 and failures[0].check(ConnectionLost) and len(pending) == 0
    with pytest.raises(ProtocolError):
        pending.answered(b"b")  # nothing waits after the loss


def test_pending_requests_tags_count_from_first() -> None:
    pending: PendingRequests[int] = PendingRequests(int)
    assert [pending.new_tag() for _ in range(3)] == [0, 1, 2]


def test_serve_request_answers_with_the_result_or_the_exception_whenever_it_comes() -> None:
    sent: list[tuple[str, Any]] = []

    def serve(run: Any, answer: Any = None) -> None:
        serve_request(run, answer or (lambda result: sent.append(("answer", result))),
                      lambda exc: sent.append(("error", exc)))

    serve(lambda: 1)
    assert sent == [("answer", 1)]

    def raises() -> None:
        raise KeyError("k")

    serve(raises)
    assert sent[-1][0] == "error" and isinstance(sent[-1][1], KeyError)
    later: Deferred[Any] = Deferred()
    serve(lambda: later)
    assert len(sent) == 2, "nothing is sent before the handler's Deferred fires"
    later.callback({"x": 2})
    assert sent[-1] == ("answer", {"x": 2})
    failing: Deferred[Any] = Deferred()
    serve(lambda: failing)
    failing.errback(ValueError("bad"))
    assert sent[-1][0] == "error" and isinstance(sent[-1][1], ValueError)

    def unsendable(result: Any) -> None:
        raise TypeError(f"cannot encode {result!r}")

    serve(lambda: object, unsendable)
    assert sent[-1][0] == "error" and "cannot encode" in str(sent[-1][1])


class _Counted(_Server):
    """A master-side protocol as a stream backend writes it for StreamServerFactory."""

    def dataReceived(self, data: bytes) -> None:
        self.stream.link_bytes.received += len(data)
        super().dataReceived(data)

    def close(self, abort: bool = False) -> None:
        self.stream.close(abort)


class _Reading(_Counted):
    """A master-side protocol that reads through :meth:`StreamLink.read`, as
    pb, amp and the reference backend do; a refused read is its protocol error."""

    def __init__(self, stream: StreamLink) -> None:
        super().__init__(stream)
        self.handled = 0
        self.refused: list[str] = []

    def dataReceived(self, data: bytes) -> None:
        if self.stream.read(data, self.refuse):
            self.handled += len(data)
            self.stream.after_read()
            _Server.dataReceived(self, data)

    def refuse(self, why: str) -> None:
        self.refused.append(why)
        self.stream.protocol_error(why, "test")


class _Listener(BaseListener):
    backendName = "test"

    def __init__(self, options: LinkOptions, reactor: Any, kind: type[_Counted] = _Counted) -> None:
        super().__init__(None, options, reactor)  # type: ignore[arg-type]  # no login happens here
        self.built: list[_Counted] = []
        self.kind = kind

    def build_factory(self, entry: OpenPort) -> StreamServerFactory:
        def build() -> _Counted:
            self.built.append(self.kind(StreamLink(self.options, self.reactor, "test master")))
            return self.built[-1]
        return StreamServerFactory(self, entry, build)


async def _accepted(listener: "_Listener", reactor: Any) -> tuple[Protocol, Any]:
    """A client connected to a port *listener* opened, and the protocol its factory built for it."""
    registration = await listener.updateRegistration("w", "pw", "tcp:port=0:interface=127.0.0.1")
    assert registration is not None
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", int(registration.getPort()))
    client = await connectProtocol(endpoint, Protocol())
    await within(listener.built[0].made, reactor, what="the accepted connection's protocol")
    return client, listener.built[0]


@async_test
async def test_a_stream_server_factory_gives_each_connection_its_ticket_and_byte_counter(reactor: Any) -> None:
    listener = _Listener(LinkOptions(), reactor)
    try:
        client, server = await _accepted(listener, reactor)
        assert server.stream.ticket is not None and not server.stream.ticket.is_done
        assert listener.link_totals.open_links == 1
        client.transport.write(b"hello")  # type: ignore[union-attr]
        await within(server.arrived, reactor, what="the client's bytes")
        client.transport.loseConnection()  # type: ignore[union-attr]
        await within(server.gone, reactor, what="the connection to close")
        assert server.stream.ticket.is_done
        assert (listener.link_totals.open_links, listener.link_totals.received) == (0, 5)
    finally:
        await listener.stopListening()


@async_test
async def test_read_counts_and_hands_over_each_read_until_the_pre_login_limit_then_refuses_and_drops_the_rest(
        reactor: Any) -> None:
    listener = _Listener(LinkOptions(), reactor, _Reading)
    try:
        client, server = await _accepted(listener, reactor)
        assert isinstance(server, _Reading)
        assert server.factory is not None and server.factory.listener is listener  # type: ignore[attr-defined]
        client.transport.write(b"x" * 100)  # type: ignore[union-attr]
        await within(server.arrived, reactor, what="the client's bytes")
        assert (server.handled, server.refused, listener.link_totals.received) == (100, [], 100)
        client.transport.write(b"y" * MAX_LOGIN_INPUT)  # type: ignore[union-attr]
        await within(server.gone, reactor, what="the link to be dropped past the pre-login limit")
        assert server.refused == [StreamLink.too_much_before_login()]
        assert server.handled <= MAX_LOGIN_INPUT < listener.link_totals.received <= 100 + MAX_LOGIN_INPUT
        handled = server.handled
        server.dataReceived(b"late")  # a read once closing: counted, dropped unread, not refused again
        assert (server.handled, server.refused) == (handled, [StreamLink.too_much_before_login()])
        assert server.stream.drop_reason == f"protocol error: {StreamLink.too_much_before_login()}"
    finally:
        await listener.stopListening()


@async_test
async def test_amp_stops_parsing_a_read_at_the_budgets_pause_and_parses_the_rest_on_resume(reactor: Any) -> None:
    """amp's use of ``paused``/``resumed``: three boxes in one write; the
    first pauses reading (as the budget does); the other two are parsed only
    once reading resumes, from what was read before the pause."""
    from twisted.protocols import amp

    from workerwire_amp.wire import WireProtocol

    class Boxes(WireProtocol):
        def __init__(self) -> None:
            super().__init__(LinkOptions(), reactor)
            self.boxes: list[bytes] = []
            self.first: Deferred[None] = Deferred()
            self.all: Deferred[None] = Deferred()

        def ampBoxReceived(self, box: amp.AmpBox) -> None:
            self.boxes.append(box[b"n"])
            if len(self.boxes) == 1:
                self.stream.pause()
                reactor.callLater(0, self.first.callback, None)  # the test goes on after this read
            if len(self.boxes) == 3:
                self.all.callback(None)

    server = Boxes()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(lambda: server))
    try:
        client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Protocol())
        client.transport.write(b"".join(amp.AmpBox(n=b"%d" % i).serialize() for i in range(3)))  # type: ignore[union-attr]
        await within(server.first, reactor, what="the first box")
        assert server.boxes == [b"0"] and server.stream.paused
        server.stream.resume()
        await within(server.all, reactor, what="the boxes after the pause")
        assert server.boxes == [b"0", b"1", b"2"]
        client.transport.loseConnection()  # type: ignore[union-attr]
    finally:
        await port.stopListening()
