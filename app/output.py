"""Writing a command's output to this process's stdout/stderr without blocking the reactor.

A terminal or pipe can be slower than the command.  :class:`OutputWriter`
hands the bytes to one writer thread, in order; the reactor thread only
queues them and never waits.  When more than ``limit`` bytes are queued,
:meth:`OutputWriter.room` gives a Deferred that fires once the thread has
caught up: ``workerwire exec`` returns it from ``remote_update``, so a
backend with flow control holds the worker back (and the worker stops
reading the command's output) instead of the queue growing.

A backend without end-to-end flow control cannot be held back that way.
So that memory stays bounded even then, :meth:`OutputWriter.write` waits
for the thread once ``hard_limit`` bytes are queued: only with such a backend,
and only while the terminal or pipe is not reading at all, does the reactor
thread wait.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import IO, Any

from twisted.internet.defer import Deferred, succeed

__all__ = ["OutputWriter"]


class OutputWriter:
    """Ordered, threaded writes to binary streams (see the module docstring)."""

    def __init__(self, reactor: Any, limit: int = 1024 * 1024, hard_limit: int = 16 * 1024 * 1024):
        self.reactor = reactor
        self.limit = limit
        self.hard_limit = hard_limit
        self._queue: deque[tuple[IO[bytes], bytes] | None] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._room_waiters: list[Deferred[None]] = []
        #: Set once a stream refused a write (e.g. a closed pipe: EPIPE).
        self.broken: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="workerwire-output", daemon=True)
        self._thread.start()

    def write(self, stream: IO[bytes], data: bytes) -> None:
        """Queue *data* for *stream*; waits only beyond ``hard_limit`` (see the module docstring)."""
        if not data or self.broken is not None:
            return
        with self._cond:
            while self._queued >= self.hard_limit and self.broken is None:
                self._cond.wait(0.1)
            self._queue.append((stream, data))
            self._queued += len(data)
            self._cond.notify_all()

    def room(self) -> Deferred[None]:
        """Fires (in the reactor thread) when at most ``limit`` bytes are queued."""
        with self._cond:
            if self._queued <= self.limit or self.broken is not None:
                return succeed(None)
            d: Deferred[None] = Deferred()
            self._room_waiters.append(d)
            return d

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop the thread (waits at most *timeout* seconds)."""
        with self._cond:
            self._queue.append(None)
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                item = self._queue.popleft()
            if item is None:
                return
            stream, data = item
            if self.broken is None:
                try:
                    stream.write(data)
                    stream.flush()
                except OSError as e:
                    self.broken = e
            with self._cond:
                self._queued -= len(data)
                self._cond.notify_all()
                ready = self._queued <= self.limit or self.broken is not None
                waiters, self._room_waiters = (self._room_waiters, []) if ready else ([], self._room_waiters)
            if waiters:
                self.reactor.callFromThread(_fire, waiters)


def _fire(waiters: list[Deferred[None]]) -> None:
    for d in waiters:
        d.callback(None)
