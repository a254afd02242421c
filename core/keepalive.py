"""Keepalive with a deadline: ping at an interval, declare a silent peer dead.

Every :class:`KeepaliveMonitor` of one clock and one interval shares a
:class:`KeepaliveWheel`: the interval is cut into :data:`SLOTS` slots, a
monitor pings in one slot per interval, and each slot that has monitors is one
delayed call on the clock, as is each batch of deadlines (every ping sent by
one sweep has the same deadline).  10,000 connections cost a master at most
``SLOTS`` ping calls plus one deadline call per sweep still pending, instead of
two delayed calls per connection per interval.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from . import observe

__all__ = ["KeepaliveMonitor", "KeepaliveWheel", "SLOTS", "wheel_for"]

#: Slots per interval: a monitor's first ping comes at most ``interval / SLOTS``
#: early (never late), so a 60 s interval has 64 sweeps of ~0.94 s apart.
SLOTS = 64


class _Batch:
    """The monitors due at one time, and the one delayed call that serves them."""

    __slots__ = ("call", "members")

    def __init__(self, call: IDelayedCall) -> None:
        self.call = call
        self.members: dict[KeepaliveMonitor, None] = {}


class KeepaliveWheel:
    """The pings of every monitor of one clock and one *interval*, coalesced.

    Slot ``k`` is the time ``k * interval / SLOTS`` on the clock; a monitor
    waiting in slot ``k`` is pinged by that slot's sweep and moves to slot
    ``k + SLOTS`` (exactly one interval later).  A sweep sends every ping at
    the same clock time, so their deadlines (per timeout) are one batch too.
    Monitors are kept in insertion-ordered dicts: joining and leaving a batch
    is O(1), and a batch left empty cancels its delayed call.
    """

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self.resolution = interval / SLOTS
        self._pings: dict[int, _Batch] = {}
        self._checks: dict[tuple[float, float], _Batch] = {}

    def __len__(self) -> int:
        """Monitors waiting to ping."""
        return sum(len(b.members) for b in self._pings.values())

    def first_slot(self, now: float) -> int:
        """The slot of a first ping for a monitor started at *now*: the last
        one at or before ``now + interval`` (early by less than a slot, never late)."""
        k = math.floor((now + self.interval) / self.resolution)
        return max(k, math.floor(now / self.resolution) + 1)

    def join_ping(self, monitor: KeepaliveMonitor, slot: int) -> None:
        batch = self._pings.get(slot)
        if batch is None:
            delay = max(0.0, slot * self.resolution - self.clock.seconds())
            batch = self._pings[slot] = _Batch(self.clock.callLater(delay, self._sweep_pings, slot))
        batch.members[monitor] = None

    def leave_ping(self, monitor: KeepaliveMonitor, slot: int) -> None:
        batch = self._pings.get(slot)
        if batch is not None and batch.members.pop(monitor, 0) is None and not batch.members:
            if batch.call.active():
                batch.call.cancel()
            del self._pings[slot]

    def join_check(self, monitor: KeepaliveMonitor, sent: float, timeout: float) -> None:
        key = (sent, timeout)
        batch = self._checks.get(key)
        if batch is None:
            delay = max(0.0, sent + timeout - self.clock.seconds())
            batch = self._checks[key] = _Batch(self.clock.callLater(delay, self._sweep_checks, key))
        batch.members[monitor] = None

    def leave_check(self, monitor: KeepaliveMonitor, sent: float, timeout: float) -> None:
        key = (sent, timeout)
        batch = self._checks.get(key)
        if batch is not None and batch.members.pop(monitor, 0) is None and not batch.members:
            if batch.call.active():
                batch.call.cancel()
            del self._checks[key]

    def _sweep_pings(self, slot: int) -> None:
        batch = self._pings.pop(slot)
        sent = self.clock.seconds()
        for monitor in list(batch.members):
            if monitor._slot == slot:  # not stopped by an earlier one's ping
                monitor._ping_now(slot, sent)

    def _sweep_checks(self, key: tuple[float, float]) -> None:
        batch = self._checks.pop(key)
        for monitor in list(batch.members):
            monitor._check(key[0])


_wheels: "weakref.WeakKeyDictionary[Any, dict[float, KeepaliveWheel]]" = weakref.WeakKeyDictionary()


def wheel_for(clock: IReactorTime, interval: float) -> KeepaliveWheel:
    """The wheel every monitor of *clock* and *interval* shares (a private one
    for a clock that cannot be weakly referenced)."""
    try:
        per_clock = _wheels.setdefault(clock, {})
    except TypeError:
        return KeepaliveWheel(clock, interval)
    wheel = per_clock.get(interval)
    if wheel is None:
        wheel = per_clock[interval] = KeepaliveWheel(clock, interval)
    return wheel


class KeepaliveMonitor:
    """Pings every *interval* seconds; if nothing arrives from the peer within
    *timeout* seconds of a ping, calls *on_dead* once with a reason.

    The owner calls :meth:`touch` for every message that arrives from the peer,
    so a peer that is busy streaming is never taken for dead.  Each ping gets
    its own deadline, exactly *timeout* after it was sent (the first ping sent
    after the peer's last message is the one that counts), so a dead peer is
    noticed at most ``interval + timeout`` seconds after its last message, and
    never less than *timeout* after it, also when the timeout is longer than
    the interval.  Pings go out on the shared :class:`KeepaliveWheel` of the
    clock and interval: the first one up to ``interval / SLOTS`` early, the
    next ones exactly *interval* apart.
    """

    __slots__ = ("_clock", "interval", "timeout", "_ping", "_on_dead", "_last_seen", "_wheel", "_slot",
                 "_unanswered", "pings_sent", "last_rtt", "owner", "__weakref__")

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        timeout: float,
        ping: Callable[[], Deferred[Any]],
        on_dead: Callable[[str], None],
        owner: object = None,
    ):
        if interval <= 0 or timeout <= 0:
            raise ValueError("keepalive interval and timeout must be positive")
        self._clock = clock
        self.interval = interval
        self.timeout = timeout
        self._ping = ping
        self._on_dead = on_dead
        self._last_seen = clock.seconds()
        self._wheel: KeepaliveWheel | None = None
        #: The wheel slot of the next ping (None: stopped).
        self._slot: int | None = None
        #: When the pings sent since the peer's last message went out (oldest
        #: first); at most ``timeout / interval + 1`` entries; None when there
        #: are none (most of the time: no list per idle connection).
        self._unanswered: list[float] | None = None
        self.pings_sent = 0
        #: Seconds the last answered ping took (None before the first answer).
        self.last_rtt: float | None = None
        #: Who pings (reported with each round trip to :mod:`workerwire.observe`).
        self.owner = owner

    @property
    def running(self) -> bool:
        return self._slot is not None

    @property
    def last_seen(self) -> float:
        return self._last_seen

    def touch(self) -> None:
        """The peer sent something."""
        self._last_seen = self._clock.seconds()

    def start(self) -> None:
        if self._slot is None:
            now = self._last_seen = self._clock.seconds()
            if self._wheel is None:
                self._wheel = wheel_for(self._clock, self.interval)
            self._slot = self._wheel.first_slot(now)
            self._wheel.join_ping(self, self._slot)

    def stop(self) -> None:
        wheel = self._wheel
        if wheel is None:
            return
        if self._slot is not None:
            wheel.leave_ping(self, self._slot)
            self._slot = None
        if self._unanswered:
            for sent in self._unanswered:
                wheel.leave_check(self, sent, self.timeout)
        self._unanswered = None

    def _ping_now(self, slot: int, sent: float) -> None:
        """Called by the wheel's sweep of *slot* at time *sent*."""
        wheel = self._wheel
        assert wheel is not None
        self._slot = slot + SLOTS
        wheel.join_ping(self, self._slot)
        if self._unanswered is None:
            self._unanswered = [sent]
        else:
            self._unanswered.append(sent)
        wheel.join_check(self, sent, self.timeout)
        self.pings_sent += 1
        d = self._ping()
        # The answer (or error) is traffic and is counted by touch(); a lost
        # link is reported by the owner, so the ping's own outcome is moot.
        d.addCallbacks(self._answered, lambda _: None, callbackArgs=(sent,))

    def _answered(self, _: object, sent: float) -> None:
        self.last_rtt = rtt = self._clock.seconds() - sent
        observe.keepalive_answered(self.owner, rtt)

    def _check(self, due_sent: float) -> None:
        """The deadline of the ping sent at *due_sent* is here (the wheel's sweep)."""
        pings = self._unanswered
        if not pings:
            return
        answered = 0
        while answered < len(pings) and pings[answered] <= self._last_seen:
            answered += 1  # the peer spoke after this ping went out
        if answered:
            wheel = self._wheel
            assert wheel is not None
            for sent in pings[:answered]:
                if sent != due_sent:  # that batch is being swept: it forgets us itself
                    wheel.leave_check(self, sent, self.timeout)
            del pings[:answered]
        if not pings:
            self._unanswered = None
            return
        if pings[0] > due_sent:
            return  # a later ping, with a deadline of its own still to come
        silent = self._clock.seconds() - self._last_seen
        self.stop()
        self._on_dead(f"no traffic from the peer for {silent:.1f} s (keepalive timeout {self.timeout:g} s)")
