"""A worker with valid credentials that misbehaves: floods without reading,
sends huge ids to be echoed, nests values too deep.

These tests drive the backend's :meth:`~workerwire.backend.Backend.raw_frames`
hook (:mod:`workerwire.conformance.raw_frames`): a logged-in worker link whose
further bytes the test writes by hand.  A backend without the hook fails them.
"""

from __future__ import annotations

from typing import Any

from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater

from ..errors import ConnectionLost
from .harness import TIMEOUT, Harness, RecordingCommand, WorkerHandle, within
from .raw_frames import RawFrames

__all__ = ["HostilePeerTests", "FLOOD_RSS_BOUND"]

KiB = 1024
MiB = 1024 * KiB
#: How much the test process's RSS may grow while one worker floods the
#: master without reading (its send queue is bounded to 1 MiB in the test;
#: the margin covers the allocator, the good worker's jobs and the attacker's
#: own buffers, all in this one process).
FLOOD_RSS_BOUND = 64 * MiB
#: The answers to a request about a 60,000-character name: each repeats at
#: most this many bytes of it (with its framing).
ANSWER_BOUND = 2 * KiB


def rss() -> int | None:
    """This process's resident set size in bytes (Linux), or None."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * KiB
    except OSError:
        return None
    return None


def disconnected(conn: Any) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    conn.notifyOnDisconnect(lambda: None if d.called else d.callback(None))
    return d


def nesting(value: Any) -> int:
    """Levels of lists in a value made by ``nested_update`` (iteratively)."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


class HostilePeerTests:
    """Per-connection memory budget, reply amplification and nesting, on every backend."""

    async def _rogue(self, harness: Harness, name: str = "rogue") -> tuple[WorkerHandle, RawFrames]:
        handle = await harness.start_worker(name, worker_options=harness.options.with_(keepalive_interval=None))
        return handle, harness.backend.raw_frames(handle.connector)

    @async_test
    async def test_a_peer_that_sends_without_reading_is_paused_then_dropped_while_others_run(
            self, harness: Harness) -> None:
        harness.use_options(harness.options.with_(
            send_queue_limit=1 * MiB, send_queue_resume=256 * KiB, send_queue_timeout=1.0))
        reactor = harness.reactor
        good = await harness.start_worker("good")
        rogue, raw = await self._rogue(harness)
        gone = disconnected(rogue.conn)
        stats = harness.listener.login_guard.stats  # type: ignore[attr-defined]

        jobs = {"done": 0, "during": 0, "stop": False}

        async def job_loop() -> None:
            while not jobs["stop"]:
                rc = await harness.run(good, "stream", {"count": 40, "batch": 8})
                assert rc.completions == [None] and rc.updates[-1] == ("rc", 0)
                jobs["done"] += 1
                if not gone.called:
                    jobs["during"] += 1

        loop = ensureDeferred(job_loop())
        raw.stop_reading()
        frame = raw.request("flood-" + "x" * 74)  # answered with an error that repeats 80 characters of it
        before = rss()
        peak = before or 0
        sent = 0
        started = reactor.seconds()
        while not gone.called:
            if reactor.seconds() - started > 4 * TIMEOUT:
                raise AssertionError(
                    f"the master did not drop a worker that sent {sent} bytes without reading for "
                    f"{4 * TIMEOUT:g} s (paused {stats['send_queue_paused']} times)")
            for _ in range(8192):  # up to 256 KiB unsent: the attacker's own memory stays small
                if raw.unsent() >= 256 * KiB:
                    break
                raw.write(frame)
                sent += len(frame)
            now = rss()
            if now is not None and now > peak:
                peak = now
            await deferLater(reactor, 0.002, lambda: None)  # pacing the flood, not a wait for an event
        print(f"[{harness.backend.name}] dropped after {reactor.seconds() - started:.1f} s, {sent / MiB:.1f} MiB sent, "
              f"RSS +{(peak - (before or 0)) / MiB:.1f} MiB, {dict(stats)}, jobs {jobs}")
        done_at_drop = jobs["done"]
        await within(_until(lambda: jobs["done"] >= done_at_drop + 2, reactor), reactor,
                     what="the good worker's jobs after the drop")
        jobs["stop"] = True
        await within(loop, reactor, what="the job loop to end")

        assert stats["send_queue_paused"] >= 1, (f"still connected: {rogue.conn.isConnected}", dict(stats))
        assert stats["send_queue_dropped"] == 1
        assert good.conn.isConnected, "the legitimate worker was disconnected"
        assert jobs["during"] >= 1, "the legitimate worker finished no job during the flood"
        if before is not None:
            assert peak - before < FLOOD_RSS_BOUND, (
                f"RSS grew by {(peak - before) / MiB:.1f} MiB during the flood (bound "
                f"{FLOOD_RSS_BOUND / MiB:.0f} MiB; {sent / MiB:.1f} MiB sent)")

    @async_test
    async def test_error_answers_do_not_echo_unbounded_input(self, harness: Harness) -> None:
        rogue, raw = await self._rogue(harness)
        huge = "n" * 60_000
        sentinel = "sentinel-of-the-echo-test"
        for _ in range(8):
            raw.write(raw.request(huge))
        raw.write(raw.request(sentinel))
        await within(_until(lambda: sentinel.encode() in raw.tail, harness.reactor), harness.reactor,
                     what="the answer about the sentinel (answers come in order)")
        assert raw.received < 9 * ANSWER_BOUND, (
            f"9 answers to requests about long names took {raw.received} bytes: they echo the input")
        assert rogue.conn.isConnected, "an answered error must not close the link"

    async def _nested(self, harness: Harness, depth: int) -> tuple[WorkerHandle, RecordingCommand]:
        rogue = await harness.start_worker("rogue", worker_options=harness.options.with_(keepalive_interval=None))
        rc = RecordingCommand()
        await within(rogue.conn.remoteStartCommand(rc, "b1", "deep", "hang", {}), harness.reactor,
                     what="the worker to accept the command")
        raw = harness.backend.raw_frames(rogue.connector)  # from here on the test writes its bytes
        raw.write(raw.nested_update("deep", depth))
        return rogue, rc

    @async_test
    async def test_a_value_nested_256_deep_arrives(self, harness: Harness) -> None:
        rogue, rc = await self._nested(harness, 256)
        await within(rc.whenUpdated(lambda: bool(rc.updates)), harness.reactor, what="the nested update")
        [(key, value)] = rc.updates
        assert key == "stdout" and nesting(value) == 256
        assert rogue.conn.isConnected

    @async_test
    async def test_a_value_nested_257_deep_closes_the_link(self, harness: Harness) -> None:
        await self._nested_closes(harness, 257)

    @async_test
    async def test_a_value_nested_60000_deep_closes_the_link(self, harness: Harness) -> None:
        await self._nested_closes(harness, 60_000)

    async def _nested_closes(self, harness: Harness, depth: int) -> None:
        good = await harness.start_worker("good")
        rogue, rc = await self._nested(harness, depth)
        await within(disconnected(rogue.conn), harness.reactor, what=f"the link to close after nesting {depth}")
        await within(rc.done, harness.reactor, what="the command to end with the link")
        assert rc.updates == []
        assert rc.completions[0] is not None and rc.completions[0].check(ConnectionLost)
        done = await harness.run(good, "stream", {"count": 10})
        assert done.completions == [None], "another worker on the same master must keep running"


def _until(predicate: Any, reactor: Any, interval: float = 0.01) -> Deferred[None]:
    """Fires once *predicate()* is true, looking every *interval* seconds
    (for states that no callback announces; callers bound it with ``within``)."""

    async def poll() -> None:
        while not predicate():
            await deferLater(reactor, interval, lambda: None)

    return ensureDeferred(poll())

