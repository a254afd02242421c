"""A real Buildbot master (PyPI ``buildbot``, sqlite, no web UI) and real
workers as child processes, for the Buildbot plugin's tests (no tests here).

* :class:`ProbeLink` is the test's end of the master's probe service
  (``test_buildbot_plugin_probe.MasterProbe``, loaded by the generated
  master.cfg): events arrive as JSON lines, commands go back; every wait is on
  an arriving event with a deadline.
* :class:`BuildbotMaster` drives the real commands: ``buildbot create-master``,
  ``buildbot start``, ``buildbot reconfig``, ``buildbot stop``.
* :class:`WorkerSpec` / :meth:`BuildbotMaster.start_worker` run a stock
  ``buildbot-worker`` (Buildbot's own pb) or ``workerwire worker`` (amp, or pb
  through workerwire).

The command lines and free ports are the shared harness's
(``tests/buildbot_master.py``); what is this plugin's own is the master's
lifecycle as an operator drives it (a daemon: ``start``, ``reconfig``,
``stop``, a config that may fail ``checkconfig``) and the probe inside it.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from buildbot_master import buildbot_argv, buildbot_worker_argv, free_port, workerwire_worker_argv
from test_app_support import REACTOR, CliProcess, Processes, workerwire_argv

__all__ = ["BuildbotMaster", "ProbeLink", "WorkerSpec", "free_port"]

TESTS_DIR = Path(__file__).resolve().parent
#: Generous: a Buildbot master starts in seconds, but the machine is shared.
DEADLINE = 90.0
#: The programs this harness runs, by name (run by this interpreter: its venv's).
PROGRAMS = {"buildbot": buildbot_argv(), "buildbot-worker": buildbot_worker_argv()}


class _ProbeProtocol(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024 * 1024

    def __init__(self, link: "ProbeLink"):
        self.link = link

    def connectionMade(self) -> None:
        self.link.current = self

    def lineReceived(self, line: bytes) -> None:
        self.link._received(json.loads(line))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.link.current is self:
            self.link.current = None


class ProbeLink(Factory):
    """The test's end of the master's probe: events in, commands out."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.current: _ProbeProtocol | None = None
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []
        self._replies: dict[int, Deferred[dict[str, Any]]] = {}
        self._next = 0
        self.port: Any = None

    async def listen(self) -> int:
        self.port = await TCP4ServerEndpoint(REACTOR, 0, interface="127.0.0.1").listen(self)
        return self.port.getHost().port

    def buildProtocol(self, addr: Any) -> _ProbeProtocol:
        return _ProbeProtocol(self)

    def _received(self, msg: dict[str, Any]) -> None:
        if "reply" in msg:
            d = self._replies.pop(msg["reply"], None)
            if d is not None:
                d.callback(msg)
            return
        self.events.append(msg)
        for item in list(self._waiters):
            cond, d = item
            if cond():
                self._waiters.remove(item)
                d.callback(None)

    def matching(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())]

    async def wait(self, event: str, count: int = 1, timeout: float = DEADLINE, **fields: Any) -> dict[str, Any]:
        """The *count*-th event named *event* with *fields*, waiting for it to arrive."""
        cond = lambda: len(self.matching(event, **fields)) >= count  # noqa: E731
        if not cond():
            d: Deferred[None] = Deferred()
            entry = (cond, d)
            self._waiters.append(entry)
            call = REACTOR.callLater(timeout, lambda: None if d.called else d.errback(Failure(AssertionError(
                f"no {count}x {event} {fields} within {timeout:g} s; last events:\n"
                + "\n".join(json.dumps(e)[:400] for e in self.events[-15:])))))
            try:
                await d
            finally:
                if call.active():
                    call.cancel()
                if entry in self._waiters:
                    self._waiters.remove(entry)
        return self.matching(event, **fields)[count - 1]

    async def call(self, cmd: str, timeout: float = DEADLINE, **args: Any) -> dict[str, Any]:
        """Run a probe command in the master; its reply (fails on an ``error`` reply)."""
        assert self.current is not None, "the master's probe is not connected"
        self._next += 1
        key = self._next
        d: Deferred[dict[str, Any]] = Deferred()
        self._replies[key] = d
        call = REACTOR.callLater(timeout, lambda: None if d.called else d.errback(Failure(AssertionError(
            f"probe command {cmd} got no reply within {timeout:g} s"))))
        self.current.sendLine(json.dumps({"id": key, "cmd": cmd, **args}).encode())
        try:
            reply = await d
        finally:
            if call.active():
                call.cancel()
        if "error" in reply:
            raise AssertionError(f"probe command {cmd} {args} failed in the master: {reply['error']}")
        return reply


@dataclass(frozen=True)
class WorkerSpec:
    """One worker of the test master.

    ``kind``: ``stock-pb`` (``worker.Worker`` + stock buildbot-worker over
    Buildbot's pb), ``ww-BACKEND`` (``worker.WorkerwireWorker`` +
    ``workerwire worker`` over that backend: ``ww-amp``, ``ww-pb``, ...).
    """

    name: str
    password: str
    kind: str
    port: int = 0
    extra: str = ""

    @property
    def backend(self) -> str | None:
        return None if self.kind == "stock-pb" else self.kind.split("-", 1)[1]

    def cfg(self) -> str:
        if self.kind == "stock-pb":
            return f"worker.Worker({self.name!r}, {self.password!r}{self.extra})"
        return (f"worker.WorkerwireWorker({self.name!r}, {self.password!r}, backend={self.backend!r}, "
                f"port='tcp:{self.port}:interface=127.0.0.1'{self.extra})")


MASTER_CFG = """\
import sys
sys.path.insert(0, {tests_dir!r})
from buildbot.plugins import schedulers, steps, util, worker
from test_buildbot_plugin_probe import AnnouncedShellCommand, MasterProbe

c = BuildmasterConfig = {{}}
c['buildbotNetUsageData'] = None
c['title'] = 'workerwire plugin test'
c['buildbotURL'] = 'http://127.0.0.1/'
c['db'] = {{'db_url': 'sqlite:///state.sqlite'}}
c['protocols'] = {{'pb': {{'port': 'tcp:{pb_port}:interface=127.0.0.1'}}}}
c['workers'] = [
{workers}
]

def quick():
    f = util.BuildFactory()
    f.addStep(steps.ShellCommand(name='hello', command=[
        'sh', '-c', 'echo "hello from $0 on line 1"; echo line 2 >&2', util.Interpolate('%(prop:workername)s')]))
    f.addStep(steps.ShellCommand(name='fails', command=['sh', '-c', 'echo about to fail; exit 3']))
    f.addStep(steps.ShellCommand(name='after', command=['echo', 'after the failure'], alwaysRun=True))
    return f

def slow():
    f = util.BuildFactory()
    f.addStep(AnnouncedShellCommand(name='sleeps', command=['sh', '-c', 'echo sleeping; exec sleep 120']))
    return f

def transfer(name):
    f = util.BuildFactory()
    f.addStep(steps.FileDownload(name='download', mastersrc='to-workers.txt', workerdest='got.txt'))
    f.addStep(steps.ShellCommand(name='check', command=[
        'sh', '-c', 'wc -c < got.txt; cp got.txt back.txt; mkdir -p d/e; echo deep > d/e/f.txt']))
    f.addStep(steps.FileUpload(name='upload', workersrc='back.txt', masterdest='uploads/' + name + '.txt'))
    f.addStep(steps.DirectoryUpload(name='dirupload', workersrc='d', masterdest='uploads/' + name + '-dir'))
    return f

names = [w.name for w in c['workers']]
c['builders'] = (
    [util.BuilderConfig(name='quick-' + n, workernames=[n], factory=quick()) for n in names]
    + [util.BuilderConfig(name='slow-' + n, workernames=[n], factory=slow()) for n in names]
    + [util.BuilderConfig(name='transfer-' + n, workernames=[n], factory=transfer(n)) for n in names]
)
c['schedulers'] = [schedulers.ForceScheduler(name='force', builderNames=[b.name for b in c['builders']])]
c['services'] = [MasterProbe({probe_port})]
"""


class BuildbotMaster:
    """A real Buildbot master in *basedir*, run with the ``buildbot`` command."""

    def __init__(self, basedir: Path, processes: Processes, probe: ProbeLink, probe_port: int):
        self.basedir = basedir
        self.processes = processes
        self.probe = probe
        self.probe_port = probe_port
        self.pb_port = free_port()
        self.workers: list[WorkerSpec] = []
        self.worker_procs: dict[str, CliProcess] = {}
        self.starts = 0
        #: Environment of every process started (None: this one's).
        self.env: dict[str, str] | None = None

    async def run(self, program: str, *args: str, timeout: float = DEADLINE) -> CliProcess:
        """Run a command (``buildbot``, ``buildbot-worker``) to its end; fails unless it exits 0."""
        proc = self.processes.start(list(args), program=PROGRAMS[program], name=f"{program} {args[0]}",
                                    env=self.env)
        status = await proc.wait_exit(timeout)
        if status != 0:
            log = self.basedir / "twistd.log"
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise AssertionError(f"{program} {' '.join(args)} exited {status}:\n{proc.text_out[-3000:]}\n"
                                 f"{proc.text_err[-3000:]}\n--- master twistd.log:\n{tail}")
        return proc

    async def create(self) -> None:
        await self.run("buildbot", "create-master", "-r", "--db", "sqlite:///state.sqlite", str(self.basedir))

    def write_config(self, workers: list[WorkerSpec]) -> None:
        self.workers = list(workers)
        text = MASTER_CFG.format(
            tests_dir=str(TESTS_DIR), pb_port=self.pb_port, probe_port=self.probe_port,
            workers="\n".join(f"    {w.cfg()}," for w in workers))
        (self.basedir / "master.cfg").write_text(text, encoding="utf-8")

    async def check_config(self) -> CliProcess:
        """``buildbot checkconfig``, whatever its exit status."""
        proc = self.processes.start(["checkconfig", str(self.basedir)], program=PROGRAMS["buildbot"],
                                    name="buildbot checkconfig", env=self.env)
        await proc.wait_exit(DEADLINE)
        return proc

    async def start(self) -> None:
        """``buildbot start`` (a daemon); returns when the master's probe said it started."""
        self.starts += 1
        # --start_timeout: `buildbot start` follows twistd.log for 10 s by default, too short on a loaded machine.
        await self.run("buildbot", "start", f"--start_timeout={DEADLINE:g}", str(self.basedir), timeout=DEADLINE + 30)
        await self.probe.wait("started", count=self.starts)

    async def reconfig(self) -> None:
        await self.run("buildbot", "reconfig", f"--progress_timeout={DEADLINE:g}", str(self.basedir),
                       timeout=DEADLINE + 30)

    async def stop(self) -> None:
        # --clean: wait for the master to finish (plain `stop` gives up after 10 s on a loaded machine).
        await self.run("buildbot", "stop", "--clean", str(self.basedir), timeout=DEADLINE + 30)

    def kill(self) -> None:
        """SIGKILL the master daemon if it still runs (test cleanup)."""
        try:
            pid = int((self.basedir / "twistd.pid").read_text().strip())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def start_worker(self, spec: WorkerSpec, password: str | None = None) -> CliProcess:
        """A worker process for *spec* (with *password* instead of the configured one, if given)."""
        basedir = self.basedir.parent / f"worker-{spec.name}"
        basedir.mkdir(exist_ok=True)
        pw = spec.password if password is None else password
        if spec.kind == "stock-pb":
            raise AssertionError("stock workers start with start_stock_worker (async)")
        pw_file = basedir.parent / f"{spec.name}.password"
        pw_file.write_text(pw, encoding="utf-8")
        proc = self.processes.start(
            workerwire_worker_argv(spec.backend or "", spec.port, spec.name, pw_file, basedir,
                                   "--keepalive-interval", "10"),
            program=workerwire_argv(), name=f"workerwire worker {spec.name}", env=self.env)
        self.worker_procs[spec.name] = proc
        return proc

    async def start_stock_worker(self, spec: WorkerSpec) -> CliProcess:
        """An unmodified buildbot-worker (``create-worker``, then ``start --nodaemon``)."""
        basedir = self.basedir.parent / f"worker-{spec.name}"
        if not basedir.exists():
            await self.run("buildbot-worker", "create-worker", "--umask=0o22", str(basedir),
                           f"127.0.0.1:{self.pb_port}", spec.name, spec.password)
        proc = self.processes.start(["start", "--nodaemon", str(basedir)], program=PROGRAMS["buildbot-worker"],
                                    name=f"buildbot-worker {spec.name}", env=self.env)
        self.worker_procs[spec.name] = proc
        return proc

    async def start_any_worker(self, spec: WorkerSpec) -> CliProcess:
        if spec.kind == "stock-pb":
            return await self.start_stock_worker(spec)
        return self.start_worker(spec)

    async def build(self, builder: str, count: int = 1) -> dict[str, Any]:
        """Force a build on *builder*; its build-finished event (the *count*-th of that builder)."""
        await self.probe.call("force", builder=builder)
        return await self.probe.wait("build-finished", builder=builder, count=count)
