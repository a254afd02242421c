"""Flow control of command output: a bounded window of unacknowledged update bytes.

The worker side of a link keeps one :class:`SendWindow`.  Each ``Update``
costs its size (the total length of the MessagePack encodings of its Value
arguments) from the moment it is sent until the master's answer to it
arrives.  An update is sent only while the bytes in flight plus its own size
fit the window, or when nothing is in flight (so one update larger than the
window still goes, alone).  Several updates are in flight at once (pipelined).

``channel.update()`` fires once its batch has been sent *and* the window
still has room, so a producer that waits for it never has more than the
window in flight plus the one batch it is about to hand over; a slow master
(one that answers late) therefore slows the producer instead of growing
memory.  ``Complete`` goes through the same queue (it must follow the
command's updates) but costs nothing and fires when the master answered it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire.errors import ConnectionLost

from .errors import translate_failure

__all__ = ["SendWindow", "DEFAULT_WINDOW"]

_log = Logger()

#: Default window, in bytes (the master may ask for less in its Hello answer).
DEFAULT_WINDOW = 4 * 1024 * 1024


@dataclass
class _Item:
    size: int
    send: Callable[[], Deferred[Any]]
    fires_on_answer: bool
    label: str
    done: Deferred[None] = field(default_factory=Deferred)


class SendWindow:
    """FIFO of ordered sends with a byte window over the unanswered ones."""

    def __init__(self, limit: int = DEFAULT_WINDOW):
        if limit < 1:
            raise ValueError("the window must be at least 1 byte")
        self.limit = limit
        #: Bytes sent and not yet answered.
        self.in_flight = 0
        #: Updates sent and not yet answered.
        self.in_flight_count = 0
        #: Bytes of updates queued and not yet sent.
        self.queued = 0
        #: Highest ``in_flight``, ``in_flight_count`` and ``buffered`` seen, and
        #: how many updates did not find room at once (for tests and benchmarks).
        self.peak_in_flight = 0
        self.peak_in_flight_count = 0
        self.peak_buffered = 0
        self.stalls = 0
        self._queue: deque[_Item] = deque()
        self._room_waiters: list[_Item] = []
        self._sent: dict[int, _Item] = {}
        self._lost: ConnectionLost | None = None
        self._pumping = False
        self._again = False

    @property
    def buffered(self) -> int:
        """Bytes held for this link: in flight plus queued."""
        return self.in_flight + self.queued

    def send_update(self, size: int, send: Callable[[], Deferred[Any]], label: str = "update") -> Deferred[None]:
        """Queue an update of *size* bytes; fires when the window has room again."""
        return self._enqueue(_Item(size, send, False, label))

    def send_ordered(self, send: Callable[[], Deferred[Any]], label: str = "message") -> Deferred[None]:
        """Queue a message that must follow the queued updates; fires with its answer."""
        return self._enqueue(_Item(0, send, True, label))

    def lost(self, reason: str) -> None:
        """The link is gone: everything waiting fails with ConnectionLost."""
        if self._lost is not None:
            return
        self._lost = ConnectionLost(f"link to the master lost: {reason}")
        waiting = list(self._queue) + self._room_waiters + list(self._sent.values())
        self._queue.clear()
        self.queued = 0
        self._room_waiters = []
        self._sent = {}
        for item in waiting:
            if not item.done.called:
                item.done.errback(Failure(self._lost))

    def _enqueue(self, item: _Item) -> Deferred[None]:
        if self._lost is not None:
            item.done.errback(Failure(self._lost))
            return item.done
        self._queue.append(item)
        self.queued += item.size
        self.peak_buffered = max(self.peak_buffered, self.buffered)
        self._pump()
        if item.size and not item.done.called:
            self.stalls += 1
        return item.done

    def _fits(self, item: _Item) -> bool:
        return item.size == 0 or self.in_flight == 0 or self.in_flight + item.size <= self.limit

    def _pump(self) -> None:
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                while self._queue and self._lost is None and self._fits(self._queue[0]):
                    item = self._queue.popleft()
                    self.queued -= item.size
                    self._send(item)
                self._release_room_waiters()
        finally:
            self._pumping = False

    def _send(self, item: _Item) -> None:
        self.in_flight += item.size
        if item.size:
            self.in_flight_count += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.peak_in_flight_count = max(self.peak_in_flight_count, self.in_flight_count)
        if not item.fires_on_answer:
            self._room_waiters.append(item)
        self._sent[id(item)] = item
        item.send().addBoth(self._answered, item)

    def _answered(self, result: object, item: _Item) -> None:
        if self._lost is not None:
            return
        del self._sent[id(item)]
        self.in_flight -= item.size
        if item.size:
            self.in_flight_count -= 1
        if isinstance(result, Failure):
            failure = translate_failure(result)
            if not item.done.called:
                item.done.errback(failure)
            elif not failure.check(ConnectionLost):
                _log.warn("amp worker: the master refused {label}: {why}", label=item.label, why=failure.value)
        elif item.fires_on_answer and not item.done.called:
            item.done.callback(None)
        self._pump()

    def _release_room_waiters(self) -> None:
        if self.in_flight >= self.limit or not self._room_waiters:
            return
        waiters, self._room_waiters = self._room_waiters, []
        for item in waiters:
            if not item.done.called:
                item.done.callback(None)
