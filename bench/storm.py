"""Connection storm: many workers logging in at once from one client process.

``python -m bench.storm raw-tcp|raw-pb|raw-amp COUNT DEADLINE HOST PORT``
``python -m bench.storm ww COUNT DEADLINE BACKEND ADDRESS``

Prints ``DONE {json}`` when all are connected or the deadline passed, then
holds the connections until stdin closes.  ``t_start`` and ``t_last`` are
``time.monotonic()`` values (CLOCK_MONOTONIC, comparable across processes).
"""

from __future__ import annotations

import atexit
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Any, Callable

from twisted.internet.defer import Deferred

__all__ = ["storm", "worker_name", "ww_connect_factory"]

PASSWORD = "bench-pw"


def worker_name(i: int) -> str:
    return f"w{i:05d}"


def storm(reactor: Any, connect_one: Callable[[int], "Deferred[Any]"], count: int,
          deadline: float, errors: "Counter[str] | None" = None) -> "Deferred[dict[str, Any]]":
    """Start *count* logins in one reactor turn; fire with what happened by *deadline*.

    *errors* counts failed attempts (a connector may still succeed on a retry).
    """
    result: Deferred[dict[str, Any]] = Deferred()
    state: dict[str, Any] = {"ok": 0, "last": None}
    errors = Counter() if errors is None else errors
    t0 = time.monotonic()

    def finish() -> None:
        if result.called:
            return
        if timer.active():
            timer.cancel()
        result.callback({
            "workers": count, "connected": state["ok"], "failed": count - state["ok"],
            "t_start": t0, "t_last": state["last"],
            "seconds": (state["last"] - t0) if state["ok"] == count else None,
            "errors": dict(errors.most_common(3)),
        })

    def ok(_: object) -> None:
        state["ok"] += 1
        state["last"] = time.monotonic()
        if state["ok"] == count:
            finish()

    def bad(f: Any) -> None:
        errors[describe(f)] += 1

    timer = reactor.callLater(deadline, finish)
    for i in range(count):
        connect_one(i).addCallbacks(ok, bad)
    return result


def describe(f: Any) -> str:
    return f"{f.type.__name__}: {f.getErrorMessage()[:120]}"


def ww_connect_factory(reactor: Any, backend_name: str, address: str, deadline: float,
                       connectors: list[Any], errors: "Counter[str]", options: Any = None, first: int = 0,
                       on_lost: Callable[[], None] | None = None) -> Callable[[int], "Deferred[Any]"]:
    """connect_one for a workerwire backend: a connector (default backoff) per worker, named from
    ``worker_name(first)`` on, with *options* (default ``LinkOptions()``), *on_lost* told of each loss."""
    from workerwire.backend import LinkOptions
    from workerwire.registry import load_backend

    from .bot import BenchBot

    backend = load_backend(backend_name)
    basedir = tempfile.mkdtemp(prefix="workerwire-bench-storm-")
    atexit.register(shutil.rmtree, basedir, True)
    options = LinkOptions() if options is None else options
    give_up = time.monotonic() + deadline

    def connect_one(i: int) -> Deferred[Any]:
        connector = backend.create_connector(BenchBot(basedir, reactor), address, worker_name(first + i), PASSWORD,
                                             options, reactor)
        connectors.append(connector)
        if on_lost is not None:
            connector.notifyOnDisconnect(on_lost)
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

    return connect_one


def main(argv: list[str]) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    from .lifeline import watch_stdin
    from .procfs import raise_fd_limit

    raise_fd_limit()
    kind, count_s, deadline_s, *rest = argv
    count, deadline = int(count_s), float(deadline_s)
    connectors: list[Any] = []
    errors: Counter[str] = Counter()
    if kind == "ww":
        connect_one = ww_connect_factory(reactor, rest[0], rest[1], deadline, connectors, errors)
    else:
        host, port = rest[0], int(rest[1])
        if kind == "raw-tcp":
            from .sides import raw_tcp

            def connect_one(i: int) -> Deferred[Any]:
                return raw_tcp.storm_connect(reactor, host, port, deadline)
        elif kind == "raw-pb":
            from .sides import raw_pb

            def connect_one(i: int) -> Deferred[Any]:
                return raw_pb.storm_connect(reactor, host, port, worker_name(i), PASSWORD, deadline)
        elif kind == "raw-amp":
            from .sides import raw_amp

            def connect_one(i: int) -> Deferred[Any]:
                return raw_amp.storm_connect(reactor, host, port, worker_name(i), PASSWORD, deadline)
        else:
            sys.stderr.write(f"bench.storm: unknown kind {kind!r}\n")
            return 2

    def report(outcome: dict[str, Any]) -> None:
        sys.stdout.write("DONE " + json.dumps(outcome) + "\n")
        sys.stdout.flush()

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    reactor.callWhenRunning(lambda: storm(reactor, connect_one, count, deadline, errors).addCallback(report))
    watch_stdin(reactor, stop, max_seconds=deadline + 120)
    from .profiling import profiled

    profiled(f"storm-{kind}-{rest[0] if kind == 'ww' else ''}", reactor.run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
