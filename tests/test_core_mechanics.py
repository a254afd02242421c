"""Protocol-neutral pieces of core, driven with a fake clock (twisted's
``task.Clock`` stands in for time only; no network is involved)."""

from __future__ import annotations

import random

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed

from workerwire import Backoff, load_backend
from workerwire.errors import BackendNotFound, error_from_wire, error_to_wire, DuplicateWorker, RemoteCallFailed
from workerwire.keepalive import KeepaliveMonitor
from workerwire.subscriptions import SubscriptionList


def test_keepalive_pings_at_interval_and_declares_silence_dead() -> None:
    clock = task.Clock()
    pings: list[float] = []
    dead: list[str] = []
    mon = KeepaliveMonitor(clock, 10, 5, lambda: (pings.append(clock.seconds()), succeed(None))[1], dead.append)
    mon.start()
    clock.advance(10)
    mon.touch()  # the answer arrives
    clock.advance(10)
    mon.touch()
    assert pings == [10, 20] and dead == []
    clock.advance(10)  # ping at 30, no answer
    clock.advance(4.9)
    assert dead == []
    clock.advance(0.2)
    assert len(dead) == 1 and "keepalive timeout 5 s" in dead[0]
    assert not mon.running
    clock.advance(100)
    assert len(pings) == 3 and len(dead) == 1


def test_keepalive_stop_cancels_everything() -> None:
    clock = task.Clock()
    mon = KeepaliveMonitor(clock, 1, 1, lambda: Deferred(), lambda why: pytest.fail(why))
    mon.start()
    clock.advance(1)
    mon.stop()
    assert clock.getDelayedCalls() == []


def test_backoff_is_capped_jittered_and_fast_at_first() -> None:
    b = Backoff(initial=0.5, factor=2, maximum=30, jitter=0.5, rng=random.Random(7))
    delays = [b.delay(n) for n in range(20)]
    assert delays[0] <= 0.5
    assert all(d <= 30 for d in delays)
    assert max(delays[10:]) > 15  # it does grow to the cap's range
    assert len({round(d, 6) for d in delays[10:]}) > 1  # and is jittered there
    with pytest.raises(ValueError):
        Backoff(initial=0)


def test_subscriptions_survive_a_failing_callback() -> None:
    subs = SubscriptionList()
    got: list[str] = []
    subs.subscribe(lambda: 1 / 0)
    handle = subs.subscribe(lambda: got.append("gone"))
    subs.subscribe(lambda: got.append("kept"))
    handle.unsubscribe()
    subs.deliver()
    assert got == ["kept"]


def test_errors_cross_the_wire_as_core_types() -> None:
    assert isinstance(error_from_wire(*error_to_wire(DuplicateWorker("again"))), DuplicateWorker)
    other = error_from_wire(*error_to_wire(KeyError("k")))
    assert isinstance(other, RemoteCallFailed) and other.type_name == "KeyError"


def test_unknown_backend_names_the_installed_ones() -> None:
    with pytest.raises(BackendNotFound) as err:
        load_backend("carrier-pigeon")
    assert "no workerwire backend named 'carrier-pigeon'" in str(err.value)
    assert "null" in str(err.value)


@pytest.mark.parametrize("interval,timeout", [(10, 5), (2, 5), (1, 10), (3, 3)])
def test_keepalive_finds_a_dead_peer_within_interval_plus_timeout_of_its_last_message(
        interval: float, timeout: float) -> None:
    """Whenever the peer falls silent, and whatever the ratio of timeout to
    interval (a ping sent while an earlier one's deadline is pending has a
    deadline of its own), it is declared dead within interval + timeout."""
    step = 0.25
    for silent_from in [step * k for k in range(1, int(4 * (interval + timeout)))]:
        clock = task.Clock()
        dead: list[float] = []
        mon = KeepaliveMonitor(clock, interval, timeout, lambda: succeed(None),
                               lambda why: dead.append(clock.seconds()))
        mon.start()
        while clock.seconds() < silent_from:  # the peer answers every ping until then
            clock.advance(step)
            mon.touch()
        last = clock.seconds()
        while not dead and clock.seconds() < last + 3 * (interval + timeout):
            clock.advance(step)
        assert dead, f"silent from {last}: never declared dead"
        assert dead[0] - last <= interval + timeout, (silent_from, dead[0] - last)
        assert dead[0] - last >= timeout
