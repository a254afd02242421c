"""The keepalive timers of 10,000 connections alone, on the real reactor.

``python -m bench.storm10k_keepalive [INTERVAL] [SECONDS] [MONITORS]`` (defaults 1 s, 10 s, 10,000)

Starts MONITORS :class:`workerwire.keepalive.KeepaliveMonitor` whose pings
are answered at once (no link: what is measured is the timers' own cost),
lets one interval pass, then reports the pings sent over SECONDS, the CPU
time per ping and the delayed calls the reactor holds.  At a 1 s interval,
10,000 monitors ping 10,000 times a second: the load of 10,000 workers at a
60 s interval, 60 times over.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from twisted.internet.defer import Deferred, succeed

from workerwire.keepalive import KeepaliveMonitor

__all__ = ["main"]


def main(argv: list[str]) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    interval = float(argv[0]) if argv else 1.0
    seconds = float(argv[1]) if len(argv) > 1 else 10.0
    count = int(argv[2]) if len(argv) > 2 else 10000
    pings = [0]
    dead: list[str] = []
    monitors: list[KeepaliveMonitor] = []

    def make() -> KeepaliveMonitor:
        def ping() -> Deferred[None]:
            pings[0] += 1
            monitor.touch()
            return succeed(None)

        monitor = KeepaliveMonitor(reactor, interval, interval, ping, dead.append)
        return monitor

    def measure() -> None:
        c0, p0, t0 = time.process_time(), pings[0], time.monotonic()

        def end() -> None:
            c1, p1, t1 = time.process_time(), pings[0], time.monotonic()
            sent = p1 - p0
            print(f"{count:,} monitors, interval {interval:g} s: {sent:,} pings in {t1 - t0:.1f} s "
                  f"(expected {count * (t1 - t0) / interval:,.0f}), CPU {100 * (c1 - c0) / (t1 - t0):.1f} % of a core, "
                  f"{1e6 * (c1 - c0) / max(sent, 1):.1f} us per ping, {len(reactor.getDelayedCalls()):,} delayed "
                  f"calls, {len(dead)} declared dead")
            reactor.stop()

        reactor.callLater(seconds, end)

    def start() -> None:
        for _ in range(count):
            monitor = make()
            monitors.append(monitor)
            monitor.start()
        reactor.callLater(interval, measure)

    reactor.callWhenRunning(start)
    reactor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
