"""Keepalive with a deadline: ping at an interval, declare a silent peer dead."""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["KeepaliveMonitor"]


class KeepaliveMonitor:
    """Pings every *interval* seconds; if nothing arrives from the peer within
    *timeout* seconds of a ping, calls *on_dead* once with a reason.

    The owner calls :meth:`touch` for every message that arrives from the peer,
    so a peer that is busy streaming is never taken for dead.  A dead peer is
    thus noticed at most ``interval + timeout`` seconds after its last message.
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        timeout: float,
        ping: Callable[[], Deferred[object]],
        on_dead: Callable[[str], None],
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
        self.pings_sent = 0

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

    def _tick(self) -> None:
        self._tick_call = self._clock.callLater(self.interval, self._tick)
        if self._deadline_call is None:
            sent_at = self._clock.seconds()
            self._deadline_call = self._clock.callLater(self.timeout, self._check, sent_at)
        self.pings_sent += 1
        d = self._ping()
        # The answer (or error) is traffic and is counted by touch(); a lost
        # link is reported by the owner, so the ping's own outcome is moot.
        d.addErrback(lambda _: None)

    def _check(self, sent_at: float) -> None:
        self._deadline_call = None
        if self._last_seen >= sent_at:
            return
        silent = self._clock.seconds() - self._last_seen
        self.stop()
        self._on_dead(f"no traffic from the peer for {silent:.1f} s (keepalive timeout {self.timeout:g} s)")
