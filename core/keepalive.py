"""Keepalive with a deadline: ping at an interval, declare a silent peer dead."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from . import observe

__all__ = ["KeepaliveMonitor"]


class KeepaliveMonitor:
    """Pings every *interval* seconds; if nothing arrives from the peer within
    *timeout* seconds of a ping, calls *on_dead* once with a reason.

    The owner calls :meth:`touch` for every message that arrives from the peer,
    so a peer that is busy streaming is never taken for dead.  Each ping gets
    its own deadline (the first ping sent after the peer's last message is
    the one that counts), so a dead peer is noticed at most
    ``interval + timeout`` seconds after its last message, also when the
    timeout is longer than the interval.
    """

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
        self._tick_call: IDelayedCall | None = None
        self._deadline_call: IDelayedCall | None = None
        #: When the pings sent since the peer's last message went out (oldest
        #: first); at most ``timeout / interval + 1`` entries, so a list (a
        #: deque would cost every idle connection a 600-byte block).
        self._unanswered: list[float] = []
        self.pings_sent = 0
        #: Seconds the last answered ping took (None before the first answer).
        self.last_rtt: float | None = None
        #: Who pings (reported with each round trip to :mod:`workerwire.observe`).
        self.owner = owner

    @property
    def running(self) -> bool:
        return self._tick_call is not None

    @property
    def last_seen(self) -> float:
        return self._last_seen

    def touch(self) -> None:
        """The peer sent something."""
        self._last_seen = self._clock.seconds()

    def start(self) -> None:
        if self._tick_call is None:
            self._last_seen = self._clock.seconds()
            self._tick_call = self._clock.callLater(self.interval, self._tick)

    def stop(self) -> None:
        for call in (self._tick_call, self._deadline_call):
            if call is not None and call.active():
                call.cancel()
        self._tick_call = self._deadline_call = None
        self._unanswered.clear()

    def _tick(self) -> None:
        self._tick_call = self._clock.callLater(self.interval, self._tick)
        sent = self._clock.seconds()
        self._unanswered.append(sent)
        if self._deadline_call is None:
            self._deadline_call = self._clock.callLater(self.timeout, self._check)
        self.pings_sent += 1
        d = self._ping()
        # The answer (or error) is traffic and is counted by touch(); a lost
        # link is reported by the owner, so the ping's own outcome is moot.
        d.addCallbacks(self._answered, lambda _: None, callbackArgs=(sent,))

    def _answered(self, _: object, sent: float) -> None:
        self.last_rtt = rtt = self._clock.seconds() - sent
        observe.keepalive_answered(self.owner, rtt)

    def _check(self) -> None:
        self._deadline_call = None
        pings = self._unanswered
        answered = 0
        while answered < len(pings) and pings[answered] <= self._last_seen:
            answered += 1  # the peer spoke after this ping went out
        del pings[:answered]
        if not pings:
            return
        now = self._clock.seconds()
        due = pings[0] + self.timeout
        if now < due:
            # A later ping, sent while an earlier one's deadline was pending, has its own.
            self._deadline_call = self._clock.callLater(due - now, self._check)
            return
        silent = now - self._last_seen
        self.stop()
        self._on_dead(f"no traffic from the peer for {silent:.1f} s (keepalive timeout {self.timeout:g} s)")
