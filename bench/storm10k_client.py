"""One client process of the 10,000-worker storm (``bench.storm10k``).

``python -m bench.storm10k_client BACKEND ADDRESS FIRST COUNT INTERVAL TIMEOUT DEADLINE``

Starts COUNT workerwire connectors (workers ``worker_name(FIRST)`` ...,
each serving a :class:`bench.bot.BenchBot`, with the default reconnect
backoff and keepalive every INTERVAL seconds with TIMEOUT) in one reactor
turn, and prints ``DONE {json}`` (as :func:`bench.storm.storm` reports it)
when all are connected or DEADLINE passed.  It then holds the workers --
they reconnect on their own after the master goes away -- and answers a
``stats`` line on stdin with ``STATS {json}``: workers connected now, when
they last all were (``time.monotonic()``), disconnects, and the keepalive
round trips the :mod:`workerwire.observe` hook saw.  It exits when stdin
closes.

It raises its open-files limit to the hard limit first; when that is still
below COUNT plus a margin it says so and exits 3, instead of hanging with
connections that cannot be made.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import Counter
from typing import Any

from twisted.internet import stdio

from workerwire import LinkOptions, observe

from .storm import storm, ww_connect_factory
from .storm10k_master import EXIT_FD_LIMIT, KeepaliveTally, _Commands, say

__all__ = ["main", "files_needed"]

#: Descriptors a client needs besides one per worker (reactor, pipes, imports).
SPARE_FILES = 64


def files_needed(count: int) -> int:
    return count + SPARE_FILES


def raise_limit_for(count: int) -> str | None:
    """Raise the soft open-files limit to the hard one; a message when it stays too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    needed = files_needed(count)
    if soft != resource.RLIM_INFINITY and soft < needed:
        return (f"bench.storm10k_client: the open-files limit is {soft} (hard {hard}), below the {needed} that "
                f"{count} workers need; raise `ulimit -n` or spread the workers over more client processes "
                "(--clients)")
    return None


class ClientState(KeepaliveTally):
    """What the client's workers did since it started (the observe hook and the poll)."""

    def __init__(self, connectors: list[Any], timeout: float) -> None:
        super().__init__(timeout)
        self.connectors = connectors
        self.lost = 0
        self.t_all: float | None = None  # the last time every worker was connected
        self.t_dip: float | None = None  # the first time since then that one was not

    def on_lost(self) -> None:
        self.lost += 1
        if self.t_dip is None:
            self.t_dip = time.monotonic()

    def on_connected(self) -> None:
        if self.t_dip is not None or self.t_all is None:
            if all(c.isConnected for c in self.connectors):
                self.t_all = time.monotonic()
                self.t_dip = None

    def stats(self) -> dict[str, Any]:
        return {"t": time.monotonic(), "connected": sum(1 for c in self.connectors if c.isConnected),
                "workers": len(self.connectors), "t_all": self.t_all, "lost": self.lost,
                "ka_answered": self.ka_answered, "ka_late": self.ka_late, "ka_max_rtt": self.ka_max_rtt,
                "attempts": sum(getattr(c, "connections_made", 0) for c in self.connectors)}


def main(argv: list[str]) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    backend_name, address, first_s, count_s, interval_s, timeout_s, deadline_s = argv
    first, count, deadline = int(first_s), int(count_s), float(deadline_s)
    timeout = float(timeout_s)
    problem = raise_limit_for(count)
    if problem:
        sys.stderr.write(problem + "\n")
        return EXIT_FD_LIMIT
    options = LinkOptions(keepalive_interval=float(interval_s), keepalive_timeout=timeout)
    connectors: list[Any] = []
    state = ClientState(connectors, timeout)
    observe.observe(state)
    errors: Counter[str] = Counter()
    connect_one = ww_connect_factory(reactor, backend_name, address, deadline, connectors, errors, options, first,
                                     state.on_lost)

    def poll() -> None:  # notices the moment every worker is back (after a master restart)
        state.on_connected()
        reactor.callLater(0.1, poll)

    def command(line: str) -> None:
        if line == "stats":
            state.on_connected()
            say("STATS", state.stats())
            state.ka_max_rtt = 0.0  # the slowest round trip since the last stats

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    def started() -> None:
        storm(reactor, connect_one, count, deadline, errors).addCallback(lambda outcome: say("DONE", outcome))
        poll()

    stdio.StandardIO(_Commands(command, stop), reactor=reactor)
    reactor.callWhenRunning(started)
    from .profiling import profiled

    profiled(f"storm10k-client-{backend_name}", reactor.run)  # the bots' directory goes at exit (ww_connect_factory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
