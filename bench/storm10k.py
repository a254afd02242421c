"""The 10,000-worker storm (issue 18): many workers from a few client
processes against ONE master process, per network backend.

``python -m bench.storm10k [--workers 10000] [--clients 4] [--backends pb,amp,msgpack] [--json FILE]``
(``python -m bench --scenarios storm10k`` runs it and puts the figures into
bench/results.json and docs/benchmarks.md).

Per backend, two rounds, each with a fresh master (:mod:`bench.storm10k_master`)
and fresh clients (:mod:`bench.storm10k_client`), all on 127.0.0.1:

1. keepalive every ``--interval`` (60 s, timeout 30 s): every worker logs in at
   once; figures: logged in, seconds until all attached (the first client's
   start to the master's last attach, ``time.monotonic()`` across processes),
   master RSS per connection (VmRSS after all attached minus after the
   registrations, over the workers), master CPU while idle (over
   ``--idle-window``, by default one whole interval, so every connection
   pings and is pinged once in it), keepalive misses; then the master is
   killed (SIGKILL) and started again on the same port: seconds until all
   attached again, from the kill and from the new master's READY, and that
   master's login-guard counters;
2. keepalive every ``--stress-interval`` (5 s, timeout 5 s): every worker logs
   in, then master CPU and keepalive misses over ``--stress-window``.

A keepalive miss is a round trip answered later than the timeout, or a link
lost during the window (declared dead or otherwise), counted on the master
(:mod:`workerwire.observe` hook, disconnects) and on every client.

amqp is not measured: its workers talk to a broker, and the master holds no
socket per worker (its per-worker cost is a queue on the broker).

Bounded: every wait has a limit, the whole run ``--max-seconds``; every
process it starts is in a process group of its own and is killed on any exit.
A client or master whose open-files limit is too low exits with a message
(exit status 3), which ends the run with that message.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from .procfs import cpu_seconds, machine_info
from .sides.base import child_env

__all__ = ["run", "main", "BACKENDS", "StormError"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Backends with a socket per worker on the master (amqp has none: see above).
BACKENDS = ("pb", "amp", "msgpack")
NOT_MEASURED = {"amqp": "workers connect to the broker; the master holds no socket per worker",
                "null": "in-process: no sockets"}


#: Seconds past the clients' deadline the master may still take to attach every worker.
ATTACH_GRACE = 30.0


class StormError(RuntimeError):
    """The storm could not be run or measured (a limit, a process that died, a wait that ran out)."""


class _Proc:
    """A child process in its own process group; its stdout as lines."""

    _all: "list[_Proc]" = []

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
                                      cwd=REPO, env=child_env(), start_new_session=True, text=True, bufsize=1)
        _Proc._all.append(self)
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write(line + "\n")
            self.popen.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def wait_for(self, kind: str, until: float) -> dict[str, Any]:
        """The payload of this process's next ``KIND {json}`` line, waiting until monotonic *until*."""
        while True:
            left = until - time.monotonic()
            if left <= 0:
                raise StormError(f"{self.name} did not say {kind} in time")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                code = self.popen.wait()
                raise StormError(f"{self.name} exited with status {code} before saying {kind}"
                                 + (" (its open-files limit is too low: see its message above)" if code == 3 else ""))
            if line.startswith(kind + " "):
                payload: dict[str, Any] = json.loads(line[len(kind) + 1:])
                return payload

    def ask(self, kind: str, until: float) -> dict[str, Any]:
        self.send(kind.lower())
        return self.wait_for(kind, until)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def end(self) -> None:
        """Close stdin (the child exits), then kill its group whatever it did."""
        if self.popen.stdin is not None:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        try:
            self.popen.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self in _Proc._all:
            _Proc._all.remove(self)

    @classmethod
    def kill_all(cls) -> None:
        for p in list(cls._all):
            p.kill()
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        cls._all.clear()


def _split(workers: int, clients: int) -> list[tuple[int, int]]:
    """(first, count) of each client process."""
    per, extra = divmod(workers, clients)
    out, first = [], 0
    for k in range(clients):
        n = per + (1 if k < extra else 0)
        if n:
            out.append((first, n))
        first += n
    return out


def _sum_clients(stats: list[dict[str, Any]], key: str) -> float:
    return sum(s[key] for s in stats)


class _Round:
    """One master and its clients with one keepalive setting."""

    def __init__(self, backend: str, workers: int, clients: int, interval: float, timeout: float,
                 until: float, log: Any, tracemalloc: bool = False) -> None:
        self.backend, self.workers, self.clients_n = backend, workers, clients
        self.interval, self.timeout, self.until, self.log = interval, timeout, until, log
        self.tracemalloc = tracemalloc
        self.master_options: list[str] = []
        self.master: _Proc | None = None
        self.clients: list[_Proc] = []
        self.generation = 0

    def start_master(self, port_str: str) -> dict[str, Any]:
        self.generation += 1
        argv = [sys.executable, "-m", "bench.storm10k_master", self.backend, port_str, str(self.workers),
                f"{self.interval:g}", f"{self.timeout:g}"] + (["--tracemalloc"] if self.tracemalloc else []) + \
            [f"--option={o}" for o in self.master_options]
        self.master = _Proc(f"{self.backend} master #{self.generation}", argv)
        return self.master.wait_for("READY", self.until)

    def start_clients(self, address: str, deadline: float) -> None:
        for first, count in _split(self.workers, self.clients_n):
            argv = [sys.executable, "-m", "bench.storm10k_client", self.backend, address, str(first), str(count),
                    f"{self.interval:g}", f"{self.timeout:g}", f"{deadline:g}"]
            self.clients.append(_Proc(f"{self.backend} client {first}+{count}", argv))

    def stats(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        assert self.master is not None
        return self.master.ask("STATS", self.until), [c.ask("STATS", self.until) for c in self.clients]

    def window(self, seconds: float) -> dict[str, Any]:
        """Master CPU and keepalive misses over *seconds* of idling."""
        assert self.master is not None
        m0, c0 = self.stats()
        cpu0, t0 = cpu_seconds(self.master.pid), time.monotonic()
        if t0 + seconds > self.until:
            raise StormError(f"no time left for a {seconds:g} s window (--max-seconds)")
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(self.master.pid), time.monotonic()
        m1, c1 = self.stats()
        worker_late = _sum_clients(c1, "ka_late") - _sum_clients(c0, "ka_late")
        worker_lost = _sum_clients(c1, "lost") - _sum_clients(c0, "lost")
        out = {
            "window_s": t1 - t0, "interval_s": self.interval, "timeout_s": self.timeout,
            "master_cpu_pct": None if cpu0 is None or cpu1 is None else 100 * (cpu1 - cpu0) / (t1 - t0),
            "master_pings_answered": m1["ka_answered"] - m0["ka_answered"],
            "master_late": m1["ka_late"] - m0["ka_late"], "master_lost": m1["lost"] - m0["lost"],
            "master_max_rtt_s": m1["ka_max_rtt"],
            "worker_pings_answered": _sum_clients(c1, "ka_answered") - _sum_clients(c0, "ka_answered"),
            "worker_late": worker_late, "worker_lost": worker_lost,
            "worker_max_rtt_s": max(c["ka_max_rtt"] for c in c1),
            "live_at_end": m1["live"],
        }
        out["misses"] = out["master_late"] + out["master_lost"] + worker_late + worker_lost
        return out

    def close(self) -> None:
        for p in [*self.clients, *([self.master] if self.master else [])]:
            p.end()
        self.clients = []
        self.master = None


def _port_of(address: str) -> int:
    m = re.search(r"port=(\d+)", address)
    if not m:
        raise StormError(f"cannot find the port in the master's address {address!r}")
    return int(m.group(1))


def _attach(rnd: _Round, attach_deadline: float) -> dict[str, Any]:
    """Start the first master and the clients; what the storm of logins gave."""
    ready = rnd.start_master("tcp:port=0:interface=127.0.0.1")
    rnd.start_clients(ready["address"], attach_deadline)
    assert rnd.master is not None
    limit = min(rnd.until, time.monotonic() + attach_deadline + 30)
    done = [c.wait_for("DONE", limit) for c in rnd.clients]
    t_start = min(d["t_start"] for d in done)
    try:  # the clients gave up waiting at their deadline; their connectors go on trying a while longer
        attached: dict[str, Any] | None = rnd.master.wait_for(
            "ATTACHED", min(rnd.until, t_start + attach_deadline + ATTACH_GRACE))
    except StormError:
        attached = None
    m, _ = rnd.stats()
    connected = sum(d["connected"] for d in done)
    out: dict[str, Any] = {
        "workers": rnd.workers, "clients": len(rnd.clients), "client_connected": connected,
        # The master's count: a client's DONE may come at its deadline, just before its last logins.
        "connected": m["live"], "master_live": m["live"],
        "seconds": None if attached is None else attached["t_all"] - t_start,
        "master_rss_registered_kib": ready["rss_kib"],
        "master_rss_attached_kib": None if attached is None else attached["rss_kib"],
        "master_rss_per_conn_kib": None if attached is None else
        (attached["rss_kib"] - ready["rss_kib"]) / rnd.workers,
        # Master CPU from the first attach to the last, as a share of that time: near 100 % means the master
        # was the limit; far below, the workers were waiting (backoff after being closed at a login cap).
        "master_cpu_busy_pct": _busy(attached),
        "guard": m["guard"], "attempt_errors": _merge_errors(done),
        "address": ready["address"],
    }
    return out


def _busy(attached: dict[str, Any] | None) -> float | None:
    """The master's CPU time from its first attach to its last, as a % of that time."""
    if attached is None or not attached.get("first"):
        return None
    t_first, cpu_first = attached["first"]
    return 100 * (attached["cpu_s"] - cpu_first) / max(attached["t_all"] - t_first, 1e-9)


def _merge_errors(done: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in done:
        for k, v in d.get("errors", {}).items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items(), key=lambda kv: -kv[1])[:3])


def _restart(rnd: _Round, address: str, rejoin_limit: float) -> dict[str, Any]:
    """SIGKILL the master, start it again on the same port; how long until all are back."""
    assert rnd.master is not None
    port = _port_of(address)
    old = rnd.master
    t_kill = time.monotonic()
    old.kill()
    old.popen.wait(timeout=10)
    old.end()
    ready = rnd.start_master(f"tcp:port={port}:interface=127.0.0.1")
    assert rnd.master is not None
    try:
        attached: dict[str, Any] | None = rnd.master.wait_for("ATTACHED", min(rnd.until, t_kill + rejoin_limit))
    except StormError:
        attached = None
    m, clients = rnd.stats()
    return {
        "seconds_from_kill": None if attached is None else attached["t_all"] - t_kill,
        "seconds_from_ready": None if attached is None else attached["t_all"] - ready["t"],
        "restart_s": ready["t"] - t_kill,  # until the new master listened with every worker registered
        "master_cpu_busy_pct": _busy(attached),
        "back": m["live"], "workers": rnd.workers, "limit_s": rejoin_limit,
        "guard": m["guard"],
        "worker_links_lost": _sum_clients(clients, "lost"),
    }


def _incomplete(attach: dict[str, Any], opts: argparse.Namespace) -> str:
    return (f"not measured: only {attach['connected']:,} of {opts.workers:,} workers attached within "
            f"{opts.attach_deadline + ATTACH_GRACE:g} s (the window would have measured the storm)")


def measure_backend(backend: str, opts: argparse.Namespace, until: float, log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend, "settings_interval": opts.interval}
    say = lambda msg: log.write(f"storm10k {backend}: {msg}\n") or log.flush()  # noqa: E731
    rnd = _Round(backend, opts.workers, opts.clients, opts.interval, opts.timeout, until, log, opts.tracemalloc)
    rnd.master_options = opts.master_option
    try:
        say(f"{opts.workers} workers from {opts.clients} clients, keepalive {opts.interval:g} s")
        out["attach"] = attach = _attach(rnd, opts.attach_deadline)
        if opts.tracemalloc:  # a diagnosis, not figures: tracemalloc slows and grows the master
            assert rnd.master is not None
            out["tracemalloc"] = rnd.master.ask("TRACEMALLOC", until)
            return out
        if opts.only_attach:
            return out
        say(f"attached {attach['connected']}/{opts.workers} in {attach['seconds']} s, "
            f"{attach['master_rss_per_conn_kib']} KiB/conn")
        window = opts.idle_window if opts.idle_window is not None else opts.interval
        if attach["seconds"] is None:  # a window during the storm would measure the storm, not idling
            out["idle"] = {"error": _incomplete(attach, opts)}
        else:
            out["idle"] = rnd.window(window)
            say(f"idle {window:g} s: master CPU {out['idle']['master_cpu_pct']:.2f} %, "
                f"misses {out['idle']['misses']}")
        out["restart"] = _restart(rnd, attach["address"], opts.rejoin_limit)
        say(f"rejoined {out['restart']['back']}/{opts.workers} {out['restart']['seconds_from_kill']} s after the kill")
    finally:
        rnd.close()
    rnd = _Round(backend, opts.workers, opts.clients, opts.stress_interval, opts.stress_timeout, until, log)
    rnd.master_options = opts.master_option
    try:
        say(f"stress: keepalive {opts.stress_interval:g} s, timeout {opts.stress_timeout:g} s")
        stress_attach = _attach(rnd, opts.attach_deadline)
        if stress_attach["seconds"] is None:  # a window during the storm would measure the storm
            out["stress"] = {"error": _incomplete(stress_attach, opts), "interval_s": opts.stress_interval}
        else:
            out["stress"] = rnd.window(opts.stress_window)
            out["stress"]["connected"] = stress_attach["connected"]
            out["stress"]["attach_seconds"] = stress_attach["seconds"]
            say(f"stress {opts.stress_window:g} s: master CPU {out['stress']['master_cpu_pct']:.2f} %, "
                f"misses {out['stress']['misses']}")
    finally:
        rnd.close()
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.storm10k", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=10000)
    p.add_argument("--clients", type=int, default=4, help="client processes the workers are spread over")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--interval", type=float, default=60.0, help="keepalive interval of the first round")
    p.add_argument("--timeout", type=float, default=30.0, help="keepalive timeout of the first round")
    p.add_argument("--idle-window", type=float, help="seconds of idle CPU measurement (default: one interval)")
    p.add_argument("--stress-interval", type=float, default=5.0)
    p.add_argument("--stress-timeout", type=float, default=5.0)
    p.add_argument("--stress-window", type=float, default=25.0)
    p.add_argument("--attach-deadline", type=float, default=60.0, help="seconds the clients wait for all logins")
    p.add_argument("--rejoin-limit", type=float, default=120.0, help="seconds to wait for all to rejoin")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="hard limit for the whole run")
    p.add_argument("--master-option", action="append", default=[], metavar="NAME=VALUE",
                   help="a LinkOptions field of the master other than its default (e.g. max_waiting_logins=10000)")
    p.add_argument("--only-attach", action="store_true", help="round 1's storm only (a diagnosis)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="only log in, then show what the master allocated per connection, by source line "
                   "(a diagnosis: the master runs under tracemalloc)")
    p.add_argument("--json", help="write the figures here (default: print them)")
    return p


def command_line(opts: argparse.Namespace) -> str:
    """The command that reproduces *opts* (for the page)."""
    defaults = parser().parse_args([])
    parts = ["python -m bench.storm10k"]
    for key, value in vars(opts).items():
        if key == "master_option":
            parts += [f"--master-option {o}" for o in value]
        elif key != "json" and value != getattr(defaults, key):
            parts.append(f"--{key.replace('_', '-')} {value:g}" if isinstance(value, float) else
                         f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)


def run(opts: argparse.Namespace, log: Any = sys.stderr) -> dict[str, Any]:
    """Every backend's figures (``{"error": ...}`` for one that could not be measured)."""
    from workerwire.registry import backend_names

    until = time.monotonic() + opts.max_seconds
    installed = set(backend_names())
    wanted = [b for b in opts.backends.split(",") if b]
    results: dict[str, Any] = {
        "command": command_line(opts), "machine": machine_info(),
        "settings": {k: v for k, v in vars(opts).items() if k != "json"},
        "not_measured": {b: why for b, why in NOT_MEASURED.items() if b in installed},
        "backends": {},
    }
    t0 = time.monotonic()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def on_signal(signum: int, frame: Any) -> None:
        _Proc.kill_all()
        raise SystemExit(128 + signum)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        for backend in wanted:
            if backend in NOT_MEASURED:
                continue
            if backend not in installed:
                results["backends"][backend] = {"error": f"backend {backend!r} is not installed"}
                continue
            try:
                results["backends"][backend] = measure_backend(backend, opts, until, log)
            except StormError as e:
                results["backends"][backend] = {"error": str(e)}
                log.write(f"storm10k {backend}: {e}\n")
                if "open-files limit" in str(e):
                    break
    finally:
        _Proc.kill_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    results["elapsed_s"] = time.monotonic() - t0
    from .targets import judge_storm10k

    results["targets"] = [v.as_dict() for v in judge_storm10k(results)]
    return results


def main(argv: list[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    results = run(opts)
    text = json.dumps(results, indent=1) + "\n"
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    errors = [f"{b}: {r['error']}" for b, r in results["backends"].items() if "error" in r]
    for e in errors:
        sys.stderr.write(f"storm10k: {e}\n")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
