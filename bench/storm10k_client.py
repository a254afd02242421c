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
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from twisted.internet import stdio
from twisted.internet.defer import Deferred

from workerwire import LinkOptions, observe
from workerwire.registry import load_backend

from .storm import PASSWORD, describe, storm, worker_name
from .storm10k_master import EXIT_FD_LIMIT, _Commands, say

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


class ClientState:
    """What the client's workers did since it started (the observe hook and the poll)."""

    def __init__(self, connectors: list[Any], timeout: float) -> None:
        self.connectors = connectors
        self.timeout = timeout
        self.lost = 0
        self.t_all: float | None = None  # the last time every worker was connected
        self.t_dip: float | None = None  # the first time since then that one was not
        self.ka_answered = 0
        self.ka_late = 0
        self.ka_max_rtt = 0.0

    def keepalive_answered(self, owner: object, rtt: float) -> None:
        self.ka_answered += 1
        if rtt > self.ka_max_rtt:
            self.ka_max_rtt = rtt
        if rtt > self.timeout:
            self.ka_late += 1

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
    from .bot import BenchBot

    backend = load_backend(backend_name)
    options = LinkOptions(keepalive_interval=float(interval_s), keepalive_timeout=timeout)
    basedir = tempfile.mkdtemp(prefix="workerwire-bench-storm10k-")
    connectors: list[Any] = []
    state = ClientState(connectors, timeout)
    observe.observe(state)
    errors: Counter[str] = Counter()
    give_up = time.monotonic() + deadline

    def connect_one(i: int) -> Deferred[Any]:
        connector = backend.create_connector(BenchBot(basedir, reactor), address, worker_name(first + i), PASSWORD,
                                             options, reactor)
        connectors.append(connector)
        connector.notifyOnDisconnect(state.on_lost)
        connector.start()
        done: Deferred[Any] = Deferred()

        def wait() -> None:
            connector.whenConnected().addCallbacks(done.callback, retry)

        def retry(f: Any) -> None:  # a refused attempt: the connector retries; count it, wait again
            errors[describe(f)] += 1
            if time.monotonic() < give_up:
                reactor.callLater(0, wait)

        wait()
        return done

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

    try:
        profiled(f"storm10k-client-{backend_name}", reactor.run)
    finally:
        shutil.rmtree(basedir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
