"""The in-process delivery floor: ``reactor.callLater(0)`` hops, no encoding.

A round trip is two hops (the call reaches the worker a turn later, the answer
reaches the master a turn later), as on the ``null`` backend.  Streaming hands
each chunk to a counting target a turn later and produces the next chunk when
that delivery happened (backpressure of one outstanding update).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from .base import PRINT_MESSAGE, chunk_text

__all__ = ["FloorLink"]


class FloorLink:
    worker_pid: int | None = None

    def __init__(self, reactor: Any, chunk: int) -> None:
        self.reactor = reactor
        self.chunk = chunk
        self.printed = 0

    def _worker_print(self, message: str, answer: Deferred[None]) -> None:
        self.printed += 1
        self.reactor.callLater(0, answer.callback, None)

    def call(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.reactor.callLater(0, self._worker_print, PRINT_MESSAGE, d)
        return d

    def stream(self, nbytes: int) -> Deferred[int]:
        done: Deferred[int] = Deferred()
        text = chunk_text(self.chunk)
        state = {"remaining": nbytes, "received": 0}

        def deliver(updates: list[tuple[str, Any]]) -> None:
            for key, value in updates:
                if key == "stdout":
                    state["received"] += len(value)
            produce()

        def produce() -> None:
            left = state["remaining"]
            if left <= 0:
                done.callback(state["received"])
                return
            piece = text if left >= len(text) else text[:left]
            state["remaining"] = left - len(piece)
            self.reactor.callLater(0, deliver, [("stdout", piece)])

        produce()
        return done

    def close(self) -> Deferred[None]:
        return succeed(None)
