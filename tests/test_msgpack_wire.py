"""The msgpack dialect's own rules, checked with a raw WebSocket client (autobahn,
no workerwire worker code) against a workerwire master: the extension headers,
messages in parts and their limit, text messages, Basic-auth errors, and the
flow-control window a hostile worker may not exceed, nesting in a message in parts."""

from __future__ import annotations

import base64
from typing import Any, AsyncIterator

import msgpack
import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint

from workerwire import LinkOptions, load_backend
from workerwire.conformance import RecordingCommand, RecordingMaster, within
from workerwire_msgpack.master import parse_basic_auth
from workerwire_msgpack.wire import DIALECT_HEADER, MAX_MESSAGE_HEADER, PART_SIZE, WINDOW_HEADER

WINDOW = 64 * 1024


class RawWorker(WebSocketClientProtocol):
    """Logs in with the extension and answers only what the test scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[Any] = Deferred()
        self.closed: Deferred[tuple[Any, Any]] = Deferred()
        self.messages: list[dict[str, Any]] = []
        self.response_headers: dict[str, str] = {}
        self.on_message: Any = None

    def onConnect(self, response: Any) -> None:
        self.response_headers = dict(response.headers)

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        msg = msgpack.unpackb(payload, raw=False)
        self.messages.append(msg)
        if msg.get("op") not in (None, "response"):
            self.send({"op": "response", "seq_number": msg["seq_number"], "result": None})
        if self.on_message is not None:
            self.on_message(msg)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.closed.called:
            self.closed.callback((code, reason))

    def send(self, msg: dict[str, Any]) -> None:
        self.sendMessage(msgpack.packb(msg, use_bin_type=True), isBinary=True)


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture
async def master(reactor: Any) -> AsyncIterator[tuple[RecordingMaster, int]]:
    recording = RecordingMaster(reactor)
    options = LinkOptions(keepalive_interval=None, output_window=WINDOW, max_message_size=4 * PART_SIZE)
    listener = load_backend("msgpack").create_listener(recording, options, reactor)
    reg = await listener.updateRegistration("w1", "pw", "tcp:port=0:interface=127.0.0.1")
    yield recording, int(reg.getPort())
    await listener.stopListening()


async def dial(reactor: Any, port: int, password: str = "pw", extended: bool = True) -> RawWorker:
    headers = {"Authorization": "Basic " + base64.b64encode(f"w1:{password}".encode()).decode()}
    if extended:
        headers.update({DIALECT_HEADER: "1", MAX_MESSAGE_HEADER: str(64 * 1024 * 1024)})
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/", headers=headers)
    factory.protocol = RawWorker
    proto: RawWorker = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    return proto


def test_basic_auth_header_parsing() -> None:
    assert parse_basic_auth("Basic " + base64.b64encode("wörker:pa:ss".encode()).decode()) == ("wörker", "pa:ss")
    for bad in ("Bearer abc", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        with pytest.raises(ValueError):
            parse_basic_auth(bad)


@async_test
async def test_the_extension_is_announced_and_the_login_finishes_with_ww_attached(master: Any,
                                                                                   reactor: Any) -> None:
    recording, port = master
    raw = await dial(reactor, port)
    await within(raw.opened, reactor, what="the upgrade")
    assert raw.response_headers[DIALECT_HEADER.lower()] == "1"
    assert int(raw.response_headers[WINDOW_HEADER.lower()]) == WINDOW
    conn = await within(recording.whenConnection("w1"), reactor, what="the connection")
    attached: Deferred[None] = Deferred()
    raw.on_message = lambda msg: msg["op"] == "ww_attached" and not attached.called and attached.callback(None)
    if any(m["op"] == "ww_attached" for m in raw.messages):
        attached.callback(None)
    await within(attached, reactor, what="ww_attached")
    assert conn.isConnected
    raw.transport.loseConnection()


@async_test
async def test_a_stock_worker_gets_no_extension(master: Any, reactor: Any) -> None:
    recording, port = master
    raw = await dial(reactor, port, extended=False)
    await within(raw.opened, reactor, what="the upgrade")
    assert DIALECT_HEADER.lower() not in raw.response_headers
    await within(recording.whenConnection("w1"), reactor, what="the connection")
    assert not any(m["op"].startswith("ww_") for m in raw.messages)
    raw.transport.loseConnection()


@async_test
async def test_a_wrong_password_is_http_401_before_any_websocket(master: Any, reactor: Any) -> None:
    recording, port = master
    raw = await dial(reactor, port, password="wrong")
    await within(raw.closed, reactor, what="the refusal")
    assert not raw.opened.called and recording.offers == []
    assert raw.http_status_line.split()[1] == "401"


async def logged_in(master: Any, reactor: Any) -> tuple[RawWorker, Any]:
    recording, port = master
    raw = await dial(reactor, port)
    await within(raw.opened, reactor, what="the upgrade")
    conn = await within(recording.whenConnection("w1"), reactor, what="the connection")
    return raw, conn


@async_test
async def test_a_message_in_parts_arrives_whole_and_parts_beyond_the_limit_close_the_link(
        master: Any, reactor: Any) -> None:
    raw, conn = await logged_in(master, reactor)

    rc = RecordingCommand()
    await conn.remoteStartCommand(rc, "b1", "c1", "shell", {})
    blob = bytes(range(256)) * (3 * PART_SIZE // 256)  # 3 MiB: four parts
    data = msgpack.packb({"op": "update", "seq_number": 0, "command_id": "c1", "args": [["stdout", blob]]},
                         use_bin_type=True)
    for start in range(0, len(data), PART_SIZE):
        raw.send({"op": "ww_part", "data": data[start:start + PART_SIZE], "last": start + PART_SIZE >= len(data)})
    await within(rc.whenUpdated(lambda: bool(rc.updates)), reactor, what="the update in parts")
    assert rc.updates == [("stdout", blob)]
    # More than max_message_size (4 MiB) in parts: a protocol error, the link closes with 4002.
    for _ in range(5):
        raw.send({"op": "ww_part", "data": b"x" * PART_SIZE, "last": False})
    code, reason = await within(raw.closed, reactor, what="the close")
    assert code == 4002 and "exceeds the limit" in reason
    assert not conn.isConnected


@async_test
async def test_a_text_message_is_a_protocol_error(master: Any, reactor: Any) -> None:
    raw, conn = await logged_in(master, reactor)
    raw.sendMessage(b'{"op": "update"}', isBinary=False)
    code, reason = await within(raw.closed, reactor, what="the close")
    assert code == 4002 and "binary MessagePack" in reason


@async_test
async def test_a_worker_flooding_past_the_window_is_closed(master: Any, reactor: Any) -> None:
    raw, conn = await logged_in(master, reactor)

    class SlowMaster(RecordingCommand):
        def remote_update(self, updates: Any) -> Deferred[None]:
            super().remote_update(updates)
            return Deferred()  # never acknowledged

    rc = SlowMaster()
    await conn.remoteStartCommand(rc, "b1", "c1", "shell", {})
    chunk = b"y" * (32 * 1024)
    for seq in range(100):  # 3.2 MiB without waiting for one answer; the window is 64 KiB
        raw.send({"op": "update", "seq_number": seq, "command_id": "c1", "args": [["stdout", chunk]]})
    code, reason = await within(raw.closed, reactor, what="the close")
    assert code == 4002 and "flow-control window" in reason
    assert rc.update_calls < 100


def nested_update(command_id: str, depth: int) -> bytes:
    """An update with one pair ("stdout", value), value *depth* lists deep, built by hand
    (our encoder refuses more than 256)."""
    head = b"".join(msgpack.packb(x) for x in ("op", "update", "seq_number", 0, "command_id", command_id, "args"))
    return b"\x84" + head + b"\x91\x92" + msgpack.packb("stdout") + b"\x91" * (depth - 1) + b"\x90"


def nesting(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        depth, value = depth + 1, (value[0] if value else None)
    return depth


@async_test
async def test_nesting_in_a_message_in_parts_counts_from_the_value(master: Any, reactor: Any) -> None:
    """The reassembled message has the same framing allowance as a whole one:
    256 levels counted from the value arrive, 257 close the link with 4002."""
    raw, conn = await logged_in(master, reactor)
    rc = RecordingCommand()
    await conn.remoteStartCommand(rc, "b1", "c1", "shell", {})
    data = nested_update("c1", 256)
    half = len(data) // 2
    raw.send({"op": "ww_part", "data": data[:half], "last": False})
    raw.send({"op": "ww_part", "data": data[half:], "last": True})
    await within(rc.whenUpdated(lambda: bool(rc.updates)), reactor, what="the nested update in parts")
    [(key, value)] = rc.updates
    assert key == "stdout" and nesting(value) == 256

    raw.send({"op": "ww_part", "data": nested_update("c1", 257), "last": True})
    code, reason = await within(raw.closed, reactor, what="the close")
    assert code == 4002 and "nested deeper than 256" in reason
    assert len(rc.updates) == 1

