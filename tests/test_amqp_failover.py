"""Two real ``workerwire master`` processes on one amqp pool; one is killed -9.

60 workers (real amqp connectors serving real worker runtimes, in two
processes) log in to whichever master takes their login, run a long shell
command, and when one master dies: every one of its workers notices within
``keepalive_interval + keepalive_timeout``, logs in to the other master and
gets new work there; no worker is ever attached to two masters at once (the
masters' event logs and the workers' own events say so); and each command
that ran on the dead master fails on the worker side with ConnectionLost.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_twisted import ensureDeferred as async_test

from test_app_support import REACTOR, CliProcess, EventLog, Processes, processes, sleep, to_toml  # noqa: F401

from workerwire.addresses import escape_value
from workerwire_app.worker_runtime import DEFAULT_LOST_LINK_GRACE

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = [f"fw{i:02d}" for i in range(60)]
INTERVAL, TIMEOUT = 4.0, 8.0
#: Scheduling slack on a loaded 2-core machine, as the conformance suite allows.
MARGIN = 1.0 * float(os.environ.get("WORKERWIRE_CONFORMANCE_TIMEOUT_SCALE", "1"))
#: A job that runs until the link is lost (or its worker process dies: the fleets are
#: killed at the end, and a plain ``sleep`` would outlive them by an hour).
LONG_JOB = "echo started; while kill -0 $PPID 2>/dev/null; do sleep 2; done"
#: Seconds to wait for a whole fleet to log in and start its jobs (60 logins and 60
#: processes, two masters, on a machine shared with other test runs).
LOGIN_WAIT = 240.0


def _master_config(tmp: Path, name: str, url: str, pool: str = "failover", workers: list[str] = WORKERS) -> Path:
    """Master *name* of *pool*: *workers* on builder b1, each given the LONG_JOB."""
    port = f"amqp:url={escape_value(url)}:pool={pool}:master={name}"
    data = {
        # Each master its own state_dir: its control socket is its own (two masters, one directory).
        "master": {"duplicate_ping_timeout": 1.0, "state_dir": str(tmp / f"state-{name}")},
        "protocols": {"amqp": {"port": port, "keepalive_interval": INTERVAL, "keepalive_timeout": TIMEOUT}},
        "workers": [{"name": w, "password": f"pw-{w}", "builders": ["b1"]} for w in workers],
        # Runs until the link is lost (then interrupted by the worker runtime) or the fleet dies.
        "jobs": [{"name": "long", "builder": "b1", "command": ["sh", "-c", LONG_JOB]}],
    }
    path = tmp / f"master-{name}.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    return path


class FleetOutput:
    """The JSON lines a fleet process prints."""

    def __init__(self, proc: CliProcess):
        self.proc = proc

    def events(self) -> list[dict[str, Any]]:
        text = self.proc.stdout.decode("utf-8", "replace")
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


async def _until(check: Any, what: str, timeout: float, procs: list[CliProcess], detail: Any = None) -> None:
    clock = REACTOR.seconds
    deadline = clock() + timeout
    while not check():
        for p in procs:
            if p.status is not None:
                raise AssertionError(f"{p.name} exited with {p.status} while waiting for {what}:\n{p.text_err[-3000:]}")
        if clock() > deadline:
            more = detail() if detail is not None else ""
            raise AssertionError(f"not within {timeout:g} s: {what}{more}")
        await sleep(0.1)


def _by_worker(events: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["event"] == kind:
            out.setdefault(e["worker"], []).append(e)
    return out


def _live_sessions_never_overlap(worker: str, logs: dict[str, "EventLog"], killed: str, killed_wall: float) -> None:
    """Merge the masters' connected/disconnected events of *worker*: never two live sessions at once."""
    marks: list[tuple[float, int, str]] = []
    for name, log in logs.items():
        live = 0
        for e in log.events():
            if e.get("worker") != worker or e["event"] not in ("connected", "disconnected"):
                continue
            step = 1 if e["event"] == "connected" else -1
            live += step
            marks.append((e["time"], step, name))
        if name == killed and live:
            marks.append((killed_wall, -live, name))  # its sessions died with it
    marks.sort(key=lambda m: (m[0], m[1]))  # at one instant, ends before starts
    live = 0
    for when, step, name in marks:
        live += step
        assert live <= 1, f"worker {worker} attached to two masters at once ({name} at {when}): {marks}"


@pytest.mark.timeout(900)
@async_test
async def test_a_killed_masters_workers_move_to_the_other_master(
        tmp_path: Path, processes: Processes, amqp_broker_url: str) -> None:
    masters: dict[str, CliProcess] = {}
    logs: dict[str, EventLog] = {}
    for name in ("ma", "mb"):
        events = tmp_path / f"events-{name}.jsonl"
        proc = processes.start(["master", "-c", str(_master_config(tmp_path, name, amqp_broker_url)),
                                "--events", str(events)], name=f"master {name}")
        masters[name] = proc
        logs[name] = EventLog(events, proc)
    for name in masters:
        await logs[name].wait("ready", timeout=LOGIN_WAIT)
    address = f"amqp:url={escape_value(amqp_broker_url)}:pool=failover"
    env = dict(os.environ, FLEET_KEEPALIVE=f"{INTERVAL},{TIMEOUT}")
    fleets = [
        processes.start([os.path.join(HERE, "amqp_fleet.py"), address, str(tmp_path / "workers"), *part],
                        name=f"fleet {i}", env=env, program=[sys.executable])
        for i, part in enumerate((WORKERS[:30], WORKERS[30:]))
    ]
    outputs = [FleetOutput(f) for f in fleets]
    everyone = [*masters.values(), *fleets]

    def started_on(name: str) -> set[str]:
        return {e["worker"] for e in logs[name].matching("job_started")}

    await _until(lambda: len(started_on("ma") | started_on("mb")) == len(WORKERS),
                 "every worker logged in and running its job", LOGIN_WAIT, everyone)

    def current_master() -> dict[str, str]:
        where: dict[str, str] = {}
        for e in [e for out in outputs for e in out.events()]:
            if e["event"] == "connected":
                where[e["worker"]] = e["peer"].split()[1]  # "master NAME of pool ..."
            elif e["event"] == "lost":
                where.pop(e["worker"], None)
        return where

    def logs_of_fleets() -> str:
        return (f"; {len(current_master())} of {len(WORKERS)} connected; fleet logs:\n"
                + "\n".join(f.text_err[-3000:] for f in fleets))

    def running_job() -> set[str]:
        """Workers whose current session has its job started (a keepalive may have moved one meanwhile)."""
        out = set()
        for w, m in current_master().items():
            connects = [e["time"] for e in logs[m].matching("connected", worker=w)]
            starts = [e["time"] for e in logs[m].matching("job_started", worker=w)]
            if connects and starts and starts[-1] >= connects[-1]:
                out.add(w)
        return out

    await _until(lambda: len(running_job()) == len(WORKERS), "every worker connected, running its job", LOGIN_WAIT,
                 everyone, logs_of_fleets)
    killed_wall = time.time()
    os.kill(masters["ma"].pid, signal.SIGKILL)
    killed_at = REACTOR.seconds()
    where = current_master()
    running = running_job()
    on_a = {w for w, m in where.items() if m == "ma"}
    on_b = {w for w, m in where.items() if m == "mb"}
    assert on_a and on_b, f"competing consumers spread the logins over both masters (a: {len(on_a)}, b: {len(on_b)})"

    def moved() -> set[str]:
        return {e["worker"] for e in logs["mb"].matching("job_started") if e["time"] > killed_wall}

    await _until(lambda: on_a <= moved(), "every worker of the killed master to get work from the other",
                 LOGIN_WAIT, [masters["mb"], *fleets])
    took = REACTOR.seconds() - killed_at

    fleet_events = [e for out in outputs for e in out.events()]
    lost = {w: [e for e in es if e["time"] >= killed_wall] for w, es in _by_worker(fleet_events, "lost").items()}
    connected = _by_worker(fleet_events, "connected")
    bound = INTERVAL + TIMEOUT + MARGIN
    detect_at = {w: round(lost[w][0]["time"] - killed_wall, 2) for w in on_a if lost.get(w)}
    late = {w: detect_at.get(w) for w in on_a if detect_at.get(w) is None or detect_at[w] > bound}
    assert not late, f"workers that did not notice the dead master within {bound:g} s: {late}"
    rejoined = {w: connected[w][-1]["time"] - killed_wall for w in on_a}
    slow = {w: round(t, 2) for w, t in rejoined.items() if t > bound}
    assert not slow, (f"workers not serving from the other master within {bound:g} s: {slow} "
                      f"(they noticed the loss after {detect_at}); fleet logs:\n"
                      + "\n".join(f.text_err[-4000:] for f in fleets))
    for w in WORKERS:
        # The worker's own view: links alternate connected/lost, one at a time.
        kinds = [e["event"] for e in fleet_events if e.get("worker") == w and e["event"] in ("connected", "lost")]
        assert all(a != b for a, b in zip(kinds, kinds[1:])), f"worker {w}: links {kinds}"
        # The masters' view: never two live sessions of one worker at once.
        _live_sessions_never_overlap(w, logs, "ma", killed_wall)
    for w in on_b:
        assert not [e for e in fleet_events if e.get("worker") == w and e["event"] == "lost"
                    and e["time"] >= killed_wall], f"{w} on the surviving master lost its link"
    # The commands that ran on the dead master were interrupted when their worker logged in to
    # the other master (not after the runtime's lost-link grace: that master knows nothing of
    # them), and their ends failed on the worker side with ConnectionLost.
    ran_on_a = on_a & running
    assert ran_on_a, "no command was running on the killed master"

    def command_lost() -> dict[str, float]:
        return {w: min(e["time"] for e in es if e["time"] >= killed_wall)
                for w, es in _by_worker([e for out in outputs for e in out.events()], "command_lost").items()
                if any(e["time"] >= killed_wall and e["error"] == "ConnectionLost" for e in es)}

    await _until(lambda: set(command_lost()) >= ran_on_a, "every orphan of the killed master to end",
                 DEFAULT_LOST_LINK_GRACE + LOGIN_WAIT, [masters["mb"], *fleets],
                 lambda: f"; missing: {sorted(ran_on_a - set(command_lost()))}")
    kept = {w: round(command_lost()[w] - lost[w][0]["time"], 2) for w in ran_on_a
            if command_lost()[w] - lost[w][0]["time"] >= DEFAULT_LOST_LINK_GRACE}
    assert not kept, (f"orphans of the killed master ran on past the login to another master, until the "
                      f"{DEFAULT_LOST_LINK_GRACE:g} s grace (seconds after the loss): {kept}")
    detect = sorted(detect_at.values())
    print(f"\nfailover: {len(on_a)} of {len(WORKERS)} workers on the killed master; noticed after "
          f"{detect[0]:.2f}-{detect[-1]:.2f} s, all serving from the other after {max(rejoined.values()):.2f} s "
          f"(test saw it after {took:.2f} s); bound {INTERVAL:g}+{TIMEOUT:g} s")
