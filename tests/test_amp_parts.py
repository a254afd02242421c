"""Large Values in parts (capability ``parts``) and merged updates:
docs/protocols/amp.md sections 5 and 6."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_twisted import ensureDeferred as async_test

from workerwire import LinkOptions
from workerwire.conformance import Harness, RecordingCommand, within
from workerwire.conformance.scripted_worker import stream_line
from workerwire.values import encode
from workerwire.credentials import login_response
from workerwire.parts import IN_PARTS, TRANSFER, OutgoingValues, TransferIds, split
from workerwire_amp.wire import MAX_CHUNK
from workerwire_amp.commands import TextList

from test_amp_support import LogRecorder, RawPeer, box, connect_raw, hello_box

@pytest.fixture
def harness(make_harness: Any) -> Harness:
    return make_harness("amp", keepalive_interval=None)


def parts_of(key: str, data: bytes) -> dict[str, bytes]:
    return {(key if n == 0 else f"{key}.{n}"): bytes(p) for n, p in enumerate(split(data, MAX_CHUNK))}


async def login(reactor: Any, port: int, capabilities: list[str]) -> RawPeer:
    peer = await connect_raw(reactor, port)
    peer.send(hello_box("1", capabilities=TextList().toString(capabilities)))
    hello = await peer.wait_answer("1", reactor)
    assert "parts" in TextList().fromString(hello[b"capabilities"])
    peer.send(box(_command="Login", _ask="2", username="w1", response=login_response("pw", hello[b"challenge"])))
    assert b"_answer" in await peer.wait_answer("2", reactor)
    return peer


# -- pieces ---------------------------------------------------------------------------------


def test_outgoing_puts_large_values_in_parts_while_the_box_has_keys() -> None:
    out = OutgoingValues(limit=100 * MAX_CHUNK, part_size=MAX_CHUNK, next_id=TransferIds(), extra_parts=3)
    assert out.plan(3 * MAX_CHUNK) is IN_PARTS, "three parts: two keys beyond its own"
    assert out.plan(3 * MAX_CHUNK) is TRANSFER, "one key left, two needed: a transfer"
    assert out.plan(MAX_CHUNK + 1) is IN_PARTS and out.extra_parts == 0
    # A sentinel, not a number a transfer id could equal (it was 0, compared with `is`).
    assert not isinstance(IN_PARTS, int) and IN_PARTS is not TRANSFER
    data = bytes(range(256)) * 1000
    parts = split(data, MAX_CHUNK)
    assert [len(p) for p in parts[:-1]] == [MAX_CHUNK] * (len(parts) - 1) and b"".join(parts) == data


# -- end to end ----------------------------------------------------------------------------


@async_test
async def test_an_update_in_parts_reaches_the_command_as_one_value(harness: Harness, reactor: Any) -> None:
    reg = await harness.register("w1", "pw")
    peer = await login(reactor, reg.getPort(), ["chunks", "window", "parts"])
    conn = await within(harness.master.whenConnection("w1"), reactor)
    rc = RecordingCommand()
    started = conn.remoteStartCommand(rc, "b1", "c1", "emit", {})
    await within(peer.when(lambda: bool(peer.commands("StartCommand"))), reactor)
    peer.send(box(_answer=peer.commands("StartCommand")[0][b"_ask"].decode()))
    await started
    text = "é" * 200_000
    peer.send(box(_command="Update", _ask="3", command_id=encode("c1"),
                  **parts_of("updates", encode([["stdout", text], ["rc", 0]]))))
    assert b"_answer" in await peer.wait_answer("3", reactor)
    assert rc.updates == [("stdout", text), ("rc", 0)]
    peer.transport.loseConnection()


@pytest.mark.parametrize("breakage", ["short part", "empty last part", "gap", "with a transfer"])
@async_test
async def test_malformed_parts_close_the_connection(harness: Harness, reactor: Any, breakage: str) -> None:
    reg = await harness.register("w1", "pw")
    peer = await login(reactor, reg.getPort(), ["chunks", "window", "parts"])
    fields = parts_of("updates", encode([["stdout", "x" * 200_000]]))
    if breakage == "short part":
        fields["updates"] = fields["updates"][:-1]
    elif breakage == "empty last part":
        fields["updates.4"] = b""
    elif breakage == "gap":
        fields["updates.5"] = fields.pop("updates.3")
    else:
        fields["updates.transfer"] = b"1"
        del fields["updates"]
    with LogRecorder() as log:
        peer.send(box(_command="Update", _ask="3", command_id=encode("c1"), **fields))
        answer = await peer.wait_answer("3", reactor)
        await within(peer.closed, reactor, 5, "the master to close the link")
    assert answer[b"_error_code"] == b"ProtocolError"
    assert log.protocol_errors(peer.local)


@pytest.mark.parametrize("capabilities, in_parts", [(["chunks", "window", "parts"], True),
                                                    (["chunks", "window"], False)])
@async_test
async def test_the_master_sends_parts_only_to_a_worker_that_announced_them(
        harness: Harness, reactor: Any, capabilities: list[str], in_parts: bool) -> None:
    reg = await harness.register("w1", "pw")
    peer = await login(reactor, reg.getPort(), capabilities)
    conn = await within(harness.master.whenConnection("w1"), reactor)
    args = {"blob": "b" * 300_000}
    conn.remoteStartCommand(RecordingCommand(), "b1", "c1", "emit", args).addErrback(lambda f: None)
    await within(peer.when(lambda: bool(peer.commands("StartCommand"))), reactor)
    (start,) = peer.commands("StartCommand")
    if in_parts:
        assert not peer.commands("Chunk") and b"args.transfer" not in start
        data = b"".join(start[k] for k in [b"args"] + [b"args.%d" % n for n in range(1, 5)])
    else:
        assert b"args.1" not in start and b"args.transfer" in start
        data = b"".join(c[b"data"] for c in peer.commands("Chunk"))
    assert data == encode(args)
    peer.transport.loseConnection()


@async_test
async def test_updates_of_one_turn_share_a_box(harness: Harness, reactor: Any) -> None:
    w = await harness.start_worker()
    rc = RecordingCommand()
    await w.conn.remoteStartCommand(rc, "b1", "c1", "stream", {"count": 2000, "batch": 1})
    await within(rc.done, reactor, what="the stream")
    assert rc.values("stdout") == [stream_line(i) for i in range(2000)]
    assert rc.update_calls < 200, f"{rc.update_calls} Update boxes for 2001 updates"


@pytest.mark.parametrize("size", [1, 1000, MAX_CHUNK, MAX_CHUNK + 1, 3 * MAX_CHUNK + 17, 40 * MAX_CHUNK])
def test_a_value_given_as_pieces_goes_as_its_concatenation(size: int) -> None:
    """Inline, in parts or as a transfer, pieces arrive exactly as the joined
    bytes would have, and a box with parts is written as AMP writes a box."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.protocols import amp

    from workerwire.parts import Encoded, Part, split_pieces
    from workerwire_amp.wire import WireProtocol

    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    cut = [0, size // 3, size // 3 + 7, size]
    pieces = [data[a:b] for a, b in zip(cut, cut[1:])]
    parts = split_pieces(pieces, size, MAX_CHUNK)
    assert b"".join(b"".join(p.buffers) for p in parts) == data
    assert [len(p) for p in parts[:-1]] == [MAX_CHUNK] * (len(parts) - 1)

    proto = WireProtocol(LinkOptions(), Clock())
    proto.peer_parts = True
    proto.makeConnection(StringTransport())
    strings: dict[bytes, object] = {}
    proto._outgoing = OutgoingValues(10 * 1024 * 1024, MAX_CHUNK, TransferIds(), extra_parts=28)
    proto.put_value(b"v", strings, Encoded(pieces=pieces, size=size))
    transfers, proto._outgoing = proto._outgoing.transfers, None
    if transfers:
        assert strings == {b"v.transfer": b"1"} and transfers == [(1, data)]
        return
    joined = b"".join(b"".join(v.buffers) if isinstance(v, Part) else bytes(v)  # type: ignore[arg-type]
                      for _, v in sorted(strings.items(), key=lambda kv: (len(kv[0]), kv[0])))
    assert joined == data
    proto.sendBox(amp.AmpBox(strings))  # type: ignore[arg-type]
    plain = amp.AmpBox({k: b"".join(v.buffers) if isinstance(v, Part) else bytes(v)  # type: ignore[arg-type]
                        for k, v in strings.items()})
    assert proto.transport.value() == plain.serialize()  # type: ignore[union-attr]
