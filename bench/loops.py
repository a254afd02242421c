"""Measurement loops shared by every subject, driven by Deferred callbacks.

The same loop code runs over every link (raw transport, raw RPC, workerwire
backend), so its own small cost is the same in every figure.  Loops are
bounded by a call count and a wall-clock deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from .procfs import rss_kib
from .stats import percentile

__all__ = ["sequential", "pipelined", "RssSampler", "rtt_figures"]

Call = Callable[[], "Deferred[Any]"]


class _Deadline(Exception):
    pass


def sequential(call: Call, count: int, deadline_s: float) -> "Deferred[list[float]]":
    """Make *count* calls one after another; fire with each call's latency (s)."""
    done: Deferred[list[float]] = Deferred()
    latencies: list[float] = []
    limit = time.perf_counter() + deadline_s
    now = time.perf_counter

    def issue() -> None:
        # A loop, not recursion, in case a call answers synchronously.
        while len(latencies) < count:
            if now() > limit:
                done.errback(_Deadline(f"sequential calls: deadline of {deadline_s:g} s passed"))
                return
            t0 = now()
            sync: list[bool] = []
            d = call()

            def answered(_: object, t0: float = t0, sync: list[bool] = sync) -> None:
                latencies.append(now() - t0)
                if sync:  # answered later: continue the loop from here
                    issue()
                else:
                    sync.append(False)

            d.addCallbacks(answered, failed)
            if not sync:  # not answered yet; the callback will continue
                sync.append(True)
                return
        if not done.called:
            done.callback(latencies)

    def failed(f: Failure) -> None:
        if not done.called:
            done.errback(f)

    issue()
    return done


def pipelined(call: Call, count: int, window: int, deadline_s: float) -> "Deferred[float]":
    """Make *count* calls keeping *window* outstanding; fire with the elapsed seconds."""
    done: Deferred[float] = Deferred()
    state = {"issued": 0, "answered": 0}
    t0 = time.perf_counter()
    limit = t0 + deadline_s

    def issue_one() -> None:
        state["issued"] += 1
        call().addCallbacks(answered, failed)

    def answered(_: object) -> None:
        state["answered"] += 1
        if done.called:
            return
        if state["answered"] == count:
            done.callback(time.perf_counter() - t0)
        elif time.perf_counter() > limit:
            done.errback(_Deadline(f"pipelined calls: deadline of {deadline_s:g} s passed"))
        elif state["issued"] < count:
            issue_one()

    def failed(f: Failure) -> None:
        if not done.called:
            done.errback(f)

    for _ in range(min(window, count)):
        issue_one()
    return done


def rtt_figures(latencies: list[float]) -> dict[str, float]:
    total = sum(latencies)
    return {
        "calls_per_s": len(latencies) / total if total else 0.0,
        "mean_us": total / len(latencies) * 1e6,
        "p99_us": percentile(latencies, 99) * 1e6,
    }


@dataclass
class RssSampler:
    """Samples VmRSS of some processes every *interval* seconds; keeps each one's peak."""

    pids: dict[str, int | None]
    interval: float = 0.05
    peaks: dict[str, int] = field(default_factory=dict)
    start_values: dict[str, int] = field(default_factory=dict)
    _loop: LoopingCall | None = None

    def start(self) -> None:
        for role, pid in self.pids.items():
            v = rss_kib(pid)
            if v is not None:
                self.start_values[role] = v
                self.peaks[role] = v
        self._loop = LoopingCall(self.sample)
        self._loop.start(self.interval, now=False)

    def sample(self) -> None:
        for role, pid in self.pids.items():
            v = rss_kib(pid)
            if v is not None and v > self.peaks.get(role, 0):
                self.peaks[role] = v

    def stop(self) -> None:
        self.sample()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
