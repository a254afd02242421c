"""End to end: a ``workerwire master`` process and ``workerwire worker`` processes.

The master enables every installed network backend; workers are spread over
them (at least one per backend).  The tests watch the master through its
``--events`` file, polled through the reactor with deadlines.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from test_app_support import CliProcess, EventLog, Processes, require_network_backend, to_toml

PY = sys.executable

# Waits (in the command) until N commands have started, so it only succeeds if they run at the same time.
TOGETHER = """
import os, sys, time
shared, n = sys.argv[1], int(sys.argv[2])
open(os.path.join(shared, str(os.getpid())), "w").close()
deadline = time.time() + 20
while len(os.listdir(shared)) < n:
    if time.time() > deadline:
        sys.exit("only %d of %d commands ran at the same time" % (len(os.listdir(shared)), n))
    time.sleep(0.02)
print("all %d running together" % n)
"""

# Holds until its parent (the worker) is gone, so a killed worker leaves nothing behind.
HOLD = """
import os, time
parent = os.getppid()
print("holding", flush=True)
while os.getppid() == parent:
    time.sleep(0.05)
"""


class Cluster:
    """One master process and its worker processes."""

    def __init__(self, tmp_path: Path, procs: Processes, backends: list[str], n_workers: int = 3):
        self.tmp = tmp_path
        self.procs = procs
        self.backends = backends
        self.passwords = {f"w{i + 1}": f"secret-{i + 1}" for i in range(max(n_workers, len(backends)))}
        self.worker_backend = {name: backends[i % len(backends)] for i, name in enumerate(self.passwords)}
        self.ports = {b: "tcp:port=0:interface=127.0.0.1" for b in backends}
        self.jobs: list[dict[str, Any]] = []
        self.config = tmp_path / "master.toml"
        self.master: CliProcess | None = None
        self.events: EventLog | None = None
        self.starts = 0
        self.workers: dict[str, CliProcess] = {}
        self.addresses: dict[str, str] = {}
        self.bound: dict[str, int] = {}

    def write_config(self) -> None:
        self.config.write_text(to_toml({
            "master": {"duplicate_ping_timeout": 2},
            "protocols": {b: {"port": port, "keepalive_interval": 5, "keepalive_timeout": 5}
                          for b, port in self.ports.items()},
            "workers": [{"name": n, "password": p, "protocols": [self.worker_backend[n]]}
                        for n, p in self.passwords.items()],
            "jobs": self.jobs,
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
        return events

    def pin_ports(self) -> None:
        """Make the next start listen where this one does (it asked for any free port)."""
        self.ports = {b: f"tcp:port={port}:interface=127.0.0.1" for b, port in self.bound.items()}

    def start_worker(self, name: str) -> CliProcess:
        pwfile = self.tmp / f"{name}.pw"
        pwfile.write_text(self.passwords[name] + "\n")
        backend = self.worker_backend[name]
        proc = self.procs.start(["worker", "--backend", backend, "--master", self.addresses[backend],
                                 "--name", name, "--password-file", str(pwfile),
                                 "--basedir", str(self.tmp / f"basedir-{name}"),
                                 "--keepalive-interval", "5", "--keepalive-timeout", "5"], name=name)
        self.workers[name] = proc
        return proc

    async def start_all(self) -> EventLog:
        events = await self.start_master()
        for name in self.passwords:
            self.start_worker(name)
        for name in self.passwords:
            await events.wait("attached", worker=name)
        return events

    async def stop(self) -> None:
        for proc in [*self.workers.values(), self.master]:
            if proc is not None and proc.status is None:
                proc.signal("TERM")
        for proc in [*self.workers.values(), self.master]:
            if proc is not None:
                assert await proc.wait_exit() == 0, proc.text_err[-3000:]


@pytest.fixture
def cluster(tmp_path: Path, processes: Processes) -> Cluster:
    return Cluster(tmp_path, processes, require_network_backend())


@pytest_twisted.ensureDeferred
async def test_workers_on_every_network_backend_run_commands_concurrently(cluster: Cluster) -> None:
    shared = cluster.tmp / "started"
    shared.mkdir()
    n = len(cluster.passwords)
    cluster.jobs = [{"name": "together", "command": [PY, "-c", TOGETHER, str(shared), str(n)]}]
    events = await cluster.start_all()
    for name in cluster.passwords:
        done = await events.wait("job_finished", worker=name, job="together")
        assert done["rc"] == 0 and done["failure"] is None, done
        assert done["output_tail"] == f"all {n} running together\n"
    used = {e["backend"] for e in events.matching("attached")}
    assert used == set(cluster.backends)
    await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_a_killed_worker_is_seen_disconnected_and_its_command_fails(cluster: Cluster) -> None:
    cluster.jobs = [{"name": "hold", "command": [PY, "-c", HOLD], "workers": ["w1"]}]
    events = await cluster.start_all()
    await events.wait("job_started", worker="w1", job="hold")
    cluster.workers["w1"].signal("KILL")
    assert await cluster.workers["w1"].wait_exit() == -9
    gone = await events.wait("disconnected", worker="w1")
    assert gone["backend"] == cluster.worker_backend["w1"]
    done = await events.wait("job_finished", worker="w1", job="hold")
    assert done["failure"]["type"] == "ConnectionLost" and done["rc"] is None
    # The others were not touched.
    assert not [e for e in events.matching("disconnected") if e["worker"] != "w1"]
    del cluster.workers["w1"]
    await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_workers_rejoin_a_restarted_master(cluster: Cluster) -> None:
    first = await cluster.start_all()
    assert cluster.master is not None
    cluster.pin_ports()
    cluster.master.signal("TERM")
    assert await cluster.master.wait_exit() == 0
    for name in cluster.passwords:
        assert first.matching("disconnected", worker=name)
    second = await cluster.start_master()
    for name in cluster.passwords:
        attached = await second.wait("attached", worker=name)
        assert attached["backend"] == cluster.worker_backend[name]
    assert all(proc.status is None for proc in cluster.workers.values())  # nobody restarted a worker
    await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_sighup_with_a_new_password_reconnects_only_that_worker(cluster: Cluster) -> None:
    events = await cluster.start_all()
    assert cluster.master is not None
    # Rotate w2's password: the worker's password file and the master's config.
    cluster.passwords["w2"] = "rotated-secret"
    (cluster.tmp / "w2.pw").write_text("rotated-secret\n")
    cluster.write_config()
    cluster.master.signal("HUP")
    reloaded = await events.wait("reloaded")
    assert reloaded["changed"] == ["w2"] and sorted(reloaded["unchanged"]) == sorted(set(cluster.passwords) - {"w2"})
    gone = await events.wait("disconnected", worker="w2")
    assert gone["reason"] == "its password changed"
    await events.wait("attached", worker="w2", count=2)
    assert [e["worker"] for e in events.matching("disconnected")] == ["w2"]
    assert cluster.workers["w2"].status is None  # the same worker process, with its new password
    assert "rotated-secret" not in cluster.master.text_err + events.path.read_text()
    await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_a_stock_buildbot_worker_runs_the_same_job(tmp_path: Path, processes: Processes) -> None:
    """The master's job is a Buildbot ``shell`` step: an unmodified buildbot-worker runs it over pb
    in the same directory a workerwire worker would use (basedir/builder/workdir)."""
    if "pb" not in require_network_backend():
        pytest.fail("needs the pb backend")
    bbw = Path(sys.executable).with_name("buildbot-worker")
    if not bbw.exists():
        pytest.fail("buildbot-worker is not installed (pip install buildbot-worker)")
    cluster = Cluster(tmp_path, processes, ["pb"], n_workers=1)
    cluster.jobs = [{"name": "hello", "command": "echo hello from $(pwd); exit 3"}]
    events = await cluster.start_master()
    create = processes.start(["create-worker", str(tmp_path / "bb"), cluster.addresses["pb"].split("host=")[1]
                              .replace(":port=", ":"), "w1", cluster.passwords["w1"]], program=[str(bbw)])
    assert await create.wait_exit() == 0, create.text_err
    worker = processes.start(["start", "--nodaemon", str(tmp_path / "bb")], program=[str(bbw)], name="buildbot-worker")
    done = await events.wait("job_finished", worker="w1", job="hello")
    assert done["rc"] == 3 and done["output_tail"] == f"hello from {tmp_path / 'bb' / 'hello' / 'build'}\n"
    attached = events.matching("attached", worker="w1")[0]
    assert attached["backend"] == "pb" and "shell" in attached["commands"]
    worker.signal("TERM")
    await worker.wait_exit()
    cluster.workers = {}
    await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_a_password_from_the_environment_reaches_neither_commands_nor_the_master(
        tmp_path: Path, processes: Processes) -> None:
    import os

    backend = require_network_backend()[0]
    cluster = Cluster(tmp_path, processes, [backend], n_workers=1)
    cluster.jobs = [{"name": "env", "command": "printenv WW_TEST_SECRET; echo unset=$?"}]
    events = await cluster.start_master()
    worker = processes.start(["worker", "--backend", backend, "--master", cluster.addresses[backend], "--name", "w1",
                              "--password-env", "WW_TEST_SECRET", "--basedir", str(tmp_path / "b")],
                             env=dict(os.environ, WW_TEST_SECRET=cluster.passwords["w1"]), name="w1")
    cluster.workers["w1"] = worker
    done = await events.wait("job_finished", worker="w1", job="env")
    assert done["rc"] == 0 and done["output_tail"] == "unset=1\n"
    await cluster.stop()
    assert cluster.passwords["w1"] not in worker.text_err
