"""Hostile peers, on every backend.

:class:`HostilePeerTests`: a worker with valid credentials that misbehaves:
floods without reading, sends huge ids to be echoed, nests values too deep.

:class:`HostileInputTests`: input that breaks the dialect, before and after the
login: an oversized first frame (the 64 KiB pre-login limit), a peer that never
logs in (the login timeout), updates and completions of commands that are not
running (forged ids), messages out of phase (an update before the login, a
login after it), a worker that overruns the output window, garbage bytes.

Both drive the backend's hooks of :mod:`workerwire.conformance.raw_frames`
(``Backend.raw_frames``: a logged-in worker link whose further bytes the test
writes by hand; ``Backend.raw_connect``: a fresh link that has not logged in).
A backend without them fails these tests; none of them is skipped.
"""

from __future__ import annotations

from typing import Any

from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater

from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from zope.interface import implementer

from ..errors import ConnectionLost
from ..login_guard import MAX_LOGIN_INPUT
from .harness import TIMEOUT, Harness, RecordingCommand, WorkerHandle, within
from .raw_frames import RawFrames

__all__ = ["HostilePeerTests", "HostileInputTests", "FLOOD_RSS_BOUND", "window_bound"]

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


def window_bound(window: int) -> int:
    """The most bytes of updates a master may hold unacknowledged from one worker
    before it must refuse the link: the window, with room for a worker that
    counts its updates by an estimate of their size (twice the window) and
    for the one batch it may add beyond it (1 MiB)."""
    return 2 * window + MiB


class _HeldCommand(RecordingCommand):
    """Holds every update's acknowledgement (its ``remote_update`` Deferred never fires)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Deferred[None]] = []
        self.payload_bytes = 0

    def remote_update(self, updates: Any) -> object:
        super().remote_update(updates)
        self.payload_bytes += sum(len(v) for _, v in updates if isinstance(v, (str, bytes)))
        d: Deferred[None] = Deferred()
        self.held.append(d)
        return d


@implementer(ILogObserver)
class _Log:
    """Log lines of warnings and errors, from now on (for "a clear error")."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __enter__(self) -> "_Log":
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        globalLogPublisher.removeObserver(self)

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level is not None and level.name in ("warn", "error", "critical"):
            self.lines.append(formatEvent(event) or "")


class HostileInputTests:
    """Input that breaks the dialect, before and after the login: the link that
    sent it is refused (closed, or answered with a protocol error where the
    peer is logged in), nothing of it reaches the portal or a command, and the
    master keeps serving its other workers."""

    async def _fresh(self, harness: Harness) -> RawFrames:
        """A fresh link to the port of the worker ``good`` (registered first), not logged in."""
        reg = harness.listener.getRegistration("good") or await harness.register("good", "secret-good")
        raw: RawFrames = await within(harness.backend.raw_connect(reg.getAddress(), harness.reactor),
                                      harness.reactor, what="a raw link to the master")
        return raw

    async def _still_serving(self, harness: Harness, *workers: WorkerHandle) -> None:
        """Every worker in *workers* runs a command, and a new worker logs in."""
        for w in workers:
            rc = await harness.run(w, "emit", {"updates": [["stdout", f"{w.name} still here"]]})
            assert rc.values("stdout") == [f"{w.name} still here"] and rc.completions == [None]
        late = await harness.start_worker()
        assert late.conn.isConnected

    async def _closed_before_login(self, harness: Harness, raw: RawFrames, data: bytes, what: str) -> None:
        good = await harness.start_worker("good")
        offers = len(harness.master.offers)
        guard = getattr(harness.listener, "login_guard", None)  # core's, on a BaseListener
        checked = {} if guard is None else dict(guard.stats)
        with _Log() as log:
            raw.write(data)
            await within(raw.closed, harness.reactor, what=f"the master to close a link that sent {what}")
        assert len(harness.master.offers) == offers, f"{what}: a login reached the master"
        if guard is not None:
            for count in ("refused", "throttled", "delayed"):
                assert guard.stats[count] == checked.get(count, 0), f"{what}: credentials reached the portal ({count})"
        assert log.lines, f"{what}: the master closed the link without saying why"
        if guard is not None:
            await within(_until(lambda: guard.unauthenticated == 0, harness.reactor), harness.reactor,
                         what=f"the login guard to forget the link that sent {what}")
        await self._still_serving(harness, good)

    @async_test
    async def test_an_oversized_first_frame_closes_the_link_before_the_login(self, harness: Harness) -> None:
        raw = await self._fresh(harness)
        # More than the limit, sent at once: the master must not wait for the end of the frame.
        await self._closed_before_login(harness, raw, raw.oversized(MAX_LOGIN_INPUT + 64 * KiB),
                                        f"a first frame over the pre-login limit of {MAX_LOGIN_INPUT} bytes")

    @async_test
    async def test_garbage_before_the_login_closes_the_link(self, harness: Harness) -> None:
        raw = await self._fresh(harness)
        await self._closed_before_login(harness, raw, raw.garbage(512), "garbage before the login")

    @async_test
    async def test_an_update_before_the_login_closes_the_link(self, harness: Harness) -> None:
        raw = await self._fresh(harness)
        await self._closed_before_login(harness, raw, raw.update("c1", 100), "an update before the login")

    @async_test
    async def test_a_peer_that_never_logs_in_is_closed_after_the_login_timeout(self, harness: Harness) -> None:
        login_timeout = 1.0
        harness.use_options(harness.options.with_(login_timeout=login_timeout))
        good = await harness.start_worker("good")
        started = harness.reactor.seconds()
        raw = await self._fresh(harness)
        await within(raw.closed, harness.reactor, what="the login timeout to close a silent peer")
        waited = harness.reactor.seconds() - started
        assert waited >= 0.9 * login_timeout, f"closed after {waited:.2f} s, before the login timeout"
        assert len(harness.master.offers) == 1
        await self._still_serving(harness, good)

    @async_test
    async def test_a_login_the_master_has_not_accepted_by_the_login_timeout_ends(self, harness: Harness) -> None:
        """The login timeout covers the whole login, the master's acceptance
        included: a link whose worker the master has not accepted within it is
        closed as a silent peer's is, and the master keeps serving."""
        login_timeout = 1.0
        harness.use_options(harness.options.with_(login_timeout=login_timeout))
        good = await harness.start_worker("good")
        reg = await harness.register("slow", "secret-slow")
        accept: Deferred[None] = Deferred()
        harness.master.hold = accept
        connector, _ = harness.connector(reg.getAddress(), "slow", "secret-slow")
        connector.start()
        try:
            held = await within(harness.master.held, harness.reactor, what="the master to be offered 'slow'")
            started = harness.reactor.seconds()
            lost: Deferred[None] = Deferred()
            held.notifyOnDisconnect(lambda: lost.callback(None))
            await within(lost, harness.reactor, what="the login timeout to end a login the master has not accepted")
            waited = harness.reactor.seconds() - started
            assert waited <= login_timeout + TIMEOUT / 2, f"ended after {waited:.2f} s"
            assert not held.isConnected
        finally:
            connector.stop()
            harness.master.hold = None
            accept.callback(None)  # the master accepts at last: a closed link does not attach
        assert "slow" not in harness.master.connections
        await self._still_serving(harness, good)

    async def _two_running(self, harness: Harness) -> tuple[WorkerHandle, RecordingCommand, WorkerHandle,
                                                            RecordingCommand, RawFrames]:
        """``good`` and ``rogue`` each with a command running (``g1``, ``r1``); the rogue's link taken over."""
        good = await harness.start_worker("good", builders=["b1", "b2"])
        rogue = await harness.start_worker("rogue", builders=["b1", "b2"],
                                           worker_options=harness.options.with_(keepalive_interval=None))
        commands = []
        for w, cid in ((good, "g1"), (rogue, "r1")):  # on b2: b1 stays free for _still_serving
            rc = RecordingCommand()
            await within(w.conn.remoteStartCommand(rc, "b2", cid, "hang", {}), harness.reactor,
                         what="the worker to accept the command")
            commands.append(rc)
        return good, commands[0], rogue, commands[1], harness.backend.raw_frames(rogue.connector)

    async def _answered_or_closed(self, harness: Harness, rogue: WorkerHandle, raw: RawFrames, what: str) -> bool:
        """Writes a request about a sentinel after what the test wrote; True once it
        was answered (answers come in order), False if the link closed instead."""
        gone = disconnected(rogue.conn)
        sentinel = "sentinel-after-" + what.replace(" ", "-")
        raw.write(raw.request(sentinel))
        answered = _until(lambda: sentinel.encode() in raw.tail or gone.called, harness.reactor)
        await within(answered, harness.reactor, what=f"the master to answer or close after {what}")
        return not gone.called

    @async_test
    async def test_updates_and_completions_of_commands_not_running_are_refused(self, harness: Harness) -> None:
        good, rc_good, rogue, rc_rogue, raw = await self._two_running(harness)
        # The other worker's running command, and ids never used.
        for forged in ("g1", "forged-1"):
            raw.write(raw.update(forged, 100))
            raw.write(raw.complete(forged))
        open_ = await self._answered_or_closed(harness, rogue, raw, "forged command ids")
        if open_:
            assert raw.tail.count(b"ProtocolError") >= 4, (
                f"forged updates and completions were not refused as protocol errors: {raw.tail[-2000:]!r}")
            assert rogue.conn.isConnected and not rc_rogue.done.called, "the rogue's own command was touched"
        assert rc_rogue.updates == [] and rc_good.updates == [], "a forged update reached a command"
        assert not rc_good.done.called, "a forged completion ended another worker's command"
        await self._still_serving(harness, good)

    @async_test
    async def test_a_login_after_the_login_is_refused(self, harness: Harness) -> None:
        good, rc_good, rogue, rc_rogue, raw = await self._two_running(harness)
        offers = len(harness.master.offers)
        raw.write(raw.login(rogue.name, rogue.password))
        raw.write(raw.login(good.name, good.password))
        if await self._answered_or_closed(harness, rogue, raw, "a login after the login"):
            assert harness.master.connections["rogue"] is rogue.conn and rogue.conn.isConnected, (
                "a login after the login replaced the worker's connection")
        assert len(harness.master.offers) == offers, "a second login on a logged-in link reached the master"
        assert harness.master.connections["good"] is good.conn and good.conn.isConnected
        assert rc_good.updates == [] and not rc_good.done.called
        await self._still_serving(harness, good)

    @async_test
    async def test_a_worker_that_overruns_the_output_window_is_dropped(self, harness: Harness) -> None:
        window = 64 * KiB
        harness.use_options(harness.options.with_(output_window=window))
        good = await harness.start_worker("good")
        rogue = await harness.start_worker("rogue", worker_options=harness.options.with_(keepalive_interval=None))
        held = _HeldCommand()
        await within(rogue.conn.remoteStartCommand(held, "b1", "r1", "hang", {}), harness.reactor,
                     what="the worker to accept the command")
        raw = harness.backend.raw_frames(rogue.connector)
        gone = disconnected(rogue.conn)
        piece = window // 2
        total = 0
        while total <= 2 * window_bound(window) and not gone.called:  # far beyond what the master may take
            raw.write(raw.update("r1", piece))
            total += piece
            await _until(lambda: raw.unsent() < 4 * piece or gone.called, harness.reactor)
        await within(gone, harness.reactor, what=f"the master to drop a worker that sent {total} bytes of updates "
                                                 f"unacknowledged (window {window})")
        assert held.payload_bytes <= window_bound(window) + piece, (
            f"the master took {held.payload_bytes} bytes of unacknowledged updates (window {window}, "
            f"bound {window_bound(window)})")
        await within(held.done, harness.reactor, what="the command to end with the link")
        assert held.completions[0] is not None and held.completions[0].check(ConnectionLost)
        await self._still_serving(harness, good)

    @async_test
    async def test_garbage_after_the_login_closes_only_that_link(self, harness: Harness) -> None:
        good, rc_good, rogue, rc_rogue, raw = await self._two_running(harness)
        gone = disconnected(rogue.conn)
        with _Log() as log:
            raw.write(raw.garbage(512))
            await within(gone, harness.reactor, what="the master to drop a worker that sent garbage")
        assert log.lines, "the master closed the link without saying why"
        await within(rc_rogue.done, harness.reactor, what="the rogue's command to end with the link")
        assert rc_rogue.completions[0] is not None and rc_rogue.completions[0].check(ConnectionLost)
        assert not rc_good.done.called and good.conn.isConnected
        await self._still_serving(harness, good)


def _until(predicate: Any, reactor: Any, interval: float = 0.01) -> Deferred[None]:
    """Fires once *predicate()* is true, looking every *interval* seconds
    (for states that no callback announces; callers bound it with ``within``)."""

    async def poll() -> None:
        while not predicate():
            await deferLater(reactor, interval, lambda: None)

    return ensureDeferred(poll())

