"""Reliability with real processes and real faults, on every network backend.

A ``workerwire master`` process and ``workerwire worker`` processes (one per
network backend, all on one master), optionally with a TCP relay of this test
process between each worker and the master that can silently blackhole the
path (no FIN, no RST: :class:`workerwire.conformance.TCPRelay`) and heal it.
The master is watched through its ``--events`` file, the workers through
their log; waits are bounded, nothing sleeps.

See docs/reliability.md for the guarantees these tests stand behind.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred

from test_app_support import REACTOR, CliProcess, EventLog, Processes, require_network_backend, to_toml, until
from workerwire.conformance import TCPRelay

PY = sys.executable

#: Seconds a dead-peer finding may come after interval + timeout (process
#: scheduling, the events file being polled every 0.05 s).
MARGIN = 1.5

# A job that holds the first time it runs on a worker and succeeds the next
# time.  It writes its pid for the test, and never outlives its worker (or 60 s).
JOB = """
import os, sys, time
flag, pidfile = sys.argv[1], sys.argv[2]
if os.path.exists(flag):
    print("second run", flush=True)
    sys.exit(0)
open(flag, "w").close()
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
print("holding", flush=True)
parent, deadline = os.getppid(), time.time() + 60
while os.getppid() == parent and time.time() < deadline:
    time.sleep(0.05)
sys.exit(1)
"""


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (from /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Cluster:
    """A master process, worker processes spread over the network backends,
    and (if *relayed*) a relay per backend between the workers and the master."""

    def __init__(self, tmp: Path, procs: Processes, backends: list[str], per_backend: int = 1,
                 relayed: bool = True, interval: float | bool = 1, timeout: float = 1,
                 worker_args: tuple[str, ...] = ("--keepalive-interval", "1", "--keepalive-timeout", "1"),
                 hold_job: bool = True):
        self.tmp = tmp
        self.procs = procs
        self.backends = backends
        self.worker_backend = {f"w{i}-{b}": b for b in backends for i in range(1, per_backend + 1)}
        self.relayed = relayed
        self.interval = interval
        self.timeout = timeout
        self.worker_args = list(worker_args)
        self.hold_job = hold_job
        self.ports = {b: "tcp:port=0:interface=127.0.0.1" for b in backends}
        self.config = tmp / "master.toml"
        self.master: CliProcess | None = None
        self.events: EventLog | None = None
        self.starts = 0
        self.addresses: dict[str, str] = {}
        self.bound: dict[str, int] = {}
        self.relays: dict[str, TCPRelay] = {}
        self.workers: dict[str, CliProcess] = {}

    def password(self, name: str) -> str:
        return f"secret-of-{name}"

    def pidfile(self, name: str) -> Path:
        return self.tmp / f"{name}.pid"

    def write_config(self) -> None:
        jobs = []
        if self.hold_job:
            jobs = [{"name": f"hold-{n}", "builder": "hold", "workers": [n],
                     "command": [PY, "-c", JOB, str(self.tmp / f"{n}.flag"), str(self.pidfile(n))]}
                    for n in self.worker_backend]
        self.config.write_text(to_toml({
            "master": {"duplicate_ping_timeout": 1},
            "protocols": {b: {"port": port, "keepalive_interval": self.interval, "keepalive_timeout": self.timeout}
                          for b, port in self.ports.items()},
            "workers": [{"name": n, "password": self.password(n), "protocols": [b]}
                        for n, b in self.worker_backend.items()],
            "jobs": jobs,
        }))

    async def start_master(self) -> EventLog:
        self.write_config()
        self.starts += 1
        path = self.tmp / f"events-{self.starts}.jsonl"
        self.master = self.procs.start(["master", "-c", str(self.config), "--events", str(path)],
                                       name=f"master#{self.starts}")
        events = EventLog(path, self.master)
        ready = await events.wait("ready")
        self.addresses = {b: where["address"] for b, where in ready["protocols"].items()}
        self.bound = {b: where["port"] for b, where in ready["protocols"].items()}
        self.events = events
        if self.relayed and not self.relays:
            for b, address in self.addresses.items():
                m = re.fullmatch(r"tcp:host=([^:]+):port=(\d+)", address)
                assert m, address
                relay = TCPRelay(REACTOR, m[1], int(m[2]))
                await relay.start()
                self.relays[b] = relay
        return events

    def pin_ports(self) -> None:
        """The next master listens where this one does."""
        self.ports = {b: f"tcp:port={port}:interface=127.0.0.1" for b, port in self.bound.items()}

    def start_worker(self, name: str, *extra: str) -> CliProcess:
        pwfile = self.tmp / f"{name}.pw"
        pwfile.write_text(self.password(name) + "\n")
        backend = self.worker_backend[name]
        address = self.relays[backend].address if self.relayed else self.addresses[backend]
        proc = self.procs.start(["worker", "--backend", backend, "--master", address, "--name", name,
                                 "--password-file", str(pwfile), "--basedir", str(self.tmp / f"basedir-{name}"),
                                 *self.worker_args, *extra], name=name)
        self.workers[name] = proc
        return proc

    async def start_all(self, *worker_extra: str) -> EventLog:
        events = await self.start_master()
        for name in self.worker_backend:
            self.start_worker(name, *worker_extra)
        for name in self.worker_backend:
            await events.wait("attached", worker=name)
        return events

    def blackhole(self) -> None:
        for relay in self.relays.values():
            relay.blackhole()

    def heal(self, existing: bool = True) -> None:
        for relay in self.relays.values():
            relay.heal(existing)

    async def stop(self) -> None:
        procs = [p for p in [*self.workers.values(), self.master] if p is not None]
        for proc in procs:
            proc.signal("TERM")
        for proc in procs:
            assert await proc.wait_exit() == 0, f"{proc.name}: {proc.text_err[-3000:]}"

    async def close_relays(self) -> None:
        relays, self.relays = self.relays, {}
        for relay in relays.values():
            await relay.close()


@pytest.fixture
def cluster_factory(tmp_path: Path, processes: Processes) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(**kw: Any) -> Cluster:
        c = Cluster(tmp_path, processes, require_network_backend(), **kw)
        made.append(c)
        return c

    yield make
    processes.cleanup()
    for c in made:
        pytest_twisted.blockon(ensureDeferred(c.close_relays()))


async def _stamp(d_coro: Any) -> float:
    await d_coro
    return time.time()


@pytest_twisted.ensureDeferred
async def test_a_blackholed_link_is_found_dead_by_both_ends_and_the_worker_rejoins_when_it_heals(
        cluster_factory: Any) -> None:
    """Master (keepalive in its config) and worker (keepalive on its command
    line) each declare the other dead within interval + timeout; the master's
    disconnect shows once, the command in flight fails with ConnectionLost, and
    the worker logs in again by itself once the path heals."""
    cluster: Cluster = cluster_factory(interval=1, timeout=1)
    events = await cluster.start_all()
    for name in cluster.worker_backend:
        await events.wait("job_started", worker=name)
    worker_saw = {name: ensureDeferred(_stamp(proc.wait_output("declared dead", "stderr", timeout=15)))
                  for name, proc in cluster.workers.items()}
    start = time.time()
    cluster.blackhole()
    bound = 1 + 1 + MARGIN
    for name, backend in cluster.worker_backend.items():
        gone = await events.wait("disconnected", worker=name, timeout=15)
        took = gone["time"] - start
        print(f"{backend}: master declared {name} dead after {took:.2f} s (interval 1 + timeout 1)")
        assert took <= bound, f"{backend}: the master took {took:.2f} s to find {name} dead (bound {bound} s)"
        failed = await events.wait("job_finished", worker=name)
        assert failed["started"] and failed["failure"]["type"] == "ConnectionLost", failed
    for name, d in worker_saw.items():
        took = await d - start
        print(f"{cluster.worker_backend[name]}: worker {name} declared the master dead after {took:.2f} s")
        assert took <= bound, f"worker {name} took {took:.2f} s to find the master dead (bound {bound} s)"
    assert cluster.master is not None
    for name in cluster.worker_backend:
        assert len(events.matching("disconnected", worker=name)) == 1
        assert cluster.workers[name].status is None
        await cluster.master.wait_output(f"worker {name} at", "stderr")
        assert re.search(rf"worker {name} at \S+ over \w+ declared dead: no traffic", cluster.master.text_err)
    healed = time.time()
    cluster.heal()
    for name, backend in cluster.worker_backend.items():
        back = await events.wait("attached", worker=name, count=2, timeout=20)
        print(f"{backend}: {name} attached again {back['time'] - healed:.2f} s after the path healed")
        again = await events.wait("job_finished", worker=name, count=2)
        assert again["rc"] == 0 and again["failure"] is None and again["output_tail"] == "second run\n", again
        assert len(events.matching("disconnected", worker=name)) == 1, "the loss is reported exactly once"
    assert not events.matching("refused")
    await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_a_login_after_a_half_open_outage_replaces_the_dead_connection(cluster_factory: Any) -> None:
    """The master has keepalive off and still holds the old, half-open
    connection when the worker (which found the master dead) logs in again:
    the duplicate-login check pings the old one, drops it when it does not
    answer, and accepts the new login -- it never refuses a worker because of
    a dead connection."""
    cluster: Cluster = cluster_factory(interval=False)
    events = await cluster.start_all()
    for name in cluster.worker_backend:
        await events.wait("job_started", worker=name)
    cluster.blackhole()
    for proc in cluster.workers.values():
        await proc.wait_output("declared dead", "stderr", timeout=15)
    assert not events.matching("disconnected"), "the master has no keepalive: it cannot know yet"
    healed = time.time()
    cluster.heal(existing=False)  # new connections pass; the old ones stay silent for good
    for name, backend in cluster.worker_backend.items():
        back = await events.wait("attached", worker=name, count=2, timeout=20)
        print(f"{backend}: {name}'s new login accepted {back['time'] - healed:.2f} s after the path healed")
        assert back["time"] - healed < 10
        sequence = [e["event"] for e in events.events()
                    if e.get("worker") == name and e["event"] in ("connected", "attached", "disconnected")]
        assert sequence == ["connected", "attached", "disconnected", "connected", "attached"], sequence
        gone = events.matching("disconnected", worker=name)[0]
        assert "stopped answering" in gone["reason"], gone
        failed = events.matching("job_finished", worker=name)[0]
        assert failed["failure"]["type"] == "ConnectionLost", failed
        again = await events.wait("job_finished", worker=name, count=2)
        assert again["rc"] == 0 and again["output_tail"] == "second run\n", again
    assert not events.matching("refused")
    await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_workers_rejoin_a_master_killed_and_restarted_on_the_same_port_fast(cluster_factory: Any) -> None:
    """SIGKILL (no goodbye to anyone), then a new master on the same ports:
    every worker logs in again by itself, within seconds -- far below the
    backoff cap of 30 s."""
    cluster: Cluster = cluster_factory(per_backend=2, relayed=False, hold_job=False)
    await cluster.start_all()
    assert cluster.master is not None
    cluster.pin_ports()
    killed = time.time()
    cluster.master.signal("KILL")
    assert await cluster.master.wait_exit() == -9
    second = await cluster.start_master()
    ready = second.matching("ready")[0]
    for name, backend in cluster.worker_backend.items():
        conn = await second.wait("connected", worker=name, timeout=20)
        await second.wait("attached", worker=name)
        print(f"{backend}: {name} back {conn['time'] - killed:.2f} s after the kill, "
              f"{conn['time'] - ready['time']:.2f} s after the new master was ready")
        assert conn["time"] - ready["time"] < 10, "the first retries come fast"
        assert conn["backend"] == backend
    assert all(proc.status is None for proc in cluster.workers.values()), "no worker was restarted"
    await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_a_worker_killed_mid_command_fails_it_promptly_and_its_builder_works_when_it_is_back(
        cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(relayed=False)
    events = await cluster.start_all()
    pids = {}
    for name in cluster.worker_backend:
        await events.wait("job_started", worker=name)
        await until(lambda: cluster.pidfile(name).exists(), f"{name}'s job to write its pid")
        pids[name] = int(cluster.pidfile(name).read_text())
    killed = time.time()
    for name in cluster.worker_backend:
        cluster.workers[name].signal("KILL")
    for name, backend in cluster.worker_backend.items():
        assert await cluster.workers[name].wait_exit() == -9
        done = await events.wait("job_finished", worker=name)
        print(f"{backend}: {name}'s command failed {done['time'] - killed:.2f} s after the worker was killed")
        assert done["failure"]["type"] == "ConnectionLost" and done["rc"] is None, done
        assert done["time"] - killed < 5, "promptly"
        await events.wait("disconnected", worker=name)
    for name in cluster.worker_backend:
        await until(lambda: not alive(pids[name]), f"{name}'s command process to end with its worker")
        cluster.start_worker(name)  # the same worker, back
    for name in cluster.worker_backend:
        again = await events.wait("job_finished", worker=name, count=2)
        assert again["rc"] == 0 and again["failure"] is None and again["output_tail"] == "second run\n", again
        assert len(events.matching("disconnected", worker=name)) == 1
    await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_a_command_orphaned_by_a_lost_link_is_killed_after_the_grace_period(cluster_factory: Any) -> None:
    """The master dies mid-command and does not come back in time: after
    ``--lost-link-grace`` the worker kills the command's process (checked in
    /proc); the worker itself keeps running and rejoins the next master, on
    whose builder a command succeeds."""
    grace = 2.0
    cluster: Cluster = cluster_factory(relayed=False)
    events = await cluster.start_all("--lost-link-grace", str(grace))
    assert cluster.master is not None
    pids = {}
    for name in cluster.worker_backend:
        await events.wait("job_started", worker=name)
        await until(lambda: cluster.pidfile(name).exists(), f"{name}'s job to write its pid")
        pids[name] = int(cluster.pidfile(name).read_text())
        assert alive(pids[name])
    cluster.pin_ports()
    lost = time.time()
    cluster.master.signal("KILL")
    assert await cluster.master.wait_exit() == -9
    for name in cluster.worker_backend:
        await cluster.workers[name].wait_output("unless it comes back", "stderr")
    assert all(alive(pid) for pid in pids.values()), "commands run on through the grace period"
    for name, backend in cluster.worker_backend.items():
        await until(lambda: not alive(pids[name]), f"{name}'s orphaned command to be killed", timeout=15)
        print(f"{backend}: {name}'s orphaned command gone {time.time() - lost:.2f} s after the link was lost "
              f"(grace {grace:g} s)")
        assert cluster.workers[name].status is None
    second = await cluster.start_master()
    for name in cluster.worker_backend:
        again = await second.wait("job_finished", worker=name)
        assert again["rc"] == 0 and again["output_tail"] == "second run\n", again
    await cluster.stop()
