"""The master process of the 10,000-worker storm (``bench.storm10k``).

``python -m bench.storm10k_master BACKEND PORT_STRING WORKERS INTERVAL TIMEOUT [--tracemalloc] [--option=NAME=VALUE ...]``

(``--option``: a :class:`~workerwire.LinkOptions` field of the master other than its default.)

Listens with workerwire backend BACKEND on PORT_STRING (``tcp:port=0:...``
the first time, the same port again after a restart), registers WORKERS
workers (:func:`bench.storm.worker_name`, :data:`bench.storm.PASSWORD`) with
keepalive every INTERVAL seconds and a TIMEOUT, then reports on stdout, one
JSON line each:

``READY {...}``     every worker registered, the port listening (its address, RSS, ``time.monotonic()``);
``ATTACHED {...}``  all WORKERS attached at once (when the last one did, RSS after a ``gc.collect()``);
``STATS {...}``     the answer to a ``stats`` line on stdin: live connections, disconnects,
                    keepalive round trips seen by the :mod:`workerwire.observe` hook (answered,
                    answered later than the timeout, the slowest since the last ``stats``),
                    the login guard's counters;
``TRACEMALLOC {...}`` the answer to ``tracemalloc`` (with ``--tracemalloc``): the
                    allocations made since READY, by line, per attached connection.

It exits when stdin closes.  The open-files limit is raised as ``workerwire
master`` raises it (:func:`workerwire_app.limits.raise_open_files_limit`);
when it stays below what WORKERS connections need, the process says so and
exits 3 instead of accepting connections it cannot hold.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

from twisted.internet import stdio
from twisted.protocols.basic import LineReceiver

from workerwire import LinkOptions, observe
from workerwire.master import Connection
from workerwire.registry import load_backend

from .procfs import rss_kib
from .storm import PASSWORD, worker_name

__all__ = ["StormMaster", "main"]

EXIT_FD_LIMIT = 3


class KeepaliveTally:
    """A LinkObserver's count of keepalive round trips: answered, later than *timeout*, the slowest."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.ka_answered = 0
        self.ka_late = 0
        self.ka_max_rtt = 0.0

    def keepalive_answered(self, owner: object, rtt: float) -> None:
        self.ka_answered += 1
        if rtt > self.ka_max_rtt:
            self.ka_max_rtt = rtt
        if rtt > self.timeout:
            self.ka_late += 1


class StormMaster(KeepaliveTally):
    """MasterHooks that accepts every worker and counts what happens to them."""

    def __init__(self, workers: int, timeout: float) -> None:
        super().__init__(timeout)
        self.workers = workers
        self.live = 0
        self.attached_total = 0
        self.lost = 0
        self.t_all: float | None = None
        self.t_last: float | None = None
        #: monotonic time and process CPU seconds at the first attach.
        self.first: tuple[float, float] | None = None
        self.on_all: Any = None

    # MasterHooks
    def newConnection(self, conn: Connection, workerName: str) -> None:
        self.live += 1
        self.attached_total += 1
        self.t_last = time.monotonic()
        if self.first is None:
            self.first = (self.t_last, time.process_time())
        conn.notifyOnDisconnect(self._lost)
        if self.live == self.workers and self.t_all is None:
            self.t_all = self.t_last
            if self.on_all is not None:
                self.on_all()

    def workerShutdownRequested(self, conn: Connection) -> None:
        pass

    def _lost(self) -> None:
        self.live -= 1
        self.lost += 1


class _Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, handle: Any, on_close: Any) -> None:
        self.handle = handle
        self.on_close = on_close

    def lineReceived(self, line: bytes) -> None:
        self.handle(line.decode().strip())

    def connectionLost(self, reason: Any = None) -> None:
        self.on_close()


def say(kind: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(f"{kind} {json.dumps(payload)}\n")
    sys.stdout.flush()


def check_fd_limit(workers: int, options: LinkOptions) -> str | None:
    """Raise the limit as the app's master does; a message when it is still too low."""
    from workerwire_app.limits import files_needed, raise_open_files_limit

    needed = files_needed(workers, [options])
    soft = raise_open_files_limit(needed)
    if soft < needed:
        return (f"bench.storm10k_master: the open-files limit is {soft}, below the {needed} descriptors that "
                f"{workers} workers and the login caps need; raise `ulimit -n` (and the hard limit) or run fewer "
                "workers")
    return None


def main(argv: list[str]) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    trace = "--tracemalloc" in argv
    changes = dict(a[len("--option="):].split("=", 1) for a in argv if a.startswith("--option="))
    args = [a for a in argv if not a.startswith("--")]
    backend_name, port_str, workers_s, interval_s, timeout_s = args
    workers, interval, timeout = int(workers_s), float(interval_s), float(timeout_s)
    # The waiting room holds the fleet, as `workerwire master` sizes it for a config of this many workers,
    # as far as the open-files limit leaves room for it beside the workers' own connections.
    from workerwire_app.limits import files_needed, raise_open_files_limit

    plain = LinkOptions(keepalive_interval=interval, keepalive_timeout=timeout)
    soft = raise_open_files_limit(files_needed(workers, [plain.with_(max_waiting_logins=workers)]))
    room = min(workers, soft - files_needed(workers, [plain.with_(max_waiting_logins=0)]))
    options = plain.with_(max_waiting_logins=max(plain.max_waiting_logins, room))
    options = options.with_(**{k: type(getattr(options, k))(v) for k, v in changes.items()})
    problem = check_fd_limit(workers, options)
    if problem:
        sys.stderr.write(problem + "\n")
        return EXIT_FD_LIMIT
    backend = load_backend(backend_name)
    master = StormMaster(workers, timeout)
    listener = backend.create_listener(master, options, reactor)
    guard = getattr(listener, "login_guard", None)
    observe.observe(master)
    if trace:
        import tracemalloc

        tracemalloc.start()
    state: dict[str, Any] = {}

    def guard_stats() -> dict[str, int] | None:
        return None if guard is None else dict(guard.stats)

    def on_all() -> None:
        cpu = time.process_time()
        gc.collect()
        say("ATTACHED", {"workers": workers, "t_all": master.t_all, "rss_kib": rss_kib(None), "cpu_s": cpu,
                         "first": master.first,
                         "guard": guard_stats()})

    master.on_all = on_all

    def command(line: str) -> None:
        if line == "stats":
            say("STATS", {"t": time.monotonic(), "live": master.live, "attached_total": master.attached_total,
                          "lost": master.lost, "ka_answered": master.ka_answered, "ka_late": master.ka_late,
                          "ka_max_rtt": master.ka_max_rtt, "guard": guard_stats(), "rss_kib": rss_kib(None)})
            master.ka_max_rtt = 0.0  # the slowest round trip since the last stats
        elif line == "tracemalloc" and trace:
            say("TRACEMALLOC", _allocations(state["snapshot"], max(master.live, 1)))

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    async def register() -> None:
        address = None
        for i in range(workers):
            reg = await listener.updateRegistration(worker_name(i), PASSWORD, port_str)
            assert reg is not None
            address = address or reg.getAddress()
        gc.collect()
        if trace:
            import tracemalloc

            state["snapshot"] = tracemalloc.take_snapshot()
        say("READY", {"address": address, "t": time.monotonic(), "rss_kib": rss_kib(None), "cpu_s": time.process_time()})

    def start() -> None:
        from twisted.internet.defer import ensureDeferred

        def failed(f: Any) -> None:
            sys.stderr.write(f"bench.storm10k_master: {f.getErrorMessage()}\n")
            stop()

        ensureDeferred(register()).addErrback(failed)

    stdio.StandardIO(_Commands(command, stop), reactor=reactor)
    reactor.callWhenRunning(start)
    from .profiling import profiled

    profiled(f"storm10k-master-{backend_name}", reactor.run)
    return 0


def _allocations(before: Any, connections: int, top: int = 25) -> dict[str, Any]:
    """What the master allocated since *before*, by source line, in bytes per connection."""
    import tracemalloc

    gc.collect()
    diff = tracemalloc.take_snapshot().compare_to(before, "lineno")
    total = sum(d.size_diff for d in diff)
    return {"connections": connections, "bytes_per_connection": total / connections,
            "top": [{"where": str(d.traceback), "bytes_per_connection": d.size_diff / connections,
                     "blocks_per_connection": d.count_diff / connections} for d in diff[:top]]}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
