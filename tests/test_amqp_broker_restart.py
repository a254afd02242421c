"""The broker itself crashes and comes back: everyone rejoins.

A private RabbitMQ node of this test's own (not the session's shared one),
two real ``workerwire master`` processes on one pool, 24 workers (real amqp
connectors serving real worker runtimes, in two processes), each running a
long shell command.  The node is killed (SIGKILL: every AMQP connection drops
at once, nothing is cleaned up) and started again on the same ports and data
directory.  Then:

* every command running at the time fails on its master's side with
  ``ConnectionLost`` (nothing silently half-done);
* every worker logs in again to some master of the pool and gets new work
  within :data:`REJOIN_BOUND` seconds of the broker accepting connections again
  (the masters' rejoin backoff is capped at 30 s; the workers' at 1 s);
* no worker is ever attached to two masters at once, and each worker's own
  links alternate connected / lost.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.threads import deferToThread

from test_amqp_failover import FleetOutput, _by_worker, _live_sessions_never_overlap, _master_config, _until
from test_app_support import REACTOR, CliProcess, EventLog, Processes, processes  # noqa: F401

from workerwire.addresses import escape_value
from workerwire_amqp.private_broker import PrivateBroker

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = [f"rw{i:02d}" for i in range(24)]
MASTERS = ("ra", "rb")
INTERVAL, TIMEOUT = 4.0, 8.0
SCALE = float(os.environ.get("WORKERWIRE_CONFORMANCE_TIMEOUT_SCALE", "1"))
#: Seconds for the whole fleet to log in and start its jobs (a machine shared with other test runs).
LOGIN_WAIT = 240.0
#: Seconds from the broker accepting connections again until every worker has new work: a
#: master's next rejoin attempt (backoff capped at 30 s), then 24 logins and job starts.
REJOIN_BOUND = 30.0 + 30.0 * SCALE


@pytest.fixture
def own_broker() -> Iterator[PrivateBroker]:
    broker = PrivateBroker().start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.timeout(900)
@async_test
async def test_everyone_rejoins_after_the_broker_restarts(tmp_path: Path, processes: Processes,
                                                          own_broker: PrivateBroker) -> None:
    url = own_broker.url
    masters: dict[str, CliProcess] = {}
    logs: dict[str, EventLog] = {}
    for name in MASTERS:
        events = tmp_path / f"events-{name}.jsonl"
        masters[name] = processes.start(["master", "-c", str(_master_config(tmp_path, name, url, "restart", WORKERS)),
                                         "--events", str(events)], name=f"master {name}")
        logs[name] = EventLog(events, masters[name])
    for name in MASTERS:
        await logs[name].wait("ready", timeout=LOGIN_WAIT)
    address = f"amqp:url={escape_value(url)}:pool=restart"
    env = dict(os.environ, FLEET_KEEPALIVE=f"{INTERVAL},{TIMEOUT}")
    half = len(WORKERS) // 2
    fleets = [processes.start([os.path.join(HERE, "amqp_fleet.py"), address, str(tmp_path / "workers"), *part],
                              name=f"fleet {i}", env=env, program=[sys.executable])
              for i, part in enumerate((WORKERS[:half], WORKERS[half:]))]
    outputs = [FleetOutput(f) for f in fleets]
    everyone = [*masters.values(), *fleets]

    def job_events(kind: str, after: float = 0.0) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for name in MASTERS:
            for e in logs[name].matching(kind):
                if e["time"] > after:
                    out.setdefault(e["worker"], []).append(dict(e, master=name))
        return out

    def fleet_logs() -> str:
        return "; fleet logs:\n" + "\n".join(f.text_err[-3000:] for f in fleets)

    def unfinished_jobs() -> dict[str, dict[str, Any]]:
        """The jobs started and not finished, by worker (at most one each: one session per worker)."""
        finished = {e["command_id"] for es in job_events("job_finished").values() for e in es}
        return {w: e for w, es in job_events("job_started").items() for e in es if e["command_id"] not in finished}

    await _until(lambda: len(unfinished_jobs()) == len(WORKERS), "every worker logged in and running its job",
                 LOGIN_WAIT, everyone, fleet_logs)
    running = unfinished_jobs()
    assert {e["master"] for e in running.values()} == set(MASTERS), "the logins spread over both masters"

    killed_wall = time.time()
    own_broker.kill()
    await deferToThread(own_broker.start)
    back_wall = time.time()
    back_at = REACTOR.seconds()

    # The commands that ran when the broker died failed on their masters as ConnectionLost.
    def lost_jobs() -> dict[str, dict[str, Any]]:
        return {w: e for w, es in job_events("job_finished").items() for e in es
                if e["command_id"] == running[w]["command_id"]}

    await _until(lambda: len(lost_jobs()) == len(WORKERS), "every running command to fail on its master",
                 LOGIN_WAIT, everyone)
    wrong = {w: e["failure"] for w, e in lost_jobs().items()
             if not (e["started"] and e["failure"] and e["failure"]["type"] == "ConnectionLost")}
    assert not wrong, f"commands that did not fail as ConnectionLost on the master side: {wrong}"

    # Every worker logs in again to some master and gets new work there.
    await _until(lambda: set(job_events("job_started", after=killed_wall)) >= set(WORKERS),
                 "every worker to get new work after the broker restart", REJOIN_BOUND + LOGIN_WAIT, everyone,
                 fleet_logs)
    took = REACTOR.seconds() - back_at
    restarted = {w: min(e["time"] for e in es) - back_wall for w, es in job_events("job_started",
                                                                                  after=killed_wall).items()}
    slow = {w: round(t, 2) for w, t in restarted.items() if t > REJOIN_BOUND}
    assert not slow, f"workers without new work within {REJOIN_BOUND:g} s of the broker's return: {slow}"

    fleet_events = [e for out in outputs for e in out.events()]
    for w in WORKERS:
        kinds = [e["event"] for e in fleet_events if e.get("worker") == w and e["event"] in ("connected", "lost")]
        assert all(a != b for a, b in zip(kinds, kinds[1:])), f"worker {w}: links {kinds}"
        assert kinds.count("connected") >= 2, f"worker {w} never logged in again: {kinds}"
        _live_sessions_never_overlap(w, logs, "", killed_wall)
    lost_on_workers = _by_worker(fleet_events, "lost")
    assert set(lost_on_workers) >= set(WORKERS), "every worker saw its link drop"
    spread = {m: sum(1 for es in job_events("job_started", after=killed_wall).values() if es[0]["master"] == m)
              for m in MASTERS}
    print(f"\nbroker restart: {len(WORKERS)} workers; broker back {back_wall - killed_wall:.2f} s after the kill; "
          f"all with new work {max(restarted.values()):.2f} s after its return (test saw it after {took:.2f} s); "
          f"spread {spread}")
