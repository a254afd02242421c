"""A real Buildbot master (``buildbot`` from PyPI, 4.x) for tests, and the workers that connect to it.

:class:`BuildbotMaster` writes a ``master.cfg`` (sqlite database, the pb
protocol on a free loopback port, no web UI), runs ``buildbot create-master``
and ``buildbot start --nodaemon`` as a subprocess, and waits until its log says
it is running.  Each builder gets a scheduler that a change on the branch of
the builder's name (as its category) triggers, so :meth:`BuildbotMaster.run_build` starts a build
by sending a change over PB (what ``buildbot sendchange`` does) and then reads
the build's result, its steps and their logs from the master's database.
:meth:`BuildbotMaster.stop` sends SIGTERM, then SIGKILL if it lingers.

:class:`WorkerProcess` runs a worker against it: a stock ``buildbot-worker``
(:meth:`WorkerProcess.stock`) or ``workerwire worker`` (:meth:`WorkerProcess.workerwire`,
``--backend pb`` by default), each a real subprocess.  ``protocol=`` makes the
master's workers dial another of Buildbot's worker protocols (e.g.
``msgpack_experimental_v7``) on :attr:`BuildbotMaster.worker_port`; changes
still arrive over pb on :attr:`BuildbotMaster.pb_port`.

The command lines (:func:`buildbot_argv`, :func:`buildbot_worker_argv`,
:func:`workerwire_worker_argv`) and :func:`free_port` are shared with the
Buildbot plugin's harness (``test_buildbot_plugin_harness.py``, which runs its
master as a daemon with ``buildbot start``/``reconfig``/``stop`` and a probe
service inside it).

Every wait is bounded and driven by what it waits for (a log line, a row in
the database), checked from the reactor; nothing blocks it.  Typical use::

    master = BuildbotMaster(tmp_path / "master", workers={"w1": "pw"},
                            builders=[Builder("hello", "w1", "[steps.ShellCommand(command=['echo', 'hi'])]")])
    await master.start()
    worker = WorkerProcess.stock(tmp_path / "worker", master.worker_port, "w1", "pw")
    await worker.start()
    build = await master.run_build("hello")
    assert build.result == SUCCESS and "hi" in build.step("ShellCommand").log_text("stdio")
    await worker.stop(); await master.stop()
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from twisted.cred.credentials import UsernamePassword
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.utils import getProcessOutputAndValue
from twisted.spread import pb

__all__ = ["BuildbotMaster", "Builder", "BuildResult", "StepResult", "WorkerProcess", "HarnessError",
           "SUCCESS", "WARNINGS", "FAILURE", "SKIPPED", "EXCEPTION", "RETRY", "CANCELLED", "RESULT_NAMES",
           "free_port", "wait_until", "buildbot_argv", "buildbot_worker_argv", "workerwire_worker_argv"]

# Buildbot's result codes (buildbot.process.results), spelled out so this module needs no buildbot import.
SUCCESS, WARNINGS, FAILURE, SKIPPED, EXCEPTION, RETRY, CANCELLED = range(7)
RESULT_NAMES = ["SUCCESS", "WARNINGS", "FAILURE", "SKIPPED", "EXCEPTION", "RETRY", "CANCELLED"]

#: Seconds the master has to start (create-master plus start; slow on a loaded machine).
START_TIMEOUT = 120.0
#: Seconds a build has, by default, to finish once its change was sent.
BUILD_TIMEOUT = 120.0
#: Seconds between two looks at a log file or the database.
POLL_INTERVAL = 0.2

_CHANGE_USER = "harness"

T = TypeVar("T")


class HarnessError(Exception):
    """The master or a worker did not do what the harness waited for (the message says what, with log excerpts)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the master binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def buildbot_argv(*args: str) -> list[str]:
    """``buildbot ARGS`` run by this interpreter (so its venv's buildbot, whatever is on PATH)."""
    runner = "import sys; from buildbot.scripts.runner import run; sys.argv[0] = 'buildbot'; run()"
    return [sys.executable, "-c", runner, *args]


def buildbot_worker_argv(*args: str) -> list[str]:
    """``buildbot-worker ARGS`` run by this interpreter."""
    runner = "import sys; from buildbot_worker.scripts.runner import run; sys.argv[0] = 'buildbot-worker'; run()"
    return [sys.executable, "-c", runner, *args]


def workerwire_worker_argv(backend: str, port: int, name: str, password_file: Path, basedir: Path,
                           *extra: str) -> list[str]:
    """The arguments of ``workerwire worker`` dialling a master on 127.0.0.1:*port*
    over *backend*, its password in a file (as an operator runs it)."""
    return ["worker", "--backend", backend, "--master", f"tcp:host=127.0.0.1:port={port}", "--name", name,
            "--password-file", str(password_file), "--basedir", str(basedir), *extra]


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def wait_until(check: Callable[[], T | None], timeout: float, what: str,
                     describe: Callable[[], str] = lambda: "") -> T:
    """Look at *check* every :data:`POLL_INTERVAL` s from the reactor until it returns
    something other than None; fail with :class:`HarnessError` after *timeout* seconds."""
    reactor = _reactor()
    deadline = reactor.seconds() + timeout
    done: Deferred[T] = Deferred()

    def look() -> None:
        try:
            value = check()
        except Exception as e:
            loop.stop()
            done.errback(e)
            return
        if value is not None:
            loop.stop()
            done.callback(value)
        elif reactor.seconds() > deadline:
            loop.stop()
            detail = describe()
            done.errback(HarnessError(f"timed out after {timeout:g} s waiting for {what}"
                                      + (f"\n{detail}" if detail else "")))

    loop = LoopingCall(look)
    loop.clock = reactor
    loop.start(POLL_INTERVAL, now=True)
    return await done


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} is missing)"
    return f"last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:])


class _Process(protocol.ProcessProtocol):
    """A child process whose output is kept and whose end is a Deferred."""

    def __init__(self, on_output: Callable[[], None] | None = None) -> None:
        self.output = bytearray()
        self.ended: Deferred[int | None] = Deferred()
        self.running = True
        self.on_output = on_output

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if self.on_output is not None:
            self.on_output()

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.running = False
        self.ended.callback(getattr(reason.value, "exitCode", None))

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


async def _stop_process(process: _Process, transport: Any, grace: float, what: str) -> None:
    """SIGTERM, then SIGKILL after *grace* seconds; wait (bounded) for the end."""
    if not process.running:
        return
    reactor = _reactor()
    transport.signalProcess("TERM")
    kill = reactor.callLater(grace, lambda: process.running and transport.signalProcess("KILL"))
    try:
        await wait_until(lambda: True if not process.running else None, grace + 15, f"{what} to exit")
    finally:
        if kill.active():
            kill.cancel()


async def _run(argv: Sequence[str], cwd: Path, what: str, timeout: float = START_TIMEOUT) -> str:
    """Run a command to its end (bounded); its output, or :class:`HarnessError`."""
    reactor = _reactor()
    d = getProcessOutputAndValue(argv[0], list(argv[1:]), env=dict(os.environ), path=str(cwd), reactor=reactor)
    timer = reactor.callLater(timeout, d.cancel)
    try:
        out, err, code = await d
    finally:
        if timer.active():
            timer.cancel()
    text = (out + err).decode("utf-8", "replace")
    if code != 0:
        raise HarnessError(f"{what} exited with {code}:\n{text}")
    return text


@dataclass(frozen=True)
class Builder:
    """One builder of the master.

    :ivar steps: Python source of a list of build steps, evaluated in
        ``master.cfg`` where ``steps``, ``util`` and ``os`` are imported (as in a
        hand-written one), e.g. ``"[steps.ShellCommand(command=['make'])]"``.
    :ivar workers: the names of the workers it may run on.
    """

    name: str
    workers: str | Sequence[str]
    steps: str

    def worker_names(self) -> list[str]:
        return [self.workers] if isinstance(self.workers, str) else list(self.workers)


@dataclass
class StepResult:
    """One step of a finished build, from the master's database.

    :ivar logs: log name -> its lines as Buildbot stores them (stream logs
        such as ``stdio`` prefix each line with ``o`` stdout, ``e`` stderr or
        ``h`` header).
    """

    number: int
    name: str
    result: int | None
    state: str
    logs: dict[str, list[str]] = field(default_factory=dict)
    log_types: dict[str, str] = field(default_factory=dict)

    @property
    def result_name(self) -> str:
        return RESULT_NAMES[self.result] if self.result is not None else "unfinished"

    def log_text(self, name: str, streams: str = "oe") -> str:
        """A log's text; for a stream log only the lines of *streams* (``o``, ``e``, ``h``), prefix removed."""
        lines = self.logs[name]
        if self.log_types.get(name) == "s":
            lines = [line[1:] for line in lines if line[:1] in streams]
        return "".join(line + "\n" for line in lines)


@dataclass
class BuildResult:
    """A finished build: its result and its steps, in order."""

    builder: str
    number: int
    result: int
    state: str
    steps: list[StepResult]

    @property
    def result_name(self) -> str:
        return RESULT_NAMES[self.result]

    def step(self, name: str) -> StepResult:
        """The step called *name* (Buildbot names repeated steps ``name_1``, ``name_2``...)."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"build {self.builder}#{self.number} has no step {name!r}; steps: "
                       f"{', '.join(s.name for s in self.steps)}")

    def summary(self) -> list[tuple[str, str]]:
        """``(step name, result name)`` of every step: what two workers must agree on."""
        return [(s.name, s.result_name) for s in self.steps]


class BuildbotMaster:
    """A Buildbot master in a subprocess (see the module docstring).

    :param basedir: the master's directory (created).
    :param workers: worker name -> password.
    :param builders: the builders, each with its own scheduler.
    :param extra_config: Python source appended to ``master.cfg`` (``c`` is the config dict).
    :param protocol: the Buildbot protocol workers dial (``c['protocols']`` key), on
        :attr:`worker_port`; changes always come over pb, on :attr:`pb_port`.
    """

    def __init__(self, basedir: Path, workers: dict[str, str], builders: Sequence[Builder],
                 extra_config: str = "", protocol: str = "pb"):
        self.basedir = Path(basedir).absolute()
        self.workers = dict(workers)
        self.builders = list(builders)
        self.extra_config = extra_config
        self.protocol = protocol
        self.pb_port = free_port()
        self.worker_port = self.pb_port if protocol == "pb" else free_port()
        self.change_password = uuid.uuid4().hex
        self._process: _Process | None = None
        self._transport: Any = None
        self._log_seen = 0

    @property
    def log_path(self) -> Path:
        return self.basedir / "twistd.log"

    @property
    def db_path(self) -> Path:
        return self.basedir / "state.sqlite"

    def master_cfg(self) -> str:
        """The ``master.cfg`` this harness writes."""
        workers = ",\n    ".join(f"worker.Worker({n!r}, {p!r})" for n, p in self.workers.items())
        schedulers = ",\n    ".join(
            f"schedulers.SingleBranchScheduler(name={'on-' + b.name!r}, "
            f"change_filter=util.ChangeFilter(category={b.name!r}), treeStableTimer=None, builderNames=[{b.name!r}])"
            for b in self.builders)
        builders = ",\n    ".join(
            f"util.BuilderConfig(name={b.name!r}, workernames={b.worker_names()!r}, "
            f"factory=util.BuildFactory({b.steps}))" for b in self.builders)
        return textwrap.dedent("""\
            # Written by tests/buildbot_master.py.  No web UI: c['www'] stays unset
            # (c['www'] = None crashes Buildbot 4.3 at start).
            import os
            from buildbot.plugins import changes, schedulers, steps, util, worker

            c = BuildmasterConfig = {{}}
            c['title'] = 'workerwire test master'
            c['buildbotURL'] = 'http://127.0.0.1/'
            c['buildbotNetUsageData'] = None
            c['db'] = {{'db_url': 'sqlite:///state.sqlite'}}
            c['logCompressionMethod'] = 'raw'
            c['protocols'] = {protocols}
            c['workers'] = [
                {workers}
            ]
            c['change_source'] = [changes.PBChangeSource(user={user!r}, passwd={password!r})]
            c['schedulers'] = [
                {schedulers}
            ]
            c['builders'] = [
                {builders}
            ]
            """).format(protocols=repr(self._protocols()), workers=workers, user=_CHANGE_USER,
                        password=self.change_password, schedulers=schedulers,
                        builders=builders) + self.extra_config + "\n"

    def _protocols(self) -> dict[str, dict[str, object]]:
        # Buildbot's pb takes an endpoint string, its msgpack protocol a port number.
        protocols: dict[str, dict[str, object]] = {"pb": {"port": f"tcp:{self.pb_port}:interface=127.0.0.1"}}
        if self.protocol != "pb":
            protocols[self.protocol] = {"port": self.worker_port}
        return protocols

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """``create-master``, then ``start --nodaemon``; return once the master runs (bounded by *timeout*)."""
        self.basedir.mkdir(parents=True, exist_ok=True)
        await _run(self._buildbot("create-master", "--quiet", str(self.basedir)), self.basedir.parent,
                   "buildbot create-master", timeout)
        (self.basedir / "master.cfg").write_text(self.master_cfg())
        await _run(self._buildbot("checkconfig", str(self.basedir)), self.basedir, "buildbot checkconfig", timeout)
        self._process = _Process()
        self._transport = _reactor().spawnProcess(
            self._process, sys.executable, self._buildbot("start", "--nodaemon", str(self.basedir)),
            env=dict(os.environ), path=str(self.basedir))
        await self.wait_for_log("BuildMaster is running", timeout)

    def _buildbot(self, *args: str) -> list[str]:
        return buildbot_argv(*args)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def wait_for_log(self, text: str, timeout: float) -> None:
        """Wait until the master's ``twistd.log`` holds *text*; fail early if the master exited."""

        def check() -> bool | None:
            if text in self.log_text():
                return True
            if self._process is not None and not self._process.running:
                raise HarnessError(f"the master exited while waiting for {text!r}:\n{self._process.text}\n"
                                   f"{_tail(self.log_path)}")
            return None

        await wait_until(check, timeout, f"{text!r} in the master's log", lambda: _tail(self.log_path))

    async def wait_for_worker(self, name: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until worker *name* is attached (the master logged that it is ready)."""
        await self.wait_for_log(f"Worker {name} attached", timeout)

    async def send_change(self, category: str, properties: dict[str, Any] | None = None) -> None:
        """Send a change as ``buildbot sendchange`` does (PB ``addChange`` through the PBChangeSource).

        Its category names the builder to run (each builder's scheduler filters on it); its branch
        and revision are unset, so source steps check out what they are configured with; its
        project is unique (``harness-<random>``)."""
        reactor = _reactor()
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", self.pb_port, factory)
        try:
            remote = await factory.login(UsernamePassword(_CHANGE_USER.encode(), self.change_password.encode()))
            await remote.callRemote("addChange", {
                # Buildbot shares one source stamp between changes that agree on branch, revision,
                # repository, project and codebase (and takes the build's properties from its change):
                # a project of its own keeps each change's properties with its build.
                "project": f"harness-{uuid.uuid4().hex}", "repository": "",
                "who": "harness <harness@example.invalid>", "files": [],
                "comments": f"build {category}", "branch": None, "revision": None, "category": category,
                "when": None, "properties": dict(properties or {}), "revlink": "", "src": None,
            })
        finally:
            factory.disconnect()

    async def run_build(self, builder: str, timeout: float = BUILD_TIMEOUT) -> BuildResult:
        """Trigger one build of *builder* and return it once finished (bounded by *timeout*)."""
        token = uuid.uuid4().hex
        await self.send_change(builder, {"harness_token": token})
        build_id = await wait_until(lambda: self._finished_build(token), timeout,
                                    f"the build of {builder!r} to finish",
                                    lambda: self._describe(builder))
        return self._read_build(build_id)

    def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if not self.db_path.exists():
            return []
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "no such table" in str(e):
                return []  # the master is writing or creating it: look again later
            raise
        finally:
            db.close()

    def _finished_build(self, token: str) -> int | None:
        rows = self._query(
            "SELECT b.id, p.property_value FROM builds b JOIN buildrequests r ON b.buildrequestid = r.id "
            "JOIN buildset_properties p ON p.buildsetid = r.buildsetid "
            "WHERE p.property_name = 'harness_token' AND p.property_value LIKE ? AND b.complete_at IS NOT NULL "
            "ORDER BY b.id DESC", f"%{token}%")
        for build_id, value in rows:
            if json.loads(value)[0] == token:  # stored as [value, source]
                return int(build_id)
        return None

    def _describe(self, builder: str) -> str:
        rows = self._query("SELECT b.number, b.state_string, b.results FROM builds b JOIN builders x "
                           "ON b.builderid = x.id WHERE x.name = ?", builder)
        return f"builds of {builder}: {rows}\n{_tail(self.log_path)}"

    def _read_build(self, build_id: int) -> BuildResult:
        ((number, state, results, builder),) = self._query(
            "SELECT b.number, b.state_string, b.results, x.name FROM builds b JOIN builders x "
            "ON b.builderid = x.id WHERE b.id = ?", build_id)
        steps = []
        for step_id, step_number, name, step_results, step_state in self._query(
                "SELECT id, number, name, results, state_string FROM steps WHERE buildid = ? ORDER BY number",
                build_id):
            step = StepResult(step_number, name, step_results, step_state)
            for log_id, log_name, log_type in self._query(
                    "SELECT id, name, type FROM logs WHERE stepid = ? ORDER BY id", step_id):
                chunks = self._query("SELECT content, compressed FROM logchunks WHERE logid = ? "
                                     "ORDER BY first_line", log_id)
                lines = "".join(_chunk_text(content, compressed) for content, compressed in chunks).split("\n")
                step.logs[log_name] = lines[:-1]  # every chunk ends with a newline
                step.log_types[log_name] = log_type
            steps.append(step)
        return BuildResult(builder, number, results, state, steps)

    async def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after *grace* seconds; return once it exited."""
        if self._process is not None:
            await _stop_process(self._process, self._transport, grace, "the Buildbot master")


def _chunk_text(content: Any, compressed: int) -> str:
    if compressed:
        raise HarnessError(f"log chunk compressed with method {compressed}; the harness sets "
                           "c['logCompressionMethod'] = 'raw'")
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
    return text if text.endswith("\n") else text + "\n"


class WorkerProcess:
    """A worker process connected to a :class:`BuildbotMaster`'s pb port."""

    def __init__(self, kind: str, basedir: Path, argv: list[str], create: list[list[str]] | None = None):
        self.kind = kind
        self.basedir = Path(basedir).absolute()
        self.argv = argv
        self.create = create or []
        self._process: _Process | None = None
        self._transport: Any = None

    @classmethod
    def stock(cls, basedir: Path, port: int, name: str, password: str) -> "WorkerProcess":
        """An unmodified ``buildbot-worker`` (``create-worker``, then ``start --nodaemon``)."""
        basedir = Path(basedir).absolute()
        return cls("buildbot-worker", basedir, buildbot_worker_argv("start", "--nodaemon", str(basedir)),
                   [buildbot_worker_argv("create-worker", "--quiet", str(basedir), f"127.0.0.1:{port}", name,
                                         password)])

    @classmethod
    def workerwire(cls, basedir: Path, port: int, name: str, password: str, backend: str = "pb",
                   *extra: str) -> "WorkerProcess":
        """``workerwire worker --backend BACKEND`` (the password in a file, as an operator would)."""
        basedir = Path(basedir).absolute()
        password_file = basedir.parent / f"{basedir.name}.password"
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        return cls("workerwire", basedir, [sys.executable, "-m", "workerwire_app", *workerwire_worker_argv(
            backend, port, name, password_file, basedir, *extra)])

    @property
    def output(self) -> str:
        """What the process wrote to stdout and stderr so far."""
        text = self._process.text if self._process is not None else ""
        log = self.basedir / "twistd.log"
        return text + (("\n" + log.read_text(errors="replace")) if log.exists() else "")

    async def start(self) -> None:
        """Create the worker directory if needed, then start the process."""
        self.basedir.parent.mkdir(parents=True, exist_ok=True)
        for argv in self.create:
            await _run(argv, self.basedir.parent, f"{self.kind} create")
        self._process = _Process()
        self._transport = _reactor().spawnProcess(self._process, self.argv[0], self.argv, env=dict(os.environ),
                                                  path=str(self.basedir.parent))

    async def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after *grace* seconds; return once it exited."""
        if self._process is not None:
            await _stop_process(self._process, self._transport, grace, f"the {self.kind} worker")
