"""The msgpack backend's worker against the real thing: a Buildbot 4.3 master
from PyPI (``buildbot create-master``, sqlite, no web UI) configured with
``c['protocols'] = {'msgpack_experimental_v7': {'port': N}}``, run in the
foreground as a subprocess, and the workerwire worker as its user runs it
(``workerwire worker --backend msgpack``), also a subprocess.

The master's periodic scheduler starts a build with a shell step and a file
upload; the test checks what the steps did on both ends and what the master
recorded.  (A
shared real-master harness is being written on another branch; this one is
deliberately small and local.)
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

from test_pb_buildbot_worker import _Process
from workerwire.conformance import within

pytest.importorskip("buildbot", reason="buildbot is a test dependency (setup.cfg)")

BUILDBOT = "import sys; from buildbot.scripts.runner import run; sys.argv[0] = 'buildbot'; run()"
WORKERWIRE = "import sys; from workerwire_app.cli import main; sys.argv[0] = 'workerwire'; sys.exit(main())"
START_TIMEOUT = 90.0
BUILD_TIMEOUT = 90.0


def free_port() -> int:
    # The master listens on a fixed port from its config; ask the kernel for one that is free now.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


MASTER_CFG = """\
from buildbot.plugins import schedulers, steps, util, worker
import sys

c = BuildmasterConfig = {{}}
c['workers'] = [worker.Worker('ww1', 'pw-ww-1')]
c['protocols'] = {{'msgpack_experimental_v7': {{'port': {port}}}}}
c['schedulers'] = [schedulers.Periodic(name='every-hour', builderNames=['b1'], periodicBuildTimer=3600)]
factory = util.BuildFactory()
factory.addStep(steps.ShellCommand(
    name='hello',
    command=[sys.executable, '-c',
             "import os, sys; print('hello from', os.getcwd()); sys.stderr.write('to stderr\\\\n'); "
             "open('marker.txt', 'w').write('ran')"],
))
factory.addStep(steps.FileUpload(workersrc='marker.txt', masterdest={upload!r}))
c['builders'] = [util.BuilderConfig(name='b1', workernames=['ww1'], factory=factory)]
c['title'] = 'workerwire interop'
c['buildbotNetUsageData'] = None
c['db'] = {{'db_url': 'sqlite:///state.sqlite'}}
"""


class Daemon:
    """A subprocess and where its output goes."""

    def __init__(self, reactor: Any, argv: list[str], cwd: str, **env: str):
        self.reactor = reactor
        self.process = _Process()
        reactor.spawnProcess(self.process, sys.executable, [sys.executable, *argv], env={**os.environ, **env},
                             path=cwd)

    def output(self) -> str:
        return b"".join(self.process.output).decode("utf-8", "replace")

    async def stop(self) -> None:
        if self.process.running:
            self.process.transport.signalProcess("TERM")
            try:
                await within(self.process.ended, self.reactor, 30, what="the process to stop")
            except Exception:
                self.process.transport.signalProcess("KILL")
                await within(self.process.ended, self.reactor, 30, what="the process to die")


async def until(reactor: Any, check: Any, seconds: float, what: str) -> None:
    found: Deferred[None] = Deferred()

    def poll() -> None:
        if not found.called and check():
            found.callback(None)

    loop = task.LoopingCall(poll)
    loop.clock = reactor
    loop.start(0.2)
    try:
        await within(found, reactor, seconds, what=what)
    finally:
        loop.stop()


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture
async def buildbot_master(reactor: Any, tmp_path: Any) -> AsyncIterator[tuple[str, int, Daemon]]:
    basedir = str(tmp_path / "master")
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-c", BUILDBOT, "create-master", "--db=sqlite:///state.sqlite", basedir],
        env=dict(os.environ), reactor=reactor)
    assert code == 0, f"buildbot create-master failed: {out!r} {err!r}"
    port = free_port()
    with open(os.path.join(basedir, "master.cfg"), "w") as f:
        f.write(MASTER_CFG.format(port=port, upload=os.path.join(basedir, "uploaded-marker.txt")))
    master = Daemon(reactor, ["-c", BUILDBOT, "start", "--nodaemon", basedir], basedir)
    log = os.path.join(basedir, "twistd.log")

    def listening() -> bool:
        return os.path.exists(log) and "BuildMaster is running" in open(log, errors="replace").read()

    try:
        await until(reactor, lambda: listening() or not master.process.running, START_TIMEOUT,
                    "the Buildbot master to start")
        assert master.process.running, f"the Buildbot master exited:\n{master.output()}"
        yield basedir, port, master
    finally:
        await master.stop()


def build_results(basedir: str) -> list[tuple[int, int | None]]:
    """``(build number, results)`` of the builds the master recorded."""
    db = sqlite3.connect(os.path.join(basedir, "state.sqlite"))
    try:
        return list(db.execute("select number, results from builds order by number"))
    finally:
        db.close()


@async_test
async def test_a_real_buildbot_master_runs_a_shell_step_on_the_workerwire_worker(
        buildbot_master: Any, reactor: Any, tmp_path: Any) -> None:
    basedir, port, master = buildbot_master
    worker_dir = str(tmp_path / "ww-worker")
    worker = Daemon(reactor, ["-c", WORKERWIRE, "worker", "--backend", "msgpack_experimental_v7",
                              "--master", f"tcp:host=127.0.0.1:port={port}", "--name", "ww1",
                              "--password-env", "WW_TEST_PASSWORD", "--basedir", worker_dir,
                              "--keepalive-interval", "5"], str(tmp_path), WW_TEST_PASSWORD="pw-ww-1")
    try:
        marker = os.path.join(worker_dir, "b1", "build", "marker.txt")
        await until(reactor, lambda: os.path.exists(marker) or not worker.process.running, BUILD_TIMEOUT,
                    "the shell step to run on the worker")
        assert worker.process.running, f"the worker exited:\n{worker.output()}"
        with open(marker) as f:
            assert f.read() == "ran"
        # 0 is SUCCESS in Buildbot's results.
        await until(reactor, lambda: build_results(basedir) and build_results(basedir)[0][1] is not None,
                    BUILD_TIMEOUT, "the master to record the build's result")
        assert build_results(basedir)[0] == (1, 0), (build_results(basedir), open(
            os.path.join(basedir, "twistd.log"), errors="replace").read()[-4000:])
        # The upload went through Buildbot's update_upload_file_* messages.  (No download step:
        # Buildbot 4.3's msgpack master answers update_read_file with None instead of the data,
        # docs/protocols/msgpack.md section 6, so a download from it fails with any worker.)
        with open(os.path.join(basedir, "uploaded-marker.txt")) as f:
            assert f.read() == "ran"
        master_log = open(os.path.join(basedir, "twistd.log"), errors="replace").read()
        assert "worker 'ww1' attaching" in master_log
        assert "pw-ww-1" not in worker.output()
        for bad in ("Traceback", "protocol error", "does not exist"):
            assert bad not in worker.output() and bad not in master_log, (bad, worker.output())
    finally:
        await worker.stop()
