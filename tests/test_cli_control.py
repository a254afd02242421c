"""Operating a running master: ``workerwire status|run|disconnect|shutdown`` and ``/metrics``.

Real processes: a ``workerwire master`` with every installed network backend
on loopback, ``workerwire worker`` processes (w1 on the first backend, w2 on
the last), and the commands under test run as the operator would run them.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.web.client import Agent, readBody

from workerwire_app.config import load_config
from workerwire_app.control_client import request as control_request

from test_app_support import REACTOR, CliProcess, EventLog, Processes, processes, require_network_backend, to_toml  # noqa: F401


class Operated:
    """A master process and two workers; runs operator commands against it."""

    def __init__(self, tmp: Path, procs: Processes, backends: list[str]):
        self.tmp = tmp
        self.procs = procs
        self.backends = backends
        self.worker_backend = {"w1": backends[0], "w2": backends[-1]}
        self.config = tmp / "master.toml"
        self.config.write_text(to_toml({
            "master": {"metrics": "tcp:0:interface=127.0.0.1", "job_logs_kept": 2},
            "protocols": {b: {"port": "tcp:port=0:interface=127.0.0.1"} for b in backends},
            "workers": [{"name": "w1", "password": "pw-1", "builders": ["smoke"]},
                        {"name": "w2", "password": "pw-2", "builders": ["smoke"]}],
        }))
        self.events_path = tmp / "events.jsonl"
        self.master: CliProcess | None = None
        self.events: EventLog | None = None
        self.ready: dict[str, Any] = {}
        self.workers: dict[str, CliProcess] = {}

    async def start(self) -> EventLog:
        self.master = self.procs.start(["master", "-c", str(self.config), "--events", str(self.events_path)],
                                       name="master")
        self.events = EventLog(self.events_path, self.master)
        self.ready = await self.events.wait("ready")
        for name, password in (("w1", "pw-1"), ("w2", "pw-2")):
            self.worker(name, password)
        for name in self.worker_backend:
            await self.events.wait("attached", worker=name)
        return self.events

    def worker(self, name: str, password: str, label: str | None = None) -> CliProcess:
        backend = self.worker_backend[name]
        proc = self.procs.start(["worker", "--backend", backend, "--master",
                                 self.ready["protocols"][backend]["address"], "--name", name, "--password", password,
                                 "--basedir", str(self.tmp / f"basedir-{label or name}")], name=label or name)
        self.workers[label or name] = proc
        return proc

    async def cli(self, *args: str, timeout: float = 30, stdin: bytes = b"") -> CliProcess:
        """Run ``workerwire ARGS`` to its end (*stdin* piped in)."""
        proc = self.procs.start(list(args), name=" ".join(args[:1]), stdin=stdin)
        await proc.wait_exit(timeout=timeout)
        return proc

    async def metrics(self) -> str:
        response = await Agent(REACTOR).request(b"GET", f"http://{self.ready['metrics']}/metrics".encode())
        assert response.code == 200
        return (await readBody(response)).decode("utf-8")

    async def stop(self) -> None:
        for proc in [*self.workers.values(), self.master]:
            if proc is not None and proc.status is None:
                proc.signal("TERM")
        for proc in [*self.workers.values(), self.master]:
            if proc is not None:
                await proc.wait_exit()


@pytest.fixture
def operated(tmp_path: Path, processes: Processes) -> Operated:
    return Operated(tmp_path, processes, require_network_backend())


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series *name* with exactly *labels* in an exposition text."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name + "{"):
            continue
        series, value = line.rsplit(" ", 1)
        found = dict(part.split("=", 1) for part in series[len(name) + 1:-1].split(","))
        if {k: v.strip('"') for k, v in found.items()} == labels:
            return float(value)
    return None


@pytest_twisted.ensureDeferred
async def test_status_lists_both_workers_and_run_streams_and_exits_with_the_commands_code(operated: Operated) -> None:
    events = await operated.start()
    status = await operated.cli("status", "-c", str(operated.config), "--json")
    assert status.status == 0, status.text_err
    listed = {w["name"]: w for w in json.loads(status.text_out)["workers"]}
    assert {n: (w["connected"], w["backend"], w["tls"]) for n, w in listed.items()} == {
        n: (True, b, False) for n, b in operated.worker_backend.items()}
    assert all(w["peer"].startswith("127.0.0.1:") and w["running"] == [] for w in listed.values())

    run = await operated.cli("run", "-c", str(operated.config), "--worker", "w1", "--",
                             "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (run.status, run.text_out, run.text_err) == (3, "out\n", "err\n")
    finished = await events.wait("job_finished", worker="w1")
    assert finished["rc"] == 3 and finished["job"] is None
    # The output is kept under the state directory; the event says where.
    assert Path(finished["output_log"]).parent == operated.tmp / "state" / "jobs"
    assert b"out\n" in Path(finished["output_log"]).read_bytes()

    table = await operated.cli("status", "-c", str(operated.config))
    assert table.status == 0 and "w1" in table.text_out and operated.worker_backend["w2"] in table.text_out
    await operated.stop()


@pytest_twisted.ensureDeferred
async def test_the_control_socket_is_the_master_users_only(operated: Operated) -> None:
    await operated.start()
    socket = Path(operated.ready["control_socket"])
    assert socket == operated.tmp / "state" / "control.sock"
    assert stat.S_ISSOCK(socket.stat().st_mode) and stat.S_IMODE(socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700
    await operated.stop()


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_shows_in_the_event_log_and_the_metrics(operated: Operated) -> None:
    events = await operated.start()
    operated.worker("w2", "not-the-password", label="intruder")
    refused = await events.wait("login_refused", worker="w2")
    assert refused["reason"] == "wrong_password" and refused["backend"] == operated.worker_backend["w2"]
    assert "not-the-password" not in operated.events_path.read_text()
    operated.workers.pop("intruder").signal("KILL")

    text = await operated.metrics()
    b1, b2 = operated.worker_backend["w1"], operated.worker_backend["w2"]
    assert (_sample(text, "workerwire_logins_total", backend=b2, result="refused", reason="wrong_password")
            or 0) >= 1
    assert (_sample(text, "workerwire_logins_total", backend=b1, result="accepted", reason="") or 0) >= 1
    expected_connections = {b: float([b1, b2].count(b)) for b in operated.backends}
    assert {b: _sample(text, "workerwire_connections", backend=b) for b in operated.backends} == expected_connections
    assert (_sample(text, "workerwire_login_guard_total", backend=b2, event="refused") or 0) >= 1

    await operated.cli("run", "-c", str(operated.config), "--worker", "w1", "--", "echo", "counted")
    text = await operated.metrics()
    assert _sample(text, "workerwire_commands_started_total", backend=b1) == 1
    assert _sample(text, "workerwire_commands_completed_total", backend=b1) == 1
    assert _sample(text, "workerwire_command_output_bytes_total", backend=b1, stream="stdout") == len("counted\n")
    await operated.stop()


@pytest_twisted.ensureDeferred
async def test_disconnect_and_shutdown_a_worker(operated: Operated) -> None:
    events = await operated.start()
    out = await operated.cli("disconnect", "-c", str(operated.config), "w2")
    assert out.status == 0, out.text_err
    gone = await events.wait("disconnected", worker="w2")
    assert "workerwire disconnect" in gone["reason"]
    await events.wait("attached", worker="w2", count=2)  # it reconnects by itself

    out = await operated.cli("shutdown", "-c", str(operated.config), "w1")
    assert out.status == 0, out.text_err
    assert await operated.workers["w1"].wait_exit() == 0
    await events.wait("disconnected", worker="w1")
    await operated.stop()


@pytest_twisted.ensureDeferred
async def test_operator_mistakes_get_one_line_and_a_status(operated: Operated, tmp_path: Path) -> None:
    # No master running yet: exit status 3, saying so.
    out = await operated.cli("status", "-c", str(operated.config))
    assert out.status == 3 and "no master answers on its control socket" in out.text_err
    await operated.start()
    out = await operated.cli("run", "-c", str(operated.config), "--worker", "nobody", "--", "true")
    assert out.status == 2
    assert out.text_err.strip() == "workerwire run: unknown worker 'nobody'; valid: a configured worker: w1, w2"
    out = await operated.cli("run", "-c", str(operated.config), "--worker", "w1", "--builder", "nope", "--", "true")
    assert out.status == 2 and "worker 'w1' has no builder 'nope'; valid: smoke" in out.text_err
    out = await operated.cli("shutdown", "-c", str(operated.config), "nobody")
    assert out.status == 2 and "unknown worker 'nobody'" in out.text_err
    # A hand-written request whose worker is not a name gets the same answer (not "the master failed").
    socket = load_config(str(operated.config), check_secrets=False).settings.control_socket
    assert socket is not None
    answers = await control_request(REACTOR, socket, {"request": "disconnect", "worker": ["w1"]})
    assert answers == [{"ok": False, "error": "unknown worker ['w1']; valid: a configured worker: w1, w2"}]
    await operated.stop()


@pytest_twisted.ensureDeferred
async def test_ctrl_c_on_run_interrupts_the_command_on_the_worker(operated: Operated) -> None:
    events = await operated.start()
    proc = operated.procs.start(["run", "-c", str(operated.config), "--worker", "w2", "--json", "--",
                                 "sh", "-c", "echo ready; exec sleep 60"], name="run")
    await proc.wait_output('"ready\\n"')
    proc.signal("INT")
    assert await proc.wait_exit(timeout=20) == 128 + 2
    final = json.loads(proc.text_out.splitlines()[-1])
    assert final["exit_status"] == 130 and final["reason"].startswith("interrupted by SIGINT (2)")
    assert final["killed_by_signal"] == 15
    await events.wait("job_finished", worker="w2")
    await operated.stop()


@pytest_twisted.ensureDeferred
async def test_job_output_files_are_rotated_by_count(operated: Operated) -> None:
    events = await operated.start()
    for i in range(3):
        await operated.cli("run", "-c", str(operated.config), "--worker", "w1", "--", "echo", f"run {i}")
        await events.wait("job_finished", worker="w1", count=i + 1)
    kept = sorted(os.listdir(operated.tmp / "state" / "jobs"))
    assert len(kept) == 2  # job_logs_kept = 2: the oldest went
    assert b"run 2\n" in (operated.tmp / "state" / "jobs" / kept[-1]).read_bytes()
    assert all(b"run 0\n" not in (operated.tmp / "state" / "jobs" / k).read_bytes() for k in kept)
    await operated.stop()


@pytest_twisted.ensureDeferred
async def test_run_and_status_with_a_stock_buildbot_worker(tmp_path: Path, processes: Processes) -> None:
    """``run`` sends a Buildbot ``shell`` step (our ``raw_output`` extension is ignored by buildbot-worker,
    which sends text): the stock worker runs it, output and exit code come back."""
    import sys

    if "pb" not in require_network_backend():
        pytest.fail("the pb backend is not installed")
    bbw = Path(sys.executable).with_name("buildbot-worker")
    assert bbw.exists(), "buildbot-worker (a test dependency) is not installed beside this Python"
    operated = Operated(tmp_path, processes, ["pb"])
    operated.master = processes.start(["master", "-c", str(operated.config), "--events", str(operated.events_path)],
                                      name="master")
    operated.events = EventLog(operated.events_path, operated.master)
    operated.ready = await operated.events.wait("ready")
    where = operated.ready["protocols"]["pb"]["address"].split("host=")[1].replace(":port=", ":")
    create = processes.start(["create-worker", str(tmp_path / "bb"), where, "w1", "pw-1"], program=[str(bbw)])
    assert await create.wait_exit() == 0, create.text_err
    worker = processes.start(["start", "--nodaemon", str(tmp_path / "bb")], program=[str(bbw)],
                             name="buildbot-worker")
    await operated.events.wait("attached", worker="w1")
    status = await operated.cli("status", "-c", str(operated.config), "--json")
    w1 = next(w for w in json.loads(status.text_out)["workers"] if w["name"] == "w1")
    assert (w1["connected"], w1["backend"]) == (True, "pb")
    run = await operated.cli("run", "-c", str(operated.config), "--worker", "w1", "--",
                             "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (run.status, run.text_out, run.text_err) == (3, "out\n", "err\n")
    worker.signal("TERM")
    await worker.wait_exit()
    await operated.stop()


@pytest_twisted.ensureDeferred
async def test_run_gives_the_command_what_was_piped_into_it(operated: Operated) -> None:
    await operated.start()
    config = str(operated.config)
    run = await operated.cli("run", "-c", config, "--worker", "w1", "--", "cat", stdin=b"x\n")
    assert (run.status, run.stdout, run.text_err) == (0, b"x\n", "")
    # Bytes as they are, not text: a NUL and invalid UTF-8 come back unchanged.
    data = bytes(range(256)) * 1000
    run = await operated.cli("run", "-c", config, "--worker", "w2", "--", "cat", stdin=data)
    assert (run.status, run.stdout) == (0, data), run.text_err
    run = await operated.cli("run", "-c", config, "--worker", "w1", "--no-stdin", "--", "cat", stdin=b"ignored")
    assert (run.status, run.stdout) == (0, b"")


@pytest_twisted.ensureDeferred
async def test_run_refuses_more_stdin_than_its_limit_before_it_asks_the_master(operated: Operated) -> None:
    from workerwire_app.control import MAX_RUN_STDIN

    events = await operated.start()
    run = await operated.cli("run", "-c", str(operated.config), "--worker", "w1", "--", "cat",
                             stdin=b"y" * (MAX_RUN_STDIN + 1))
    assert run.status == 2 and run.stdout == b""
    assert f"stdin is longer than {MAX_RUN_STDIN} bytes (16 MiB)" in run.text_err and "--no-stdin" in run.text_err
    assert not events.matching("job_started")


@pytest_twisted.ensureDeferred
async def test_the_control_channel_refuses_stdin_that_is_not_base64(operated: Operated) -> None:
    await operated.start()
    answers = await control_request(REACTOR, operated.ready["control_socket"], {
        "request": "run", "worker": "w1", "command": ["cat"], "stdin": "not base64!"})
    assert answers[-1]["ok"] is False and "stdin is not base64" in answers[-1]["error"]


@pytest_twisted.ensureDeferred
async def test_run_ends_after_more_output_than_the_control_socket_buffers(operated: Operated) -> None:
    """The master paused sending (its client read slower than the output came);
    the connection still closes at the end (it used to stay open: run hung)."""
    await operated.start()
    size = 4 * 1024 * 1024
    run = await operated.cli("run", "-c", str(operated.config), "--worker", "w1", "--", sys.executable, "-c",
                             f"import sys; sys.stdout.write('a' * {size})")
    assert (run.status, len(run.stdout), run.text_err) == (0, size, "")
