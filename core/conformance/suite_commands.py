"""Commands: ordered update streams, sizes, interrupt, concurrency."""

from __future__ import annotations

import pytest
from pytest_twisted import ensureDeferred as async_test
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults

from ..errors import ProtocolError
from .harness import Harness, RecordingCommand, WorkerHandle, within
from .scripted_worker import blob_text, stream_line

__all__ = ["StreamingTests", "BackpressureTests", "InterruptTests", "ScaleTests"]

MiB = 1024 * 1024


class StreamingTests:
    @async_test
    async def test_updates_arrive_in_order_then_one_completion(self, harness: Harness) -> None:
        w = await harness.start_worker()
        updates: list[list[Any]] = [
            ["header", "starting\n"], ["stdout", "out 1\n"], ["stderr", "err 1\n"], ["stdout", "out 2\n"],
            ["log", ["build.log", "a log line\n"]], ["rc", 3], ["elapsed", 0.125], ["custom", {"k": [1, 2]}],
        ]
        rc = await harness.run(w, "emit", {"updates": updates})
        assert rc.updates == [(k, v) for k, v in updates]
        await w.conn.remotePrint("a round trip, so a second completion would have arrived")
        assert rc.completions == [None]

    @async_test
    async def test_unicode_and_bytes_updates(self, harness: Harness) -> None:
        w = await harness.start_worker()
        texts = ["plain\n", "é€ 中文 العربية\n", "😀🚀 𝄞 \U0010fffd\n", "\x00nul and \t tab\n", ""]
        updates = [["stdout", t] for t in texts] + [["blob", b"\x00\xff\xfe binary"], ["rc", 0]]
        rc = await harness.run(w, "emit", {"updates": updates})
        assert rc.values("stdout") == texts
        assert rc.values("blob") == [b"\x00\xff\xfe binary"]

    @async_test
    async def test_ten_thousand_small_updates_in_order(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = await harness.run(w, "stream", {"count": 10_000, "batch": 1})
        lines = rc.values("stdout")
        assert len(lines) == 10_000
        assert lines == [stream_line(i) for i in range(10_000)]
        assert rc.updates[-1] == ("rc", 0) and rc.completions == [None]

    @async_test
    async def test_batched_updates_keep_their_sequence(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = await harness.run(w, "stream", {"count": 5_000, "batch": 250, "key": "stderr"})
        assert rc.values("stderr") == [stream_line(i) for i in range(5_000)]

    @async_test
    async def test_sixteen_mib_update_arrives_intact(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = await harness.run(w, "blob", {"size": 16 * MiB})
        (text,) = rc.values("stdout")
        assert len(text) == 16 * MiB
        assert text == blob_text(16 * MiB)
        assert rc.updates[-1] == ("rc", 0)

    @async_test
    async def test_one_mib_of_args_arrives_intact(self, harness: Harness) -> None:
        w = await harness.start_worker()
        args = {"text": blob_text(MiB), "data": bytes(range(256)) * 4096, "many": [str(i) for i in range(20_000)]}
        rc = await harness.run(w, "echo", args)
        assert rc.values("echo") == [args]

    @async_test
    async def test_channel_refuses_updates_after_complete(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = await harness.run(w, "emit", {"updates": [["rc", 0]]}, commandId="c-done")
        channel = w.bot.channels["c-done"]
        with pytest.raises(ProtocolError):
            await channel.update([("stdout", "too late\n")])
        with pytest.raises(ProtocolError):
            await channel.complete(None)
        await w.conn.remotePrint("round trip")
        assert rc.completions == [None] and rc.values("stdout") == []


class BackpressureTests:
    @async_test
    async def test_a_slow_master_slows_the_worker(self, harness: Harness) -> None:
        """A ``remote_update`` that returns a Deferred holds the worker back:
        at most ``output_window`` bytes (plus one update) get ahead of it."""
        window = 64 * 1024
        harness.use_options(harness.options.with_(output_window=window))
        w = await harness.start_worker(worker_options=harness.options)
        size, count = 8 * 1024, 64  # 512 KiB in all: eight windows
        held: list[Deferred[None]] = []

        class SlowTarget(RecordingCommand):
            def remote_update(self, updates: Any) -> Deferred[None]:
                super().remote_update(updates)
                d: Deferred[None] = Deferred()
                held.append(d)
                return d

        rc = SlowTarget()
        await w.conn.remoteStartCommand(rc, "b1", "slow", "chunks", {"count": count, "size": size})
        await within(rc.whenUpdated(lambda: len(rc.updates) >= 1), harness.reactor, what="the first update")
        for _ in range(30):  # give an unthrottled worker every chance to run ahead
            await w.conn.remotePrint("tick")
        received = sum(len(v) for v in rc.values("stdout"))
        assert received <= window + size, f"{received} bytes arrived while the master acknowledged none"
        assert w.bot.sent["slow"] * size <= window + 2 * size, "the worker's updates did not wait"
        while not rc.done.called:
            waiting, held[:] = list(held), []
            for d in waiting:
                d.callback(None)
            await w.conn.remotePrint("tick")
        assert rc.values("stdout") == [str(i % 10) * size for i in range(count)]
        assert rc.completions == [None]


class InterruptTests:
    @async_test
    async def test_interrupt_ends_a_running_command(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = RecordingCommand()
        await w.conn.remoteStartCommand(rc, "b1", "c1", "wait", {})
        await within(rc.whenUpdated(lambda: bool(rc.updates)), harness.reactor, what="the command to run")
        await w.conn.remoteInterruptCommand("b1", "c1", "the user pressed stop")
        await within(rc.done, harness.reactor, what="the interrupted command to end")
        failure = rc.completions[0]
        assert failure is None
        assert ("header", "interrupted: the user pressed stop\n") in rc.updates
        assert rc.updates[-1] == ("rc", -2)
        assert w.bot.interrupts == [("b1", "c1", "the user pressed stop")]


class ScaleTests:
    @async_test
    async def test_fifty_workers_on_one_port(self, harness: Harness) -> None:
        names = [f"w{i:02d}" for i in range(50)]
        regs = [await harness.register(n, f"pw-{n}") for n in names]
        assert len({r.getPort() for r in regs}) == 1
        handles = await within(gatherResults([_start(harness, n) for n in names]), harness.reactor,
                               what="50 workers to log in")
        assert len(harness.listener.connections()) == 50
        results = await within(gatherResults(
            [_run(harness, h, "emit", {"updates": [["stdout", h.name], ["rc", 0]]}) for h in handles]),
            harness.reactor, what="a command on each of 50 workers")
        for h, rc in zip(handles, results):
            assert rc.values("stdout") == [h.name] and rc.completions == [None]

    @async_test
    async def test_a_login_storm_beyond_the_caps_waits_its_turn(self, harness: Harness) -> None:
        """More workers than ``max_unauthenticated`` (and its per-host share)
        log in at once from one host: all get in, and a listener with a
        :class:`~workerwire.login_guard.LoginGuard` closed none of them at a
        cap (closing sends a worker into reconnect backoff: a fleet
        restarting behind one NAT would log in in waves)."""
        harness.use_options(harness.options.with_(max_unauthenticated=4, max_unauthenticated_per_host=2))
        names = [f"s{i:02d}" for i in range(30)]
        for n in names:
            await harness.register(n, f"pw-{n}")
        await within(gatherResults([_start(harness, n) for n in names]), harness.reactor,
                     what="30 workers to log in through caps of 4 (2 per host)")
        assert len(harness.listener.connections()) == 30
        guard = getattr(harness.listener, "login_guard", None)
        if guard is not None:
            assert guard.stats["closed_at_cap"] == 0, dict(guard.stats)
            assert guard.unauthenticated == 0 and guard.waiting == 0

    @async_test
    async def test_hundred_concurrent_commands(self, harness: Harness) -> None:
        builders = [f"b{i:03d}" for i in range(100)]
        w = await harness.start_worker(builders=builders)
        commands = [RecordingCommand() for _ in builders]
        await gatherResults([
            w.conn.remoteStartCommand(rc, b, f"cmd-{b}", "stream", {"count": 50, "key": "stdout", "batch": 5})
            for rc, b in zip(commands, builders)])
        await within(gatherResults([rc.done for rc in commands]), harness.reactor, what="100 commands")
        for rc in commands:
            assert rc.values("stdout") == [stream_line(i) for i in range(50)]
            assert rc.completions == [None]


def _start(harness: Harness, name: str) -> Deferred[WorkerHandle]:
    return ensureDeferred(harness.start_worker(name, f"pw-{name}", builders=["b1"]))


def _run(harness: Harness, handle: WorkerHandle, command: str, args: dict[str, Any]) -> Deferred[RecordingCommand]:
    return ensureDeferred(harness.run(handle, command, args))
