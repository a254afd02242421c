"""pb's chunking extension, version 2 (core's parts): malformed parts from a
logged-in peer, and a peer of the older extension version, which each end
treats as a stock PB peer (docs/protocols/pb.md, section 7).

The values that do travel in parts (16 MiB updates, 1 MiB of ``args``, large
results) are the conformance suite's (``tests/test_conformance.py -k pb``)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from workerwire.conformance import Harness, RecordingCommand, within
from workerwire.conformance.scripted_worker import stream_line
from workerwire.errors import UnsupportedValue
from workerwire.parts import MAX_TRANSFERS
from workerwire_pb import broker as broker_module
from workerwire_pb import connection

from test_pb_hostile import LogWatch

LIMIT = 1024 * 1024


@pytest.fixture
def harness(make_harness: Any) -> Harness:
    return make_harness("pb", keepalive_interval=None, max_message_size=LIMIT)


@pytest.fixture
def log() -> Iterator[LogWatch]:
    watch = LogWatch()
    globalLogPublisher.addObserver(watch)
    yield watch
    globalLogPublisher.removeObserver(watch)


# Each case: the parts a logged-in worker sends (workerwire.part arguments), what the master's log then says.
MALFORMED = {
    "too few arguments": ([(1, 0, 4)], "workerwire.part takes (transfer, offset, total, data)"),
    "id not an int": ([("1", 0, 4, b"data")], "a part is (int transfer, int offset, int total, bytes data)"),
    "data not bytes": ([(1, 0, 4, "data")], "a part is (int transfer, int offset, int total, bytes data)"),
    "id 0": ([(0, 0, 4, b"data")], "transfer id 0 must be positive"),
    "empty data": ([(1, 0, 4, b"")], "empty data"),
    "starts past 0": ([(1, 4, 8, b"data")], "offset 4 of transfer 1, which is not in progress"),
    "gap": ([(1, 0, 8, b"data"), (1, 5, 8, b"data")], "transfer 1 expected offset 4, got 5"),
    "total changes": ([(1, 0, 8, b"data"), (1, 4, 9, b"data")], "transfer 1 declared total 8, now 9"),
    "runs past total": ([(1, 0, 3, b"data")], "transfer 1 runs past its declared total of 3 bytes"),
    "id reused": ([(1, 0, 4, b"data"), (1, 0, 4, b"data")], "transfer id 1 is already in use"),
    "total over the limit": ([(1, 0, LIMIT + 1, b"data")], f"exceeds the limit of {LIMIT} bytes"),
    "too many unclaimed": ([(n, 0, 1, b"x") for n in range(1, MAX_TRANSFERS + 2)],
                           f"transfer {MAX_TRANSFERS + 1} starts while {MAX_TRANSFERS} transfers"),
    "unclaimed over the limit": ([(1, 0, LIMIT - 3, b"data"), (2, 0, 4, b"data")],
                                 f"message of {LIMIT + 1} bytes exceeds the limit of {LIMIT} bytes"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@async_test
async def test_a_malformed_part_closes_the_link(case: str, harness: Harness, reactor: Any, log: LogWatch) -> None:
    parts, says = MALFORMED[case]
    w = await harness.start_worker()
    lost: Deferred[None] = Deferred()
    w.conn.notifyOnDisconnect(lambda: lost.callback(None))
    logged = log.when(f"pb protocol error from worker {w.conn.workerName!r} at {w.conn.get_peer()}: ")
    specific = log.when(says)
    ext = w.connector._session.broker.remoteForName(b"workerwire")  # type: ignore[attr-defined]
    for part in parts:
        ext.callRemote("part", *part, pbanswer=False)
    await within(lost, reactor, what=f"the master to drop the link ({case})")
    await within(logged, reactor, what="the logged protocol error")
    await within(specific, reactor, what=f"the log to say {says!r}")


@pytest.fixture
def old_extension_worker(monkeypatch: Any) -> None:
    """The worker's broker behaves as one of extension version 1 did: it
    answers ``features`` with version 1 and takes the master (version 2) for
    a stock peer (version 1 accepted only version 1).  A fake of the old
    release's negotiation, which no installable package ships."""
    features, got = broker_module._Extension.remote_features, broker_module.WireBroker._got_features

    def remote_features(self: Any) -> dict[str, Any]:
        if self.broker.isClient:
            return {"protocol": 1, "chunks": True, "packed_updates": True}
        return features(self)

    def got_features(self: Any, result: Any) -> None:
        if not self.isClient:
            got(self, result)

    monkeypatch.setattr(broker_module._Extension, "remote_features", remote_features)
    monkeypatch.setattr(broker_module.WireBroker, "_got_features", got_features)


@async_test
async def test_a_peer_of_the_old_extension_version_is_treated_as_a_stock_peer(
        harness: Harness, reactor: Any, log: LogWatch, old_extension_worker: None, monkeypatch: Any) -> None:
    warned = log.when("speaks version 1 of workerwire's pb extension, this side 2: treated as a stock PB peer")
    packed_calls: list[Any] = []
    packed = connection._CommandRef.remote_packedUpdate
    monkeypatch.setattr(connection._CommandRef, "remote_packedUpdate",
                        lambda self, *args: packed_calls.append(args) or packed(self, *args))
    w = await harness.start_worker()
    await within(warned, reactor, what="the master's warning about the old extension version")

    # A value over banana's limit fails clearly, as against a stock peer, and the link stays usable.
    with pytest.raises(UnsupportedValue, match=r"the arguments of startCommand are too large for one PB frame and "
                                               r"the peer speaks version 1 of workerwire's pb extension, this "
                                               r"side 2 \(upgrade the older end\)"):
        await w.conn.remoteStartCommand(RecordingCommand(), "b1", "c1", "echo", {"big": "x" * (700 * 1024)})
    rc = await harness.run(w, "stream", {"count": 50})
    assert rc.values("stdout") == [stream_line(i) for i in range(50)] and rc.completions == [None]
    assert packed_calls == [], "no packed updates: the worker took the master for a stock peer"
