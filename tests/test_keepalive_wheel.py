"""The coalesced keepalive sweep (workerwire.keepalive's wheel), on a fake clock.

``twisted.internet.task.Clock`` stands in for time only: what is pinned down
here is which delayed calls exist and when pings and deadlines happen, which a
real clock cannot show exactly.  No network is involved.
"""

from __future__ import annotations

import math
import random

from twisted.internet import task
from twisted.internet.defer import Deferred, succeed

from workerwire.keepalive import SLOTS, KeepaliveMonitor, wheel_for


class Peer:
    """One monitored link: its pings, whether it answers, when it was declared dead."""

    def __init__(self, clock: task.Clock, interval: float, timeout: float, answers: bool = True) -> None:
        self.clock = clock
        self.answers = answers
        self.pings: list[float] = []
        self.dead: list[float] = []
        self.monitor = KeepaliveMonitor(clock, interval, timeout, self.ping, lambda why: self.dead.append(clock.seconds()))

    def ping(self) -> Deferred[None]:
        self.pings.append(self.clock.seconds())
        if self.answers:
            self.monitor.touch()  # the answer is traffic
            return succeed(None)
        return Deferred()


def test_many_monitors_share_one_delayed_call_per_slot() -> None:
    clock = task.Clock()
    interval, timeout = 60.0, 30.0
    rng = random.Random(18)
    peers = []
    for _ in range(2000):  # started at random moments over one interval
        clock.advance(rng.uniform(0, interval / 2000))
        peer = Peer(clock, interval, timeout)
        peer.monitor.start()
        peers.append(peer)
    # 2,000 monitors: at most one ping call per slot (no deadlines pending yet).
    assert len(clock.getDelayedCalls()) <= SLOTS
    for _ in range(3 * SLOTS):
        clock.advance(interval / SLOTS / 3)
        # Ping calls, plus at most the deadline batches of the sweeps of the last timeout.
        assert len(clock.getDelayedCalls()) <= SLOTS + SLOTS * timeout / interval + 1
    assert all(not p.dead for p in peers)
    assert len({tuple(p.pings) for p in peers}) <= SLOTS  # pings went out together, by slot


def test_pings_come_at_most_one_slot_early_then_exactly_one_interval_apart() -> None:
    clock = task.Clock()
    interval, timeout = 10.0, 5.0
    slot = interval / SLOTS
    starts = [0.0, 0.01, 3.3, 7.77, 9.99]
    peers = []
    for s in starts:
        clock.advance(s - clock.seconds())
        peer = Peer(clock, interval, timeout)
        peer.monitor.start()
        peers.append(peer)
    # From the next slot on, step exactly one slot: each sweep runs at its own time.
    clock.advance(math.ceil(clock.seconds() / slot) * slot - clock.seconds())
    clock.pump([slot] * (SLOTS * 5))
    for s, peer in zip(starts, peers):
        first = peer.pings[0]
        assert s + interval - slot < first <= s + interval + 1e-9
        gaps = [b - a for a, b in zip(peer.pings, peer.pings[1:])]
        assert gaps and all(abs(g - interval) < 1e-9 for g in gaps)


def test_a_silent_peer_is_declared_dead_exactly_at_its_pings_deadline() -> None:
    clock = task.Clock()
    interval, timeout = 10.0, 4.0
    quiet = [Peer(clock, interval, timeout, answers=False) for _ in range(50)]
    talking = [Peer(clock, interval, timeout) for _ in range(50)]
    for p in quiet + talking:
        p.monitor.start()
    clock.advance(interval)  # start at 0: slot SLOTS is exactly t = interval
    assert all(p.pings == [interval] for p in quiet + talking)
    # Every ping of that sweep has the same deadline: one delayed call for all of them.
    deadlines = [c for c in clock.getDelayedCalls() if abs(c.getTime() - (interval + timeout)) < 1e-9]
    assert len(deadlines) == 1
    clock.advance(timeout - 1e-6)
    assert not any(p.dead for p in quiet)
    clock.advance(2e-6)
    assert all(len(p.dead) == 1 and abs(p.dead[0] - (interval + timeout)) < 1e-5 for p in quiet)
    assert not any(p.dead for p in talking) and all(p.monitor.running for p in talking)
    assert not any(p.monitor.running for p in quiet)


def test_each_ping_has_its_own_deadline_when_the_timeout_is_longer_than_the_interval() -> None:
    clock = task.Clock()
    interval, timeout = 2.0, 5.0
    peer = Peer(clock, interval, timeout, answers=False)
    peer.monitor.start()
    clock.advance(2.0)  # ping 1 at 2 (deadline 7)
    clock.advance(1.0)
    peer.monitor.touch()  # the peer spoke at 3: ping 1 answered
    clock.advance(1.0)  # ping 2 at 4 (deadline 9), unanswered from here on
    clock.advance(3.0)  # t = 7: ping 1's deadline passes harmlessly
    assert peer.dead == []
    clock.advance(2.0 - 1e-6)
    assert peer.dead == []
    clock.advance(2e-6)  # t = 9: ping 2's deadline
    assert len(peer.dead) == 1 and abs(peer.dead[0] - 9.0) < 1e-5
    assert clock.getDelayedCalls() == []


def test_stopping_every_monitor_leaves_no_delayed_call() -> None:
    clock = task.Clock()
    peers = [Peer(clock, 5.0, 5.0, answers=False) for _ in range(100)]
    for i, p in enumerate(peers):
        clock.advance(0.03)
        p.monitor.start()
    clock.advance(6.0)  # every monitor has pinged once; their deadlines are pending
    assert clock.getDelayedCalls()
    for p in peers:
        p.monitor.stop()
    assert clock.getDelayedCalls() == []
    assert len(wheel_for(clock, 5.0)) == 0


def test_a_monitor_stopped_by_another_ones_ping_in_the_same_sweep_is_not_pinged() -> None:
    clock = task.Clock()
    pinged: list[str] = []
    second: list[KeepaliveMonitor] = []

    def first_ping() -> Deferred[None]:
        pinged.append("first")
        second[0].stop()  # e.g. the first link's ping found both links gone
        return succeed(None)

    a = KeepaliveMonitor(clock, 1.0, 1.0, first_ping, lambda why: None)
    b = KeepaliveMonitor(clock, 1.0, 1.0, lambda: (pinged.append("second"), succeed(None))[1], lambda why: None)
    second.append(b)
    a.start()
    b.start()
    clock.advance(1.0)
    assert pinged == ["first"] and a.running and not b.running


def test_dead_within_interval_plus_timeout_for_monitors_started_anywhere_in_a_slot() -> None:
    """The contract with starts that are not on the slot grid (the first ping
    is early, never late): dead no sooner than *timeout* and no later than
    ``interval + timeout`` after the peer's last message."""
    rng = random.Random(7)
    for interval, timeout in [(10, 5), (2, 5), (1, 10), (3, 3), (60, 30)]:
        clock = task.Clock()
        clock.advance(rng.uniform(0, 100))
        peers = []
        for _ in range(40):
            peer = Peer(clock, interval, timeout)
            clock.advance(rng.uniform(0, interval / 7))
            peer.monitor.start()
            peers.append((peer, clock.seconds() + rng.uniform(0, 3 * interval)))  # falls silent then
        step = interval / SLOTS / 5
        last: dict[int, float] = {}
        end = clock.seconds() + 3 * interval + 2 * (interval + timeout)
        while clock.seconds() < end:
            clock.advance(step)
            for i, (peer, quiet_from) in enumerate(peers):
                if i not in last and clock.seconds() >= quiet_from:
                    peer.answers = False
                    last[i] = peer.monitor.last_seen
        for i, (peer, _) in enumerate(peers):
            assert peer.dead, (interval, timeout, i)
            assert timeout <= peer.dead[0] - last[i] <= interval + timeout + step, (interval, timeout, i)
