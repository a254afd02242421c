"""The link itself: disconnects on either side, keepalive and dead peers, shutdown."""

from __future__ import annotations

import os
from typing import Any, Callable

import pytest
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred

from ..backend import LinkOptions
from ..errors import ConnectionLost
from .harness import Harness, RecordingCommand, WorkerHandle, within
from .relay import NoInterposer
from .scripted_worker import stream_line

__all__ = ["DisconnectTests", "KeepaliveTests", "ShutdownTests"]

#: Seconds a dead-peer finding may come after ``interval + timeout`` (timer and
#: scheduling slack on a busy machine).
KEEPALIVE_MARGIN = 1.0 * float(os.environ.get("WORKERWIRE_CONFORMANCE_TIMEOUT_SCALE", "1"))


def _counter(reactor: Any) -> tuple[list[int], Deferred[None], Any]:
    calls = [0]
    first: Deferred[None] = Deferred()

    def callback() -> None:
        calls[0] += 1
        if calls[0] == 1:
            first.callback(None)

    return calls, first, callback


async def _all_calls_fail(w: WorkerHandle) -> None:
    from .harness import RecordingCommand as RC

    calls: list[Callable[[], Deferred[Any]]] = [
        lambda: w.conn.remotePrint("after"),
        w.conn.remoteGetWorkerInfo,
        lambda: w.conn.remoteSetBuilderList([("b1", "b1")]),
        lambda: w.conn.remoteStartBuild("b1"),
        lambda: w.conn.remoteStartCommand(RC(), "b1", "late", "emit", {}),
        lambda: w.conn.remoteInterruptCommand("b1", "late", "why"),
        w.conn.doKeepalive,
    ]
    for call in calls:
        d = call()
        assert d.called, "a call after disconnect must fail at once"
        with pytest.raises(ConnectionLost):
            await d


class DisconnectTests:
    @async_test
    async def test_master_side_close_is_seen_once_on_both_ends(self, harness: Harness) -> None:
        w = await harness.start_worker()
        master_calls, master_first, master_cb = _counter(harness.reactor)
        worker_calls, worker_first, worker_cb = _counter(harness.reactor)
        w.conn.notifyOnDisconnect(master_cb)
        w.connector.notifyOnDisconnect(worker_cb)
        w.conn.loseConnection()
        await within(master_first, harness.reactor, what="the master's disconnect notice")
        await within(worker_first, harness.reactor, what="the worker's disconnect notice")
        w.conn.loseConnection()  # harmless twice
        # It comes back; the old connection stays dead.
        await within(w.connector.whenConnected(), harness.reactor, what="the worker to reconnect")
        assert master_calls == [1] and worker_calls == [1]
        assert w.bot.links_lost == 1
        assert not w.conn.isConnected
        await _all_calls_fail(w)

    @async_test
    async def test_worker_side_close_is_seen_once_on_both_ends(self, harness: Harness) -> None:
        w = await harness.start_worker()
        master_calls, master_first, master_cb = _counter(harness.reactor)
        w.conn.notifyOnDisconnect(master_cb)
        await within(w.connector.stop(), harness.reactor, what="the connector to stop")
        await within(master_first, harness.reactor, what="the master's disconnect notice")
        await w.conn.remotePrint("x").addErrback(lambda f: f.trap(ConnectionLost))
        assert master_calls == [1]
        assert w.conn not in harness.listener.connections()
        await _all_calls_fail(w)

    @async_test
    async def test_abort_runs_the_disconnect_duties_at_once(self, harness: Harness) -> None:
        w = await harness.start_worker()
        calls, _, cb = _counter(harness.reactor)
        w.conn.notifyOnDisconnect(cb)
        pending = w.conn.remotePrint("hang")
        gone: Deferred[None] = Deferred()
        w.connector.notifyOnDisconnect(lambda: gone.called or gone.callback(None))
        w.conn.loseConnection(abort=True)
        assert not w.conn.isConnected and calls == [1], "abort does not wait for the peer"
        assert pending.called
        with pytest.raises(ConnectionLost):
            await pending
        await within(gone, harness.reactor, what="the worker to notice the abort")
        assert calls == [1]

    @async_test
    async def test_a_notice_asked_for_after_the_loss_comes_once_and_can_be_unsubscribed(
            self, harness: Harness) -> None:
        w = await harness.start_worker()
        w.conn.loseConnection(abort=True)
        unwanted: list[int] = []
        calls, first, cb = _counter(harness.reactor)
        w.conn.notifyOnDisconnect(lambda: unwanted.append(1)).unsubscribe()
        w.conn.notifyOnDisconnect(cb)
        assert calls == [0], "called a turn later, not inside notifyOnDisconnect"
        await within(first, harness.reactor, what="the late disconnect notice")
        assert calls == [1] and unwanted == [], "an unsubscribed late notice must not run"

    @async_test
    async def test_pending_call_fails_with_connection_lost(self, harness: Harness) -> None:
        w = await harness.start_worker()
        pending = w.conn.remotePrint("hang")
        await w.conn.remotePrint("round trip: the hanging call has reached the worker")
        assert not pending.called
        w.conn.loseConnection()
        with pytest.raises(ConnectionLost):
            await within(pending, harness.reactor, what="the pending call to fail")

    @async_test
    async def test_pending_call_fails_when_the_worker_goes(self, harness: Harness) -> None:
        w = await harness.start_worker()
        pending = w.conn.remoteStartCommand(RecordingCommand(), "b1", "c1", "emit", {"updates": []})
        hanging = w.conn.remotePrint("hang")
        await w.connector.stop()
        with pytest.raises(ConnectionLost):
            await within(hanging, harness.reactor, what="the pending call to fail")
        await within(pending.addErrback(lambda f: f.trap(ConnectionLost)), harness.reactor, what="the start")

    @async_test
    async def test_a_pending_call_fails_only_once_the_connection_is_marked_lost(self, harness: Harness) -> None:
        """A master that reacts to a failed call at once (retrying, asking
        ``isConnected``) must find the connection already lost, never a
        connection that says it is up while every call on it fails."""
        w = await harness.start_worker()
        seen: list[tuple[bool, bool]] = []

        def failed(f: Any) -> None:
            f.trap(ConnectionLost)
            retry = w.conn.remotePrint("retry from the errback")
            retry.addErrback(lambda f2: f2.trap(ConnectionLost))
            seen.append((w.conn.isConnected, retry.called))

        pending = w.conn.remotePrint("hang")
        pending.addErrback(failed)
        await w.conn.remotePrint("round trip: the hanging call has reached the worker")
        await within(w.connector.stop(), harness.reactor, what="the worker to close its end")
        await within(pending, harness.reactor, what="the pending call to fail")
        assert seen == [(False, True)], "isConnected was still True, or a call made then did not fail at once"

    @async_test
    async def test_running_command_completes_with_connection_lost(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = RecordingCommand()
        await w.conn.remoteStartCommand(rc, "b1", "c1", "hang", {})
        await w.conn.remotePrint("round trip")
        w.conn.loseConnection()
        await within(rc.done, harness.reactor, what="the command's completion")
        failure = rc.completions[0]
        assert failure is not None and failure.check(ConnectionLost)
        assert len(rc.completions) == 1
        again = harness.master.whenConnection(w.name, newer_than=w.conn)
        w.conn = await within(again, harness.reactor, what="the worker to come back")
        await w.conn.remoteSetBuilderList([("b1", "b1")])
        ok = await harness.run(w, "emit", {"updates": [["rc", 0]]})
        assert ok.completions == [None], "the builder is usable again"

    @async_test
    async def test_channel_fails_once_the_link_is_gone(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = RecordingCommand()
        await w.conn.remoteStartCommand(rc, "b1", "c1", "hang", {})
        await w.conn.remotePrint("round trip")
        channel = w.bot.channels["c1"]
        lost: Deferred[None] = Deferred()
        w.connector.notifyOnDisconnect(lambda: lost.called or lost.callback(None))
        w.conn.loseConnection()
        await within(lost, harness.reactor, what="the worker to notice")
        with pytest.raises(ConnectionLost):
            await channel.update([("stdout", "into the void\n")])
        with pytest.raises(ConnectionLost):
            await channel.complete(None)

    @async_test
    async def test_disconnect_subscriptions(self, harness: Harness) -> None:
        w = await harness.start_worker()
        called: list[str] = []
        sub = w.conn.notifyOnDisconnect(lambda: called.append("unsubscribed"))
        w.conn.notifyOnDisconnect(lambda: called.append("kept"))
        sub.unsubscribe()
        sub.unsubscribe()
        gone: Deferred[None] = Deferred()
        w.conn.notifyOnDisconnect(lambda: gone.callback(None))
        w.conn.loseConnection()
        await within(gone, harness.reactor, what="the disconnect notice")
        late: Deferred[None] = Deferred()
        w.conn.notifyOnDisconnect(lambda: late.callback(None))
        await within(late, harness.reactor, what="a notice subscribed after the loss")
        assert called == ["kept"]


class KeepaliveTests:
    @async_test
    async def test_keepalive_round_trips_both_ways(self, harness: Harness) -> None:
        w = await harness.start_worker()
        assert await w.conn.doKeepalive() is None
        assert await w.connector.sendKeepalive() is None

    @async_test
    async def test_master_pings_at_its_interval(self, harness: Harness) -> None:
        harness.use_options(LinkOptions(keepalive_interval=0.1, keepalive_timeout=5.0))
        w = await harness.start_worker(worker_options=LinkOptions(keepalive_interval=None))
        pings: Deferred[None] = Deferred()
        count = [0]
        original = w.conn.doKeepalive

        def counting() -> Deferred[None]:
            count[0] += 1
            if count[0] == 3:
                pings.callback(None)
            return original()

        w.conn.doKeepalive = counting  # type: ignore[method-assign]
        start = harness.reactor.seconds()
        await within(pings, harness.reactor, what="three keepalive pings")
        assert harness.reactor.seconds() - start >= 0.1 * 2, "pings came faster than the interval"
        assert w.conn.isConnected, "an answering worker is never declared dead"
        w.conn.stopKeepaliveTimer()

    async def _through_relay(self, harness: Harness, master_opts: LinkOptions, worker_opts: LinkOptions
                             ) -> tuple[WorkerHandle, Any]:
        harness.use_options(master_opts)
        reg = await harness.register("w1", "pw")
        try:
            relay = await harness.interposer(reg)
        except NoInterposer as e:
            pytest.fail(f"{e}; without it the keepalive and dead-peer guarantees are unproven", pytrace=False)
        w = await harness.start_worker("w1", "pw", address=relay.address, worker_options=worker_opts)
        return w, relay

    @async_test
    async def test_silent_worker_is_declared_dead_by_the_master(self, harness: Harness) -> None:
        w, relay = await self._through_relay(
            harness, LinkOptions(keepalive_interval=0.2, keepalive_timeout=0.3),
            LinkOptions(keepalive_interval=None))
        gone: Deferred[None] = Deferred()
        w.conn.notifyOnDisconnect(lambda: gone.callback(None))
        pending = w.conn.remotePrint("hang")
        relay.blackhole()
        start = harness.reactor.seconds()
        await within(gone, harness.reactor, what="the master to declare the worker dead")
        assert harness.reactor.seconds() - start < 5.0
        with pytest.raises(ConnectionLost):
            await within(pending, harness.reactor, what="the pending call to fail")
        assert w.conn not in harness.listener.connections()

    @async_test
    async def test_silent_master_is_declared_dead_by_the_worker(self, harness: Harness) -> None:
        w, relay = await self._through_relay(
            harness, LinkOptions(keepalive_interval=None),
            LinkOptions(keepalive_interval=0.2, keepalive_timeout=0.3))
        gone: Deferred[None] = Deferred()
        w.connector.notifyOnDisconnect(lambda: gone.called or gone.callback(None))
        relay.blackhole()
        await within(gone, harness.reactor, what="the worker to declare the master dead")
        assert not w.connector.isConnected
        assert w.bot.links_lost == 1

    @async_test
    async def test_dead_peer_found_by_both_ends_in_time_and_the_worker_comes_back_when_the_path_heals(
            self, harness: Harness) -> None:
        interval, timeout = 0.2, 0.4
        opts = LinkOptions(keepalive_interval=interval, keepalive_timeout=timeout)
        w, relay = await self._through_relay(harness, opts, opts)
        clock = harness.reactor.seconds
        master_calls, master_first, master_cb = _counter(harness.reactor)
        worker_calls, worker_first, worker_cb = _counter(harness.reactor)
        w.conn.notifyOnDisconnect(master_cb)
        w.connector.notifyOnDisconnect(worker_cb)
        seen = {"master": 0.0, "worker": 0.0}
        master_first.addCallback(lambda _: seen.__setitem__("master", clock()))
        worker_first.addCallback(lambda _: seen.__setitem__("worker", clock()))
        await w.conn.remotePrint("round trip: traffic passed just now")
        pending = w.conn.remotePrint("hang")
        relay.blackhole()
        start = clock()
        await within(master_first, harness.reactor, what="the master to declare the worker dead")
        await within(worker_first, harness.reactor, what="the worker to declare the master dead")
        bound = interval + timeout + KEEPALIVE_MARGIN
        assert seen["master"] - start <= bound, f"master took {seen['master'] - start:.2f} s (bound {bound:g} s)"
        assert seen["worker"] - start <= bound, f"worker took {seen['worker'] - start:.2f} s (bound {bound:g} s)"
        assert pending.called, "a pending call fails together with the disconnect notice"
        with pytest.raises(ConnectionLost):
            await pending
        assert w.conn not in harness.listener.connections()
        # The path heals: the worker logs in again by itself; the old connection stays dead.
        again = harness.master.whenConnection(w.name, newer_than=w.conn)
        relay.heal()
        conn = await within(again, harness.reactor, what="the worker to come back after the path healed")
        await within(w.connector.whenConnected(), harness.reactor, what="the worker to see its new login")
        await within(conn.remotePrint("back again"), harness.reactor, what="a call over the new link")
        assert master_calls == [1] and worker_calls == [1], "each end saw the loss exactly once"
        assert not w.conn.isConnected
        await _all_calls_fail(w)

    @async_test
    async def test_an_outage_shorter_than_the_keepalive_deadline_loses_nothing(self, harness: Harness) -> None:
        """What was sent while the path was down arrives once it is back (as
        TCP retransmits it): the call is answered, the command started during
        the outage streams every line in order, and neither end saw a loss."""
        opts = LinkOptions(keepalive_interval=0.2, keepalive_timeout=1.5)
        w, relay = await self._through_relay(harness, opts, opts)
        master_calls, _, master_cb = _counter(harness.reactor)
        worker_calls, _, worker_cb = _counter(harness.reactor)
        w.conn.notifyOnDisconnect(master_cb)
        w.connector.notifyOnDisconnect(worker_cb)
        relay.blackhole()
        rc = RecordingCommand()
        started = w.conn.remoteStartCommand(rc, "b1", "c1", "stream", {"count": 300, "batch": 7})
        answered = w.conn.remotePrint("sent during the outage")
        harness.reactor.callLater(0.4, relay.heal)
        await within(started, harness.reactor, what="the start sent during the outage to be accepted")
        await within(answered, harness.reactor, what="the call sent during the outage to be answered")
        await within(rc.done, harness.reactor, what="the command to complete")
        assert rc.completions == [None]
        assert rc.text("stdout") == "".join(stream_line(i) for i in range(300))
        assert master_calls == [0] and worker_calls == [0] and w.conn.isConnected
        assert harness.master.connections[w.name] is w.conn, "no new login happened"

    @async_test
    async def test_closing_a_dead_link_with_data_queued_ends_within_the_keepalive_timeout(
            self, harness: Harness) -> None:
        """A graceful close waits for the peer to take queued data; over a dead
        link it never does, and with keepalive stopped by the close nothing
        else would end it: both ends bound it by their keepalive timeout."""
        opts = LinkOptions(keepalive_interval=None, keepalive_timeout=0.5)
        w, relay = await self._through_relay(harness, opts, opts)
        rc = RecordingCommand()
        await w.conn.remoteStartCommand(rc, "b1", "c1", "hang", {})
        await w.conn.remotePrint("round trip")
        channel = w.bot.channels["c1"]
        relay.blackhole()
        # More than the sockets on the way can buffer, both ways.
        big = w.conn.remotePrint("m" * (16 * 1024 * 1024))
        sends = [channel.update([("stdout", "w" * (4 * 1024 * 1024))]) for _ in range(4)]
        for d in [big, *sends]:
            d.addErrback(lambda f: f.trap(ConnectionLost))
        calls, first, cb = _counter(harness.reactor)
        w.conn.notifyOnDisconnect(cb)
        start = harness.reactor.seconds()
        w.conn.loseConnection()
        await within(first, harness.reactor, seconds=0.5 + KEEPALIVE_MARGIN + 1,
                     what="the master's graceful close of a dead link to end")
        await within(rc.done, harness.reactor, what="the command to fail")
        assert rc.completions[0] is not None and rc.completions[0].check(ConnectionLost)
        stopped = w.connector.stop()
        await within(stopped, harness.reactor, seconds=0.5 + KEEPALIVE_MARGIN + 1,
                     what="the worker's graceful close of a dead link to end")
        assert harness.reactor.seconds() - start <= 2 * (0.5 + KEEPALIVE_MARGIN)
        assert calls == [1] and not w.connector.isConnected


class ShutdownTests:
    @async_test
    async def test_worker_shutdown_request_reaches_the_master(self, harness: Harness) -> None:
        w = await harness.start_worker()
        told = harness.master.whenShutdownRequested()
        await within(w.connector.requestShutdown(), harness.reactor, what="the request to be answered")
        conn = await within(told, harness.reactor, what="the master hook")
        assert conn is w.conn

    @async_test
    async def test_remote_shutdown_stops_the_worker(self, harness: Harness) -> None:
        w = await harness.start_worker()
        gone: Deferred[None] = Deferred()
        w.conn.notifyOnDisconnect(lambda: gone.callback(None))
        await within(w.conn.remoteShutdown(), harness.reactor, what="the shutdown to be acknowledged")
        assert w.bot.shutdowns == 1
        await within(gone, harness.reactor, what="the worker to go")

    @async_test
    async def test_shutdown_requests_fail_when_not_connected(self, harness: Harness) -> None:
        reg = await harness.register("w1", "pw")
        c, _ = harness.connector(reg.getAddress(), "w1", "pw")
        with pytest.raises(ConnectionLost):
            await c.requestShutdown()
        with pytest.raises(ConnectionLost):
            await c.sendKeepalive()
