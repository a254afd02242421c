"""Helpers for the app's tests (no tests of its own).

* :class:`CliProcess` runs the real ``workerwire`` command as a child process
  through the reactor and lets a test wait, with a deadline, for text on its
  output or for its exit.
* :class:`EventLog` reads a master's ``--events`` file, polling it through
  the reactor (never ``time.sleep``).
* :func:`network_backends` names the installed backends that carry links over
  sockets (a master and a worker in separate processes need one).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from workerwire import backend_names, load_backend

REACTOR: Any = _reactor
DEADLINE = 20.0


def workerwire_argv() -> list[str]:
    """The installed ``workerwire`` console script (beside this Python), else ``python -m workerwire_app``."""
    script = Path(sys.executable).with_name("workerwire")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "workerwire_app"]


def network_backends() -> list[str]:
    """Installed backends whose links cross process boundaries."""
    out = []
    for name in backend_names():
        try:
            if load_backend(name).network:
                out.append(name)
        except Exception:
            continue
    return out


def require_network_backend() -> list[str]:
    names = network_backends()
    if not names:
        pytest.fail(f"needs a network backend (a master and workers in separate processes); installed backends "
                    f"are {', '.join(backend_names()) or 'none'}, all in-process")
    return names


async def sleep(seconds: float) -> None:
    await task.deferLater(REACTOR, seconds, lambda: None)


async def until(cond: Callable[[], object], what: str, timeout: float = DEADLINE, step: float = 0.02) -> None:
    """Poll *cond* through the reactor until it is true; fail after *timeout* seconds."""
    deadline = REACTOR.seconds() + timeout
    while not cond():
        if REACTOR.seconds() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await sleep(step)


class CliProcess(ProcessProtocol):
    """One ``workerwire`` child process; output is collected as it arrives."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
                 name: str = "workerwire", program: list[str] | None = None, keep_stdout: bool = True,
                 stdin: bytes = b""):
        self.args = args
        #: Written to the process's stdin, which is then closed.
        self.stdin = stdin
        self.keep_stdout = keep_stdout
        #: Bytes received on stdout (kept in :attr:`stdout` only if *keep_stdout*).
        self.stdout_bytes = 0
        self.program = workerwire_argv() if program is None else program
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.name = name
        self.stdout = b""
        self.stderr = b""
        self.status: int | None = None
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []
        self.transport: Any = None

    def start(self) -> "CliProcess":
        argv = self.program + self.args
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        REACTOR.spawnProcess(self, argv[0], argv, env=self.env, path=self.cwd)
        # By default an empty stdin, as under a service manager (``workerwire exec`` and ``run`` read a
        # stdin that is not a terminal).
        if self.stdin:
            self.transport.write(self.stdin)
        self.transport.closeStdin()
        return self

    @property
    def pid(self) -> int | None:
        return None if self.transport is None else self.transport.pid

    # ProcessProtocol
    def outReceived(self, data: bytes) -> None:
        self.stdout_bytes += len(data)
        if self.keep_stdout:
            self.stdout += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        self._check()

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        sig = getattr(value, "signal", None)
        self.status = -sig if sig else (getattr(value, "exitCode", 0) or 0)
        self._check()

    def _check(self) -> None:
        for item in list(self._waiters):
            cond, d = item
            if cond():
                self._waiters.remove(item)
                d.callback(None)

    async def _wait(self, cond: Callable[[], bool], what: str, timeout: float) -> None:
        if cond():
            return
        d: Deferred[None] = Deferred()
        entry = (cond, d)
        self._waiters.append(entry)
        call = REACTOR.callLater(timeout, lambda: None if d.called else d.errback(Failure(AssertionError(
            f"{self.name}: {what} did not happen within {timeout:g} s\n--- stdout:\n{self.text_out[-3000:]}"
            f"\n--- stderr:\n{self.text_err[-3000:]}"))))
        try:
            await d
        finally:
            if call.active():
                call.cancel()
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def wait_output(self, text: str, stream: str = "stdout", timeout: float = DEADLINE) -> None:
        """Wait until *text* appeared on *stream*."""
        data = text.encode()
        await self._wait(lambda: data in (self.stdout if stream == "stdout" else self.stderr),
                         f"{text!r} on {stream}", timeout)

    async def wait_stdout_bytes(self, n: int, timeout: float = DEADLINE) -> None:
        """Wait until at least *n* bytes arrived on stdout."""
        await self._wait(lambda: self.stdout_bytes >= n, f"{n} bytes on stdout", timeout)

    async def wait_exit(self, timeout: float = DEADLINE) -> int:
        """Wait for the process to end; its exit status (``-N`` if signal N killed it)."""
        await self._wait(lambda: self.status is not None, "exit", timeout)
        assert self.status is not None
        return self.status

    def signal(self, signame: str) -> None:
        if self.status is None and self.transport is not None:
            self.transport.signalProcess(signame)

    @property
    def text_out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def text_err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


class Processes:
    """Starts CLI processes and kills whatever is left at the end of a test."""

    def __init__(self) -> None:
        self.started: list[CliProcess] = []

    def start(self, args: list[str], **kw: Any) -> CliProcess:
        proc = CliProcess(args, **kw).start()
        self.started.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.status is None and proc.pid is not None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass


@pytest.fixture
def processes() -> Iterable[Processes]:
    procs = Processes()
    yield procs
    procs.cleanup()


class EventLog:
    """A master's ``--events`` file, read as it grows."""

    def events(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def matching(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == event and all(e.get(k) == v for k, v in fields.items())]

    def __init__(self, path: Path, writer: "CliProcess | None" = None):
        self.path = path
        #: The process writing the file: if it exits, waiting stops at once.
        self.writer = writer

    async def wait(self, event: str, timeout: float = DEADLINE, count: int = 1, **fields: Any) -> dict[str, Any]:
        """Wait until *count* events named *event* with *fields* are in the file; the last one."""
        clock = REACTOR.seconds
        deadline = clock() + timeout
        while True:
            found = self.matching(event, **fields)
            if len(found) >= count:
                return found[count - 1]
            exited = self.writer is not None and self.writer.status is not None
            if clock() > deadline or exited:
                seen = "\n".join(json.dumps(e) for e in self.events()[-30:])
                why = f"{self.writer.name} exited with {self.writer.status}" if exited else f"within {timeout:g} s"
                detail = f"\n--- its stderr:\n{self.writer.text_err[-3000:]}" if self.writer is not None else ""
                raise AssertionError(f"no {count}x {event} {fields} in {self.path}: {why}; last events:\n{seen}"
                                     + detail)
            await sleep(0.05)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class InProcess:
    """A :class:`~workerwire_app.master.Master` and worker runtimes in this process (null backend by default)."""

    def __init__(self, tmp_path: Path, workers: dict[str, str], backend: str = "null",
                 builders: Iterable[str] = ("b1",), jobs: Iterable[dict[str, Any]] = (),
                 ping_timeout: float = 1.0, events: bool = True, port: str | None = None):
        from workerwire_app.events import EventLog as AppEventLog

        self.tmp_path = tmp_path
        self.backend = load_backend(backend)
        self.port = port or self.backend.loopback_port()
        self.builders = list(builders)
        self.jobs = list(jobs)
        self.ping_timeout = ping_timeout
        self.config_path = tmp_path / "master.toml"
        self.events_path = tmp_path / "events.jsonl"
        self.events = EventLog(self.events_path)
        self._app_events = AppEventLog(str(self.events_path) if events else None)
        self.master: Any = None
        self.connectors: list[Any] = []
        self.runtimes: dict[str, Any] = {}
        self.write(workers)

    def config_data(self, workers: dict[str, str], port: str | None = None) -> dict[str, Any]:
        return {
            "master": {"duplicate_ping_timeout": self.ping_timeout},
            "protocols": {self.backend.name: {"port": port or self.port, "keepalive_interval": False}},
            "workers": [{"name": n, "password": p, "builders": self.builders} for n, p in workers.items()],
            "jobs": self.jobs,
        }

    def write(self, workers: dict[str, str], port: str | None = None) -> None:
        """Write the config file (TOML) for *workers*."""
        self.config_path.write_text(to_toml(self.config_data(workers, port)), encoding="utf-8")

    async def start(self) -> Any:
        from workerwire_app.config import load_config
        from workerwire_app.master import Master

        self.master = Master(load_config(str(self.config_path)), REACTOR, self._app_events)
        await self.master.start()
        return self.master

    @property
    def address(self) -> str:
        return self.master.addresses()[self.backend.name]["address"]

    def worker(self, name: str, password: str, address: str | None = None, **runtime_kw: Any) -> Any:
        """Start a worker runtime and its connector (fast backoff); returns the connector."""
        from workerwire import Backoff, LinkOptions
        from workerwire_app.worker_runtime import WorkerRuntime

        runtime = WorkerRuntime(str(self.tmp_path / f"worker-{name}"), REACTOR, **runtime_kw)
        self.runtimes[name] = runtime
        connector = self.backend.create_connector(
            runtime, address or self.address, name, password, LinkOptions(keepalive_interval=None), REACTOR,
            Backoff(initial=0.05, maximum=0.2, jitter=0.1))
        connector.start()
        self.connectors.append(connector)
        return connector

    async def stop(self) -> None:
        for connector in self.connectors:
            await connector.stop()
        for runtime in self.runtimes.values():
            await runtime.interrupt_all("test over", timeout=5)
        if self.master is not None:
            await self.master.stop()
        self._app_events.close()


def to_toml(data: dict[str, Any]) -> str:
    """A tiny TOML writer for the configs the tests build (tables, arrays of tables, scalars)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        raise TypeError(v)

    for key, section in data.items():
        if isinstance(section, dict) and all(isinstance(v, dict) for v in section.values()) and section:
            for sub, table in section.items():
                lines.append(f"[{key}.{json.dumps(sub)}]")
                lines.extend(f"{k} = {value(v)}" for k, v in table.items())
        elif isinstance(section, dict):
            lines.append(f"[{key}]")
            lines.extend(f"{k} = {value(v)}" for k, v in section.items())
        elif isinstance(section, list):
            for table in section:
                lines.append(f"[[{key}]]")
                lines.extend(f"{k} = {value(v)}" for k, v in table.items())
        else:
            lines.insert(0, f"{key} = {value(section)}")
    return "\n".join(lines) + "\n"
