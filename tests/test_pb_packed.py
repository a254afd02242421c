"""pb between workerwire ends: output as ``packedUpdate`` (MessagePack), merged
per reactor turn, pipelined under the window (docs/protocols/pb.md, section 7)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from pytest_twisted import ensureDeferred as async_test

from workerwire import LinkOptions
from workerwire.base_connection import BaseConnection
from workerwire.conformance import Harness, RecordingCommand, within
from workerwire.conformance.scripted_worker import stream_line
from workerwire.errors import ProtocolError
from workerwire.flow import ReceiveWindow
from workerwire.values import encode
from workerwire_pb import connection


@pytest.fixture
def harness(make_harness: Any) -> Harness:
    return make_harness("pb", keepalive_interval=None)


@async_test
async def test_a_workerwire_worker_sends_packed_merged_updates(harness: Harness, reactor: Any,
                                                               monkeypatch: Any) -> None:
    calls = {"packed": 0, "buildbot": 0}
    packed, buildbot = connection._CommandRef.remote_packedUpdate, connection._CommandRef.remote_update

    def count(kind: str, method: Any) -> Any:
        def counted(self: Any, *args: Any) -> Any:
            calls[kind] += 1
            return method(self, *args)
        return counted

    monkeypatch.setattr(connection._CommandRef, "remote_packedUpdate", count("packed", packed))
    monkeypatch.setattr(connection._CommandRef, "remote_update", count("buildbot", buildbot))
    w = await harness.start_worker()
    rc = RecordingCommand()
    await w.conn.remoteStartCommand(rc, "b1", "c1", "stream", {"count": 2000, "batch": 1})
    await within(rc.done, reactor, what="the stream")
    assert rc.values("stdout") == [stream_line(i) for i in range(2000)]
    assert calls["buildbot"] == 0 and 0 < calls["packed"] < 200, calls
    rc2 = RecordingCommand()
    updates = [["log", ["build.log", "ünïcode\n"]], ["stat", {"a": [1, 2.5, None, True, b"\x00"]}], ["rc", 0]]
    await w.conn.remoteStartCommand(rc2, "b1", "c2", "emit", {"updates": updates})
    await within(rc2.done, reactor, what="the emitted updates")
    assert rc2.updates == [(k, v) for k, v in updates]


class _Broker:
    """Records the protocol errors that would close the link (no socket here)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def protocol_error(self, reason: str) -> None:
        self.errors.append(reason)


class _Conn:
    def __init__(self) -> None:
        self.options = LinkOptions(max_message_size=1024 * 1024)
        self.delivered: list[Any] = []
        self._broker = _Broker()
        self.receive_window = ReceiveWindow(2 * self.options.output_window + 2**20)  # as BaseConnection's

    def on_update(self, commandId: str, updates: list[Any]) -> None:
        self.delivered.append((commandId, updates))

    on_windowed_update = BaseConnection.on_windowed_update  # core's: admit, on_update, hold


def test_packed_updates_are_decoded_and_checked_by_the_core_codec() -> None:
    conn = _Conn()
    ref = connection._CommandRef(conn, "c1")  # type: ignore[arg-type]
    ref.remote_packedUpdate([encode([["stdout", "a"]]), encode([["stdout", "b"], ["rc", 0]])])
    assert conn.delivered == [("c1", [("stdout", "a"), ("stdout", "b"), ("rc", 0)])]


@pytest.mark.parametrize("packed", [
    b"not a list",
    [encode([["stdout", "x"]]), "text"],
    [b"\xc1"],  # not MessagePack
    [encode({"stdout": "x"})],
    [encode([["stdout"]])],
    [encode([[1, "x"]])],
    [msgpack.packb([["stdout", msgpack.ExtType(1, b"x")]])],
    [msgpack.packb([["stat", {1: "int key"}]], strict_types=False)],
    [encode([["stdout", "x" * 2_000_000]])],  # over max_message_size
])
def test_malformed_packed_updates_are_refused(packed: Any) -> None:
    conn = _Conn()
    with pytest.raises(ProtocolError):
        connection._CommandRef(conn, "c1").remote_packedUpdate(packed)  # type: ignore[arg-type]
    assert conn.delivered == []


@pytest.mark.parametrize("depth, closes", [(256, False), (257, True), (60_000, True)])
def test_a_packed_value_nested_too_deep_closes_the_link(depth: int, closes: bool) -> None:
    conn = _Conn()
    packed = [b"\x91\x92" + msgpack.packb("stdout") + b"\x91" * (depth - 1) + b"\x90"]
    ref = connection._CommandRef(conn, "c1")  # type: ignore[arg-type]
    if not closes:
        ref.remote_packedUpdate(packed)
        assert len(conn.delivered) == 1 and not conn._broker.errors
        return
    with pytest.raises(ProtocolError, match="nested deeper than 256"):
        ref.remote_packedUpdate(packed)
    assert conn.delivered == []
    assert conn._broker.errors and "nested deeper than 256" in conn._broker.errors[0]
