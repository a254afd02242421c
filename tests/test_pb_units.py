"""The pb backend's pieces one by one: jelly rules, value normalization,
error translation, addresses, transfers, and the link's timeouts."""

from __future__ import annotations

import datetime
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test
from twisted.cred import error as cred_error
from twisted.internet import error as net_error
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.python.failure import Failure
from twisted.spread import banana, jelly, pb

from workerwire import LinkOptions, load_backend
from workerwire.conformance import Harness, RecordingCommand, ScriptedWorker, within
from workerwire.errors import (
    AddressError,
    ConnectionLost,
    DuplicateWorker,
    LoginRefused,
    ProtocolError,
    RemoteCallFailed,
    UnknownBuilder,
    UnknownCommand,
    UnsupportedValue,
)
from workerwire.parts import numbered_parts
from workerwire.values import encode, from_peer
from workerwire.endpoints import normalize_port
from workerwire_pb.broker import WireBroker
from workerwire_pb.connection import normalize_updates
from workerwire_pb.errors import NO_TRACEBACK, core_error, wire_failure
from workerwire_pb.security import ATOM_LIMIT, DEFAULT_NODES, IncomingSecurity, OutgoingSecurity, fits
from workerwire_pb.transfers import PART_SIZE


def _broker(reactor: Any) -> WireBroker:
    return WireBroker(True, LinkOptions(), reactor)


def _copied(error: BaseException, reactor: Any, tracebacks: bool = False) -> pb.CopiedFailure:
    """What the peer receives when this side sends *error*."""
    b = _broker(reactor)
    if tracebacks:
        try:
            raise error
        except BaseException:
            error = Failure()  # type: ignore[assignment]
    return b.unserialize(b.serialize(wire_failure(error, tracebacks)))


# -- jelly rules ---------------------------------------------------------------

@pytest.mark.parametrize("sexp", [
    [b"class", b"os.system"],
    [b"function", b"os.system"],
    [b"module", b"os"],
    [b"instance", [b"class", b"os.system"], [b"dictionary"]],
    [b"twisted.python.failure.Failure", [b"dictionary"]],
    [b"set", 1, 2],
    [b"frozenset", 1],
    [b"datetime", b"2020 1 1 0 0 0 0"],
    [b"decimal", 1, 0],
    [b"unpersistable", b"x"],
    [b"persistent", b"x"],
    [b"local", 1],
    [b"cached", 1],
    [b"list", [b"class", b"os.system"]],
])
def test_incoming_jelly_refuses_everything_but_plain_data(sexp: Any) -> None:
    with pytest.raises(jelly.InsecureJelly):
        jelly.unjelly(sexp, IncomingSecurity())


def test_incoming_jelly_accepts_contract_values() -> None:
    value = {"s": "ü😀", "b": b"\x00\xff", "i": 2**64 - 1, "n": -(2**63), "f": 1.5, "t": True, "none": None,
             "l": [1, [2]], "tuple": (1, 2), "shared": None}
    inner = [1]
    value["shared"] = [inner, inner]
    sexp = jelly.jelly(value, OutgoingSecurity())
    assert jelly.unjelly(sexp, IncomingSecurity()) == value


@pytest.mark.parametrize("bad", [{1, 2}, object(), datetime.date(2020, 1, 1), type, len])
def test_outgoing_jelly_refuses_non_contract_values(bad: Any) -> None:
    with pytest.raises(jelly.InsecureJelly):
        jelly.jelly({"x": bad}, OutgoingSecurity())


# -- values ---------------------------------------------------------------------

def test_what_jelly_delivers_becomes_a_contract_value_or_is_refused() -> None:
    """pb hands what jelly built to core's from_peer (tests/test_values.py has its rules)."""
    assert from_peer((1, ("a", (b"b",)), {"k": (None,)}), "value", DEFAULT_NODES) == [1, ["a", [b"b"]], {"k": [None]}]
    with pytest.raises(ProtocolError, match="RemoteReference cannot be carried"):
        from_peer(pb.RemoteReference(None, None, 1, 0), "value", DEFAULT_NODES)


def test_fits_follows_banana_limits() -> None:
    assert fits("x" * ATOM_LIMIT) and not fits("x" * (ATOM_LIMIT + 1))
    assert fits("é" * (ATOM_LIMIT // 2)) and not fits("é" * (ATOM_LIMIT // 2 + 1))
    assert fits(b"x" * ATOM_LIMIT) and not fits(b"x" * (ATOM_LIMIT + 1))
    assert not fits(list(range(ATOM_LIMIT)))
    assert not fits({"k": ["x" * (ATOM_LIMIT + 1)]})
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    assert not fits(deep)
    assert fits((pb.Referenceable(), 1, "a"))


def test_updates_normalize_to_ordered_pairs() -> None:
    wire = [[{"header": "h"}, 0], [{"stdout": "o"}, 3], [{"log": ("build.log", "l")}, 1], {"rc": 0},
            ([{"stat": (1, 2.5)}, 0])]
    assert normalize_updates(wire) == (
        [("header", "h"), ("stdout", "o"), ("log", ["build.log", "l"]), ("rc", 0), ("stat", [1, 2.5])], 3)
    for bad in ("x", [1], [[{"k": 1}]], [[{1: "v"}, 0]], [[{"k": {1, 2}}, 0]]):
        with pytest.raises(ProtocolError):
            normalize_updates(bad)


# -- errors ------------------------------------------------------------------------

class UnknownCommandLike(pb.Error):
    pass


UnknownCommandLike.__qualname__ = UnknownCommandLike.__name__ = "UnknownCommand"


@pytest.mark.parametrize("error, expected, type_name", [
    (ValueError("v"), RemoteCallFailed, "ValueError"),
    (UnknownBuilder("u"), UnknownBuilder, None),
    (UnknownCommand("c"), UnknownCommand, None),
    (UnknownCommandLike("buildbot-worker's kind"), UnknownCommand, None),
    (RemoteCallFailed("OSError", "relayed"), RemoteCallFailed, "OSError"),
    (cred_error.UnauthorizedLogin("no"), LoginRefused, None),
    (DuplicateWorker("dup"), DuplicateWorker, None),
    (pb.NoSuchMethod("no such method"), RemoteCallFailed, "NoSuchMethod"),
])
def test_remote_failures_map_by_last_name_component(error: BaseException, expected: type, type_name: Any,
                                                     reactor: Any) -> None:
    copied = _copied(error, reactor)
    assert isinstance(copied, pb.CopiedFailure)
    core = core_error(copied)
    assert type(core) is expected
    if type_name is not None:
        assert core.type_name == type_name  # type: ignore[attr-defined]
        assert core.remote_traceback is None  # type: ignore[attr-defined]
    assert str(error) in str(core)


def test_refusals_look_like_unauthorized_login_to_a_stock_worker(reactor: Any) -> None:
    for error in (LoginRefused("no"), DuplicateWorker("dup")):
        assert _copied(error, reactor).check(cred_error.UnauthorizedLogin)


def test_tracebacks_only_when_asked(reactor: Any) -> None:
    assert _copied(ValueError("x"), reactor).traceback == NO_TRACEBACK
    core = core_error(_copied(ValueError("with tb"), reactor, tracebacks=True))
    assert isinstance(core, RemoteCallFailed) and "ValueError: with tb" in (core.remote_traceback or "")


@pytest.mark.parametrize("native", [
    pb.PBConnectionLost("gone"), pb.DeadReferenceError("stale"), net_error.ConnectionDone(),
    net_error.ConnectionLost(), net_error.ConnectionRefusedError(),
])
def test_link_failures_become_connection_lost(native: BaseException) -> None:
    assert isinstance(core_error(Failure(native)), ConnectionLost)


def test_local_failures(reactor: Any) -> None:
    assert isinstance(core_error(Failure(banana.BananaError("too long"))), UnsupportedValue)
    assert isinstance(core_error(Failure(pb.ProtocolError("x"))), ProtocolError)
    remote = core_error(Failure(pb.RemoteError(b"buildbot_worker.base.UnknownCommand", "nope", None)))
    assert isinstance(remote, UnknownCommand)
    assert isinstance(core_error(Failure(KeyError("k"))), RemoteCallFailed)
    long = _copied(ValueError("x" * 200_000), reactor)
    assert len(long.value) < 70_000


# -- addresses ------------------------------------------------------------------

def test_port_strings(reactor: Any) -> None:
    backend = load_backend("pb")
    assert normalize_port("9989", "pb") == "tcp:9989" and normalize_port(9989, "pb") == "tcp:9989"
    for good in ("tcp:9989", "tcp:port=0:interface=127.0.0.1", "9989", "unix:/tmp/x.sock", backend.loopback_port()):
        backend.check_port(good)
    for bad in ("", "bogus:1", "tcp:abc", None, "127.0.0.1:9989"):
        with pytest.raises(AddressError):
            backend.check_port(bad)  # type: ignore[arg-type]
    with pytest.raises(AddressError):
        backend.create_connector(ScriptedWorker("/tmp", reactor), "127.0.0.1:9989", "w", "p")




@async_test
async def test_wildcard_listener_gives_a_loopback_address(reactor: Any) -> None:
    listener = load_backend("pb").create_listener(object(), None, reactor)
    try:
        reg = await listener.updateRegistration("w1", "pw", "tcp:port=0")
        assert reg.getAddress() == f"tcp:host=127.0.0.1:port={reg.getPort()}"
    finally:
        await listener.stopListening()


# -- transfers ------------------------------------------------------------------

def test_a_broker_claims_a_transfer_as_a_decoded_value(reactor: Any) -> None:
    broker = _broker(reactor)
    payload = encode({"x": "é" * 400_000})
    parts = list(numbered_parts(payload, PART_SIZE))
    assert len(parts) == 4 and all(len(part) <= ATOM_LIMIT for _, part in parts), "each part fits a banana string"
    for offset, part in parts:
        broker.transfers.part(7, offset, len(payload), part)
    assert broker._claim(7) == {"x": "é" * 400_000} and broker.transfers.buffered == 0
    broker.transfers.part(3, 0, 1, b"\xc1")
    with pytest.raises(ProtocolError):
        broker._claim(3)  # not a valid encoding
    with pytest.raises(ProtocolError):
        broker._claim(99)
    master = WireBroker(False, LinkOptions(), reactor)
    with pytest.raises(ProtocolError, match="transfer parts before the login"):
        master.transfers.part(1, 0, 1, b"x")  # a master takes parts once the password check passed


# -- the link's timeouts and cancellation ------------------------------------------

class _Silent(protocol.Protocol):
    """A server that accepts and never says a word."""

    def __init__(self, lost: Deferred[None], made: Deferred[None] | None = None):
        self.lost = lost
        self.made = made

    def connectionMade(self) -> None:
        if self.made is not None and not self.made.called:
            self.made.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.lost.called:
            self.lost.callback(None)


@pytest_twisted.async_yield_fixture
async def silent_server(reactor: Any) -> AsyncIterator[tuple[int, Deferred[None], Deferred[None]]]:
    lost: Deferred[None] = Deferred()
    made: Deferred[None] = Deferred()
    factory = protocol.Factory.forProtocol(lambda: _Silent(lost, made))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    try:
        yield port.getHost().port, lost, made
    finally:
        await port.stopListening()


@async_test
async def test_worker_gives_up_on_a_master_that_never_answers(silent_server: Any, reactor: Any,
                                                              tmp_path: Any) -> None:
    port, lost, _ = silent_server
    c = load_backend("pb").create_connector(
        ScriptedWorker(str(tmp_path), reactor), f"tcp:host=127.0.0.1:port={port}", "w1", "pw",
        LinkOptions(keepalive_interval=None, login_timeout=0.2), reactor)
    with pytest.raises(ConnectionLost) as err:
        await within(c.probe(), reactor, what="the login timeout")
    assert "no login answer" in str(err.value)
    await within(lost, reactor, what="the connection to be closed")


@async_test
async def test_stopping_a_connector_mid_login_closes_the_connection(silent_server: Any, reactor: Any,
                                                                    tmp_path: Any) -> None:
    port, lost, made = silent_server
    c = load_backend("pb").create_connector(
        ScriptedWorker(str(tmp_path), reactor), f"tcp:host=127.0.0.1:port={port}", "w1", "pw",
        LinkOptions(keepalive_interval=None), reactor)
    connected = c.whenConnected()
    c.start()
    await within(made, reactor, what="the TCP connection")
    await within(c.stop(), reactor, what="the connector to stop")
    await within(lost, reactor, what="the half-made connection to be closed")
    with pytest.raises(ConnectionLost):
        await connected


@async_test
async def test_master_closes_connections_that_never_log_in(reactor: Any, tmp_path: Any) -> None:
    h = Harness(load_backend("pb"), LinkOptions(keepalive_interval=None, login_timeout=0.2), reactor, str(tmp_path))
    try:
        reg = await h.register("w1", "pw")
        lost: Deferred[None] = Deferred()
        factory = protocol.Factory.forProtocol(lambda: _Silent(lost))
        await TCP4ClientEndpoint(reactor, "127.0.0.1", reg.getPort()).connect(factory)
        await within(lost, reactor, what="the master to close an idle unauthenticated connection")
        w = await h.start_worker("w1", "pw")  # logins still work
        assert w.conn.isConnected
    finally:
        await h.close()


@async_test
async def test_tracebacks_cross_only_when_the_worker_is_configured_to_send_them(reactor: Any,
                                                                               tmp_path: Any) -> None:
    h = Harness(load_backend("pb"), LinkOptions(keepalive_interval=None), reactor, str(tmp_path))
    try:
        w = await h.start_worker(worker_options=LinkOptions(keepalive_interval=None, send_tracebacks=True))
        with pytest.raises(RemoteCallFailed) as err:
            await w.conn.remotePrint("raise:KeyError:with a traceback")
        assert err.value.type_name == "KeyError"
        assert "Traceback" in (err.value.remote_traceback or "")
    finally:
        await h.close()


@async_test
async def test_more_commands_than_pb_has_references(reactor: Any, tmp_path: Any) -> None:
    """PB refuses a 1025th live reference per link; finished commands' references
    are released even though this worker's bot keeps every channel."""
    h = Harness(load_backend("pb"), LinkOptions(keepalive_interval=None), reactor, str(tmp_path))
    try:
        w = await h.start_worker()
        for i in range(pb.MAX_BROKER_REFS + 50):
            if i % 2:
                rc = await h.run(w, "emit", {"updates": [["rc", i]]})
                assert rc.completions == [None] and rc.values("rc") == [i]
            else:  # a refused start releases its reference too
                with pytest.raises(UnknownCommand):
                    await w.conn.remoteStartCommand(RecordingCommand(), "b1", f"r{i}", "no-such", {})
    finally:
        await h.close()


@async_test
async def test_tcp_keepalive_is_set_on_both_ends(reactor: Any, tmp_path: Any) -> None:
    import socket

    h = Harness(load_backend("pb"), LinkOptions(keepalive_interval=None), reactor, str(tmp_path))
    try:
        w = await h.start_worker()
        master_end = w.conn._broker.transport.getHandle()  # type: ignore[attr-defined]
        worker_end = w.connector._session.broker.transport.getHandle()  # type: ignore[attr-defined]
        for sock in (master_end, worker_end):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    finally:
        await h.close()


def test_shared_references_cannot_expand_without_bound() -> None:
    """jelly shares containers by reference; a peer could make a small
    message unpack to a huge tree.  Unpacking stops at the node limit."""
    leaf = list(range(1000))
    bomb = [leaf] * 1000  # a million values from about a thousand on the wire
    sexp = jelly.jelly(bomb, OutgoingSecurity())
    assert len(repr(sexp)) < 100_000
    value = jelly.unjelly(sexp, IncomingSecurity())
    with pytest.raises(ProtocolError):
        from_peer(value, "value", 100_000)
    assert from_peer(value, "value", 2_000_000) == [leaf] * 1000  # small sharing is fine
    with pytest.raises(ProtocolError):
        normalize_updates([[{"a": value}, 0], [{"b": value}, 0]], limit=1_500_000)
