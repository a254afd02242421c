"""A per-link memory budget: what one link holds queued for its peer is bounded.

A peer that keeps sending requests and never reads the answers makes its
answers pile up in our transport's write buffer, which Twisted lets grow
without limit.  :class:`SendBudget` bounds that, the same on both ends and for
every backend:

* after every read from the peer (the only thing that makes a well-behaved
  end write on its own is the peer's input, and while reading is paused there
  is none), the backend calls :meth:`SendBudget.after_read`; when the bytes
  queued for the peer (the transport's write buffer plus whatever the backend
  holds for it) are above ``LinkOptions.send_queue_limit``, the link **stops
  reading** from that peer (``pauseProducing`` of the transport, or the
  backend's equivalent);
* while paused, the queue is looked at every :data:`POLL_INTERVAL` seconds;
  once it is down to ``send_queue_resume`` bytes, reading resumes;
* if the peer takes **nothing** of the queue for ``send_queue_timeout``
  seconds while it is over the limit, the link is closed as a misbehaving
  peer: one warning naming the peer and what it did, and the counter
  ``send_queue_dropped`` of the stats the backend passed (a master passes its
  listener's ``login_guard.stats``) goes up by one (``send_queue_paused``
  counts the pauses).

So one link never holds more than ``send_queue_limit`` plus what one read's
answers add, whatever the peer sends; a legitimate slow peer (one that reads,
however slowly) is paused and resumed, never dropped.

Why not register as a producer on the transport: a transport with a registered
producer defers ``loseConnection`` until it is unregistered, which every
close path of every backend would then have to do; reading the buffer's size
costs three attribute reads, so it is done on every read instead.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from twisted.logger import Logger

__all__ = ["SendBudget", "transport_queued", "POLL_INTERVAL"]

_log = Logger()

#: Seconds between looks at the queue of a paused link.
POLL_INTERVAL = 0.05


def transport_queued(transport: Any) -> int:
    """Bytes *transport* holds written and not yet sent (Twisted's
    ``FileDescriptor`` buffer; through TLS, the buffer of the transport under
    it).  0 for a transport whose buffer this cannot see."""
    for _ in range(4):
        if transport is None:
            return 0
        buffer = getattr(transport, "dataBuffer", None)
        if buffer is not None:
            try:
                return len(buffer) - transport.offset + transport._tempDataLen
            except (AttributeError, TypeError):
                return 0
        transport = getattr(transport, "transport", None)
    return 0


class SendBudget:
    """Bounds what one link holds queued for its peer (see the module docstring).

    :param options: a :class:`~workerwire.backend.LinkOptions` (its
        ``send_queue_limit``, ``send_queue_resume``, ``send_queue_timeout``).
    :param clock: the reactor.
    :param queued: bytes queued for the peer now.
    :param pause: stop reading from the peer.
    :param resume: read from the peer again.
    :param drop: close the link at once; called once, with the reason.
    :param who: the peer for the log line (the worker's name once it is known).
    :param side: ``"master"`` or ``"worker"``: the end this budget is on.
    :param stats: counters to add ``send_queue_paused`` / ``send_queue_dropped`` to.
    """

    def __init__(self, options: Any, clock: Any, queued: Callable[[], int], pause: Callable[[], None],
                 resume: Callable[[], None], drop: Callable[[str], None], who: Callable[[], str],
                 side: str = "master", stats: "Counter[str] | None" = None):
        self.limit: int = options.send_queue_limit
        self.resume_at: int = options.send_queue_resume
        self.timeout: float = options.send_queue_timeout
        self.clock = clock
        self._queued = queued
        self._pause = pause
        self._resume = resume
        self._drop = drop
        self._who = who
        self.side = side
        self.stats: Counter[str] = stats if stats is not None else Counter()
        #: Reading from the peer is paused by this budget.
        self.paused = False
        #: The link was dropped by this budget.
        self.dropped = False
        #: Highest queue seen at a check (for tests and benchmarks).
        self.peak = 0
        self._stopped = False
        self._poll: Any = None
        self._stuck_since = 0.0
        self._last = 0
        self._paused_at = 0.0

    def after_read(self) -> None:
        """The backend handled a read from the peer: pause if over the limit."""
        if self.paused or self._stopped:
            return
        n = self._queued()
        if n > self.peak:
            self.peak = n
        if n > self.limit:
            self.paused = True
            self.stats["send_queue_paused"] += 1
            now = self.clock.seconds()
            self._paused_at = self._stuck_since = now
            self._last = n
            self._pause()
            self._poll = self.clock.callLater(POLL_INTERVAL, self._check)

    def stop(self) -> None:
        """The link is gone (or closing): no more checks."""
        self._stopped = True
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._poll = None

    def _check(self) -> None:
        self._poll = None
        if self._stopped:
            return
        n = self._queued()
        if n <= self.resume_at:
            self.paused = False
            self._resume()
            return
        now = self.clock.seconds()
        if n < self._last:
            self._stuck_since = now  # the peer takes some: slow, not stuck
        self._last = n
        if now - self._stuck_since >= self.timeout:
            self.stop()
            self.dropped = True
            self.stats["send_queue_dropped"] += 1
            why = (f"it kept sending while it read none of what was sent to it: {n} bytes queued for it "
                   f"(limit {self.limit}), none taken for {now - self._stuck_since:.1f} s "
                   f"(send_queue_timeout); dropped")
            _log.warn("{side}: {peer} misbehaved: {why}", side=self.side, peer=self._who(), why=why,
                      send_queue_dropped=True)
            self._drop(why)
            return
        self._poll = self.clock.callLater(POLL_INTERVAL, self._check)
