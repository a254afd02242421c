"""The amp backend end to end over loopback TCP: addresses, handshake, login,
limits, errors.  (The contract itself is covered by the conformance suite.)"""

from __future__ import annotations

import re
import socket
from typing import Any, Iterator

import pytest
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols import amp

from workerwire import LinkOptions, load_backend
from workerwire.conformance import Harness, RecordingCommand, within
from workerwire.errors import AddressError, ConnectionLost, LoginRefused, ProtocolError, RemoteCallFailed
from workerwire_amp.commands import TextList

from test_amp_support import LogRecorder, box, connect_raw, hello_box, port_of, raw_login, unexpected_failures

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_logged_tracebacks() -> Iterator[None]:
    """Nothing the amp backend does in these tests may log a traceback."""
    with LogRecorder() as log:
        yield
    assert not unexpected_failures(log.events), unexpected_failures(log.events)[0]


@pytest.fixture
def harness(make_harness: Any) -> Harness:
    return make_harness("amp", keepalive_interval=None)


# -- addresses ------------------------------------------------------------------


@async_test
async def test_registration_address_is_a_tcp_client_endpoint_string(harness: Harness) -> None:
    reg = await harness.register("w1", "pw")
    assert re.fullmatch(r"tcp:host=127\.0\.0\.1:port=\d+", reg.getAddress())
    assert port_of(reg.getAddress()) == reg.getPort()


def test_check_port_validates_without_listening() -> None:
    backend = load_backend("amp")
    assert backend.name == "amp" and backend.network
    assert backend.loopback_port() == "tcp:port=0:interface=127.0.0.1"
    for good in ("tcp:9990", "tcp:port=0:interface=127.0.0.1", "tcp:port=9990:backlog=5"):
        backend.check_port(good)
    for bad in ("bogus:1", "tcp:notaport", "", "tcp:70000"):
        with pytest.raises(AddressError):
            backend.check_port(bad)
    # Nothing was opened: the port checked above is still free to bind.
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    finally:
        s.close()
    backend.check_port(f"tcp:port={port}:interface=127.0.0.1")
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.close()


def test_connector_refuses_a_bad_address(reactor: Any) -> None:
    backend = load_backend("amp")
    with pytest.raises(AddressError) as err:
        backend.create_connector(object(), "nonsense:::", "w", "pw", reactor=reactor)  # type: ignore[arg-type]
    assert "tcp:host=" in str(err.value)


# -- handshake and login ------------------------------------------------------------


@async_test
async def test_hello_answer_carries_version_capabilities_and_limits(harness: Harness, reactor: Any) -> None:
    reg = await harness.register("w1", "pw")
    peer = await connect_raw(reactor, reg.getPort())
    peer.send(hello_box("1", max_version=7))
    answer = await peer.wait_answer("1", reactor)
    assert answer[b"version"] == b"1"
    assert set(TextList().fromString(answer[b"capabilities"])) >= {"chunks", "window"}
    assert len(answer[b"challenge"]) == 32
    assert int(answer[b"max_message_size"]) == harness.options.max_message_size
    assert int(answer[b"window"]) > 0
    peer.transport.loseConnection()


@pytest.mark.parametrize("overrides, code, words", [
    ({"min_version": 2, "max_version": 5}, b"VersionMismatch", "versions 1 to 1"),
    ({"capabilities": TextList().toString(["chunks"])}, b"MissingCapability", "window"),
])
@async_test
async def test_a_peer_that_cannot_talk_gets_an_explained_refusal(
        harness: Harness, reactor: Any, overrides: dict[str, Any], code: bytes, words: str) -> None:
    reg = await harness.register("w1", "pw")
    peer = await connect_raw(reactor, reg.getPort())
    peer.send(hello_box("1", **overrides))
    answer = await peer.wait_answer("1", reactor)
    assert answer[b"_error_code"] == code
    assert words in answer[b"_error_description"].decode()
    await within(peer.closed, reactor, 5, "the master to close the refused connection")


@async_test
async def test_worker_refuses_a_master_lacking_a_required_capability(harness: Harness, reactor: Any) -> None:
    class OldMaster(Protocol):
        def dataReceived(self, data: bytes) -> None:
            for b in amp._ParserHelper.parseString(data):
                self.transport.write(box(
                    _answer=b[b"_ask"].decode(), version=1, capabilities=TextList().toString(["window"]),
                    challenge=b"x" * 32, max_message_size=MiB, window=MiB))

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(OldMaster))
    try:
        c, _ = harness.connector(f"tcp:host=127.0.0.1:port={port.getHost().port}", "w1", "pw")
        with pytest.raises(LoginRefused) as err:
            await within(c.probe(), reactor, what="the worker's refusal")
        assert "chunks" in str(err.value)
    finally:
        await port.stopListening()


class MuteMaster(Protocol):
    """Accepts the TCP connection and never says a word."""

    instances: list["MuteMaster"] = []

    def connectionMade(self) -> None:
        self.lost: Deferred[None] = Deferred()
        MuteMaster.instances.append(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


@async_test
async def test_a_master_that_never_answers_times_the_login_out(harness: Harness, reactor: Any) -> None:
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(MuteMaster))
    try:
        c, _ = harness.connector(f"tcp:host=127.0.0.1:port={port.getHost().port}", "w1", "pw",
                                 options=LinkOptions(keepalive_interval=None, login_timeout=0.2))
        with pytest.raises(ConnectionLost) as err:
            await within(c.probe(), reactor, what="the worker to give up")
        assert "no login answer" in str(err.value)
    finally:
        await port.stopListening()


@async_test
async def test_stop_cancels_a_login_in_progress(harness: Harness, reactor: Any) -> None:
    MuteMaster.instances.clear()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(MuteMaster))
    try:
        c, _ = harness.connector(f"tcp:host=127.0.0.1:port={port.getHost().port}", "w1", "pw")
        c.start()
        await within(_poll(lambda: bool(MuteMaster.instances), reactor), reactor, what="the worker to dial")
        await within(c.stop(), reactor, 2, "stop() while the login is pending")
        await within(MuteMaster.instances[0].lost, reactor, 2, "the attempt's connection to close")
        assert not c.isConnected
    finally:
        await port.stopListening()


@async_test
async def test_commands_before_login_close_the_connection(harness: Harness, reactor: Any) -> None:
    reg = await harness.register("w1", "pw")
    with LogRecorder() as log:
        peer = await connect_raw(reactor, reg.getPort())
        peer.send(box(_command="Keepalive", _ask="1"))
        answer = await peer.wait_answer("1", reactor)
        await within(peer.closed, reactor, 5, "the connection to close")
    assert answer[b"_error_code"] == b"ProtocolError"
    assert b"before login" in answer[b"_error_description"]
    assert log.protocol_errors(peer.local)


@async_test
async def test_silent_connections_are_dropped_after_the_login_timeout(harness: Harness, reactor: Any) -> None:
    harness.use_options(LinkOptions(keepalive_interval=None, login_timeout=0.2))
    reg = await harness.register("w1", "pw")
    with LogRecorder() as log:
        silent = await connect_raw(reactor, reg.getPort())
        greeted = await connect_raw(reactor, reg.getPort())
        greeted.send(hello_box("1"))
        await greeted.wait_answer("1", reactor)
        await within(silent.closed, reactor, 5, "the silent connection to be dropped")
        await within(greeted.closed, reactor, 5, "the greeted-only connection to be dropped")
    assert len([e for e in log.events if e.get("login_timeout")]) == 2
    # A worker that does log in is not affected.
    w = await harness.start_worker("w1", "pw", builders=[])
    assert w.conn.isConnected


@async_test
async def test_the_master_may_call_the_worker_before_answering_its_login(reactor: Any, tmp_path: Any) -> None:
    from workerwire.conformance import RecordingMaster, ScriptedWorker
    from workerwire_amp import AMPConnector, AMPListener

    class CuriousMaster(RecordingMaster):
        """Asks for the worker's info while deciding whether to accept it."""

        def newConnection(self, conn: Any, workerName: str) -> Deferred[None]:  # type: ignore[override]
            async def decide() -> None:
                self.info = await conn.remoteGetWorkerInfo()
                self.logged_in_while_asking = connector.isConnected
                RecordingMaster.newConnection(self, conn, workerName)

            return ensureDeferred(decide())

    master = CuriousMaster(reactor)
    listener = AMPListener(master, LinkOptions(keepalive_interval=None), reactor)
    reg = await listener.updateRegistration("w1", "pw", "tcp:port=0:interface=127.0.0.1")
    connector = AMPConnector(ScriptedWorker(str(tmp_path), reactor), reg.getAddress(), "w1", "pw",
                             LinkOptions(keepalive_interval=None), reactor)
    try:
        connector.start()
        await within(connector.whenConnected(), reactor, what="the login")
        assert master.info["worker_commands"] and master.logged_in_while_asking is False
    finally:
        await connector.stop()
        await listener.stopListening()


@async_test
async def test_wrong_password_gets_login_refused_and_a_closed_connection(harness: Harness, reactor: Any) -> None:
    reg = await harness.register("w1", "right")
    with pytest.raises(AssertionError):
        await raw_login(reactor, reg.getPort(), "w1", "wrong")
    c, _ = harness.connector(reg.getAddress(), "w1", "wrong")
    with pytest.raises(LoginRefused) as err:
        await within(c.probe(), reactor, what="the refusal")
    assert "unknown worker name or wrong password" in str(err.value)


@async_test
async def test_tcp_keepalive_is_on_for_worker_connections(harness: Harness) -> None:
    w = await harness.start_worker(builders=[])
    sock = w.conn._proto.transport.getHandle()  # type: ignore[attr-defined]
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)


# -- values and limits ----------------------------------------------------------------


@async_test
async def test_large_arguments_and_results_are_chunked_both_ways(harness: Harness) -> None:
    w = await harness.start_worker(builders=[])
    builders = [(f"builder-{i:05d}-" + "é" * 20, f"dir-{i:05d}") for i in range(3000)]
    names = await w.conn.remoteSetBuilderList(builders)
    assert sorted(names) == sorted(name for name, _ in builders)


@async_test
async def test_an_update_over_the_masters_limit_fails_on_the_worker(harness: Harness, reactor: Any) -> None:
    harness.use_options(LinkOptions(keepalive_interval=None, max_message_size=64 * 1024))
    reg = await harness.register("w1", "pw")
    w = await harness.start_worker("w1", "pw", address=reg.getAddress(),
                                   worker_options=LinkOptions(keepalive_interval=None))
    rc = RecordingCommand()
    await w.conn.remoteStartCommand(rc, "b1", "c1", "blob", {"size": 100_000})
    await within(_poll(lambda: bool(w.bot.errors), reactor), reactor, what="the oversized update to fail")
    error = w.bot.errors[0].value
    assert isinstance(error, ProtocolError) and "exceeds the message limit of 65536 bytes" in str(error)
    assert await w.conn.remotePrint("the link is still up") is None
    assert rc.updates == []


@async_test
async def test_master_closes_a_link_whose_transfer_exceeds_its_limit(harness: Harness, reactor: Any) -> None:
    harness.use_options(LinkOptions(keepalive_interval=None, max_message_size=64 * 1024))
    reg = await harness.register("w1", "pw")
    with LogRecorder() as log:
        peer = await raw_login(reactor, reg.getPort(), "w1", "pw")
        peer.send(box(_command="Chunk", transfer=1, offset=0, total=10 * MiB, data=b"x" * 1000))
        await within(peer.closed, reactor, 5, "the master to close the link")
    (event,) = log.protocol_errors(peer.local)
    assert "exceeds the limit of 65536 bytes" in event["why"]


@async_test
async def test_tracebacks_cross_only_when_asked(harness: Harness) -> None:
    w = await harness.start_worker(builders=[], worker_options=LinkOptions(keepalive_interval=None,
                                                                           send_tracebacks=True))
    with pytest.raises(RemoteCallFailed) as err:
        await w.conn.remotePrint("raise:KeyError:no such thing")
    assert err.value.type_name == "KeyError"
    assert err.value.remote_traceback is not None and "Traceback" in err.value.remote_traceback


@async_test
async def test_update_for_a_command_not_running_is_answered_not_fatal(harness: Harness, reactor: Any) -> None:
    reg = await harness.register("w1", "pw")
    peer = await raw_login(reactor, reg.getPort(), "w1", "pw")
    from workerwire.values import encode

    peer.send(box(_command="Update", _ask="3", command_id=encode("ghost"), updates=encode([["stdout", "x"]])))
    answer = await peer.wait_answer("3", reactor)
    assert answer[b"_error_code"] == b"ProtocolError" and b"not running" in answer[b"_error_description"]
    peer.send(box(_command="Keepalive", _ask="4"))
    assert b"_answer" in await peer.wait_answer("4", reactor)
    peer.transport.loseConnection()


@async_test
async def test_a_worker_ignoring_the_window_is_cut_off(reactor: Any, tmp_path: Any) -> None:
    from workerwire.conformance import RecordingMaster
    from workerwire.values import encode
    from workerwire_amp import AMPListener

    master = RecordingMaster(reactor)
    listener = AMPListener(master, LinkOptions(keepalive_interval=None), reactor, window=40_000)
    try:
        reg = await listener.updateRegistration("w1", "pw", "tcp:port=0:interface=127.0.0.1")
        peer = await raw_login(reactor, reg.getPort(), "w1", "pw")
        conn = await within(master.whenConnection("w1"), reactor)
        never: Deferred[None] = Deferred()

        class Slow(RecordingCommand):
            def remote_update(self, updates: Any) -> Deferred[None]:  # type: ignore[override]
                super().remote_update(updates)
                return never  # the master never finishes digesting: no acks

        started = conn.remoteStartCommand(Slow(), "b1", "c1", "emit", {})
        await within(peer.when(lambda: bool(peer.commands("StartCommand"))), reactor)
        peer.send(box(_answer=peer.commands("StartCommand")[0][b"_ask"].decode()))
        await started
        with LogRecorder() as log:
            for i in range(3):  # 3 x 20 kB unacknowledged > 40 kB window
                peer.send(box(_command="Update", _ask=str(10 + i), command_id=encode("c1"),
                              updates=encode([["stdout", "x" * 20_000]])))
            await within(peer.closed, reactor, 5, "the master to cut the worker off")
        assert any("flow-control window" in e["why"] for e in log.protocol_errors(peer.local))
    finally:
        await listener.stopListening()


def _poll(predicate: Any, reactor: Any, every: float = 0.01) -> Deferred[None]:
    d: Deferred[None] = Deferred()

    def check() -> None:
        if predicate():
            d.callback(None)
        else:
            reactor.callLater(every, check)

    check()
    return d
