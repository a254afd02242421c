"""Writing a command's output to this process's stdout/stderr without blocking the reactor.

A terminal or pipe can be slower than the command.  :class:`OutputWriter`
hands the bytes to one writer thread, in order; the reactor thread only
queues them.  Up to ``limit`` bytes may wait in the queue; beyond that,
:meth:`OutputWriter.write` waits for the thread to catch up — memory stays
bounded, and a consumer that stops reading (``| less``) holds the command back
as it would if the command wrote to it directly.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import IO

__all__ = ["OutputWriter"]


class OutputWriter:
    """Ordered, threaded writes to binary streams (see the module docstring)."""

    def __init__(self, limit: int = 4 * 1024 * 1024):
        self.limit = limit
        self._queue: deque[tuple[IO[bytes], bytes] | None] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        #: Set once a stream refused a write (e.g. a closed pipe: EPIPE).
        self.broken: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="workerwire-output", daemon=True)
        self._thread.start()

    def write(self, stream: IO[bytes], data: bytes) -> None:
        if not data or self.broken is not None:
            return
        with self._cond:
            while self._queued >= self.limit and self.broken is None:
                self._cond.wait(0.1)
            self._queue.append((stream, data))
            self._queued += len(data)
            self._cond.notify_all()

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
