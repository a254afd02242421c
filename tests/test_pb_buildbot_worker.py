"""The pb backend against the real thing: an unmodified ``buildbot-worker``
4.x from PyPI, created with its own ``create-worker`` and run in the
foreground as a subprocess, driven only through the ``Connection`` contract.
"""

from __future__ import annotations

import os
import sys
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test
from twisted.internet import protocol, task
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher

from workerwire import LinkOptions, load_backend
from workerwire.conformance import RecordingCommand, RecordingMaster, within
from workerwire.errors import UnknownBuilder, UnknownCommand
from workerwire.master import Connection

buildbot_worker = pytest.importorskip("buildbot_worker", reason="buildbot-worker is a test dependency (setup.cfg)")

# Run its own command line with this interpreter (the venv it is installed in).
RUNNER = "import sys; from buildbot_worker.scripts.runner import run; sys.argv[0] = 'buildbot-worker'; run()"
START_TIMEOUT = 45.0
TIMEOUT = 30.0
MiB = 1024 * 1024


def shell_args(command: list[str], **extra: Any) -> dict[str, Any]:
    """``shell`` args as a Buildbot 4 master sends them."""
    args: dict[str, Any] = {
        "workdir": "wd", "env": {}, "want_stdout": 1, "want_stderr": 1, "logfiles": {},
        "timeout": 120, "maxTime": None, "max_lines": None, "sigtermTime": None, "usePTY": False,
        "logEnviron": False, "initial_stdin": None, "interruptSignal": None, "command": command,
    }
    args.update(extra)
    return args


class _Process(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output: list[bytes] = []
        self.ended: Deferred[int | None] = Deferred()
        self.running = True

    def outReceived(self, data: bytes) -> None:
        self.output.append(data)

    def errReceived(self, data: bytes) -> None:
        self.output.append(data)

    def processEnded(self, reason: Any) -> None:
        self.running = False
        self.ended.callback(getattr(reason.value, "exitCode", None))


class StockWorker:
    """A ``buildbot-worker`` directory and, once started, its twistd process."""

    def __init__(self, reactor: Any, basedir: str):
        self.reactor = reactor
        self.basedir = basedir
        self.process: _Process | None = None

    async def create(self, port: int, name: str, password: str, *options: str) -> None:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-c", RUNNER, "create-worker", *options, self.basedir, f"127.0.0.1:{port}", name, password],
            env=dict(os.environ), reactor=self.reactor,
        )
        assert code == 0, f"create-worker failed: {out!r} {err!r}"
        with open(os.path.join(self.basedir, "info", "host"), "w") as f:
            f.write("workerwire interop test host\n")

    def start(self) -> None:
        self.process = _Process()
        self.reactor.spawnProcess(
            self.process, sys.executable, [sys.executable, "-c", RUNNER, "start", "--nodaemon", self.basedir],
            env=dict(os.environ), path=self.basedir,
        )

    def log(self) -> str:
        try:
            with open(os.path.join(self.basedir, "twistd.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    async def wait_for_log(self, text: str, seconds: float = TIMEOUT) -> None:
        """Wait until the worker's own log (twistd.log) contains *text*."""
        found: Deferred[None] = Deferred()

        def check() -> None:
            if text in self.log() and not found.called:
                found.callback(None)

        loop = task.LoopingCall(check)
        loop.clock = self.reactor
        loop.start(0.05)
        try:
            await within(found, self.reactor, seconds, what=f"{text!r} in the worker's log")
        finally:
            loop.stop()

    async def stop(self) -> None:
        if self.process is not None and self.process.running:
            self.process.transport.signalProcess("KILL")
            await within(self.process.ended, self.reactor, TIMEOUT, what="the worker process to end")


@pytest_twisted.async_yield_fixture
async def setup(reactor: Any, tmp_path: Any) -> AsyncIterator[tuple[RecordingMaster, Any, Any, StockWorker]]:
    master = RecordingMaster(reactor)
    listener = load_backend("pb").create_listener(master, LinkOptions(keepalive_interval=None), reactor)
    registration = await listener.updateRegistration("w1", "pw-right-1", "tcp:port=0:interface=127.0.0.1")
    worker = StockWorker(reactor, str(tmp_path / "worker"))
    try:
        yield master, listener, registration, worker
    finally:
        await worker.stop()
        await listener.stopListening()
    for bad in ("Traceback", "Unhandled", "Didn't understand"):
        assert bad not in worker.log(), f"the worker logged {bad!r}:\n{worker.log()}"


async def connected(setup: tuple[RecordingMaster, Any, Any, StockWorker], *options: str) -> Connection:
    master, listener, registration, worker = setup
    await worker.create(registration.getPort(), "w1", "pw-right-1", *options)
    waiting = master.whenConnection("w1")
    worker.start()
    conn: Connection = await within(waiting, worker.reactor, START_TIMEOUT, what="buildbot-worker to log in")
    return conn


@async_test
async def test_worker_info_builders_print_and_keepalive(setup: Any) -> None:
    conn = await connected(setup, "--keepalive=1")
    worker: StockWorker = setup[3]
    assert conn.backendName == "pb" and conn.workerName == "w1"
    host, _, port = conn.get_peer().rpartition(":")
    assert host == "127.0.0.1" and port.isdigit()

    info = await conn.remoteGetWorkerInfo()
    assert info["version"] == buildbot_worker.version
    assert info["basedir"] == worker.basedir
    assert info["system"] == os.name and isinstance(info["numcpus"], int)
    assert info["host"] == "workerwire interop test host\n"
    assert "admin" in info and isinstance(info["environ"], dict) and info["environ"]
    for command in ("shell", "uploadFile", "downloadFile", "mkdir", "rmdir", "stat", "glob", "listdir"):
        assert command in info["worker_commands"], command
    assert "delete_leftover_dirs" in info

    assert sorted(await conn.remoteSetBuilderList([("b1", "b1-dir"), ("b2", "b2-dir")])) == ["b1", "b2"]
    assert os.path.isdir(os.path.join(worker.basedir, "b1-dir"))
    assert await conn.remoteSetBuilderList([("b2", "b2-dir")]) == ["b2"]
    with pytest.raises(UnknownBuilder):
        await conn.remoteStartBuild("b1")
    assert await conn.remoteStartBuild("b2") is None

    assert await conn.remotePrint("hello from a workerwire master ✓") is None
    await worker.wait_for_log("hello from a workerwire master ✓")
    assert await conn.doKeepalive() is None
    # The worker's own keepalive reaches the master's perspective and is answered.
    await worker.wait_for_log("Master replied to keepalive, everything's fine")


@async_test
async def test_worker_asks_for_a_graceful_shutdown(setup: Any) -> None:
    import signal

    master: RecordingMaster = setup[0]
    worker: StockWorker = setup[3]
    conn = await connected(setup, "--allow-shutdown=signal")
    asked = master.whenShutdownRequested()
    # The master attaches before it answers the login: wait until the worker has its perspective.
    await worker.wait_for_log("Connected to buildmaster; worker is ready")
    assert worker.process is not None
    worker.process.transport.signalProcess(signal.SIGHUP)
    assert await within(asked, worker.reactor, TIMEOUT, what="the shutdown request") is conn


@async_test
async def test_shell_command_streams_large_output_in_order(setup: Any) -> None:
    conn = await connected(setup)
    await conn.remoteSetBuilderList([("b1", "b1")])
    assert await conn.remoteStartBuild("b1") is None
    lines = 600_000  # 9 bytes each: 5.4 MB of stdout
    script = (
        "import sys\n"
        "out = sys.stdout\n"
        f"for i in range({lines}):\n"
        "    out.write('%08d\\n' % i)\n"
        "    if i % 100000 == 0:\n"
        "        out.flush(); sys.stderr.write('progress %d\\n' % i); sys.stderr.flush()\n"
        "out.flush()\n"
        "sys.stderr.write('done ✓\\n')\n"
        "sys.exit(3)\n"
    )
    rc = RecordingCommand()
    await conn.remoteStartCommand(rc, "b1", "0", "shell", shell_args([sys.executable, "-c", script]))
    await within(rc.done, setup[3].reactor, 90, what="the shell command to complete")
    assert rc.completions == [None]
    stdout = rc.text("stdout")
    assert len(stdout) >= 5 * MiB
    assert stdout == "".join("%08d\n" % i for i in range(lines)), "stdout arrived incomplete or out of order"
    stderr = rc.text("stderr")
    assert stderr == "".join(f"progress {i}\n" for i in range(0, lines, 100_000)) + "done ✓\n"
    assert rc.values("rc") == [3]
    assert rc.updates[-1][0] in ("rc", "elapsed", "header")
    assert isinstance(rc.values("elapsed")[0], float)
    assert rc.completions == [None]


@async_test
async def test_interrupt_a_long_running_command(setup: Any) -> None:
    conn = await connected(setup)
    await conn.remoteSetBuilderList([("b1", "b1")])
    # Well over the worker's 64 KiB output buffer, so the first update comes at once.
    script = "import sys, time; sys.stdout.write(('x' * 99 + '\\n') * 5000); sys.stdout.flush(); time.sleep(120)"
    rc = RecordingCommand()
    await conn.remoteStartCommand(rc, "b1", "7", "shell", shell_args([sys.executable, "-c", script]))
    await within(rc.whenUpdated(lambda: bool(rc.values("stdout"))), setup[3].reactor, TIMEOUT, what="first output")
    assert rc.completions == []
    assert await conn.remoteInterruptCommand("b1", "7", "the test pressed stop") is None
    await within(rc.done, setup[3].reactor, TIMEOUT, what="the interrupted command to end")
    assert rc.completions == [None]
    (code,) = rc.values("rc")
    assert code != 0
    assert "command interrupted" in rc.text("header")
    # The builder takes another command afterwards.
    again = RecordingCommand()
    await conn.remoteStartCommand(again, "b1", "8", "shell", shell_args([sys.executable, "-c", "print('ok')"]))
    await within(again.done, setup[3].reactor, TIMEOUT, what="the next command")
    assert again.completions == [None]
    assert again.values("rc") == [0]


@async_test
async def test_unknown_command_fails_the_start(setup: Any) -> None:
    conn = await connected(setup)
    await conn.remoteSetBuilderList([("b1", "b1")])
    rc = RecordingCommand()
    with pytest.raises(UnknownCommand) as err:
        await conn.remoteStartCommand(rc, "b1", "1", "no-such-command", {})
    assert "no-such-command" in str(err.value)
    assert rc.completions == []


@async_test
async def test_remote_shutdown_stops_the_process(setup: Any) -> None:
    conn = await connected(setup)
    worker: StockWorker = setup[3]
    gone: Deferred[None] = Deferred()
    conn.notifyOnDisconnect(lambda: gone.callback(None))
    assert await conn.remoteShutdown() is None
    await within(gone, worker.reactor, TIMEOUT, what="the link to close")
    assert worker.process is not None
    await within(worker.process.ended, worker.reactor, TIMEOUT, what="the buildbot-worker process to exit")
    assert "worker shutting down on command from master" in worker.log()


@async_test
async def test_wrong_password_is_refused_on_both_ends(setup: Any) -> None:
    master, listener, registration, worker = setup
    events: list[str] = []
    refused: Deferred[None] = Deferred()

    def observer(event: dict[str, Any]) -> None:
        text = formatEvent(event) + repr(event.get("log_failure", ""))
        events.append(text)
        if "wrong password for worker 'w1'" in text and not refused.called:
            refused.callback(None)

    globalLogPublisher.addObserver(observer)
    try:
        await worker.create(registration.getPort(), "w1", "pw-wrong-2", "--keepalive=600")
        worker.start()
        await within(refused, worker.reactor, START_TIMEOUT, what="the master to log the refusal")
        await worker.wait_for_log("unauthorized login; check worker name and password")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert master.offers == [] and listener.connections() == []
    assert not [e for e in events if "pw-wrong-2" in e or "pw-right-1" in e], "a password reached the log"
    assert "pw-wrong-2" not in worker.log()
