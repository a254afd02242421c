"""``workerwire exec``: a master and a worker in one process, one command, its exit status.

The master listens on the backend's loopback port (an ephemeral port on
127.0.0.1 for network backends) with freshly generated credentials; the
worker dials it over the same backend, exactly as a remote worker would, and
runs the command with the ``shell`` command in the current directory.  Its
stdout and stderr reach this process's stdout and stderr as they arrive.

Exit status: the command's exit code; ``128 + N`` if signal N killed it (as
a shell reports it); ``2`` for a usage error (such as an unknown backend);
``255`` if workerwire itself failed while the command ran (like ``ssh``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sys
from dataclasses import dataclass
from typing import IO, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from workerwire import LinkOptions, Update, load_backend
from workerwire.errors import BackendLoadFailed, BackendNotFound, WorkerwireError

from .asyncutil import TimedOut, wait_for
from .config import ConfigErrors, MasterConfig, ProtocolConfig, WorkerConfig
from .daemon import on_signal
from .master import Master
from .output import OutputWriter
from .remote_command import RemoteCommand, failure_dict
from .worker_runtime import WorkerRuntime

__all__ = ["ExecOptions", "run_exec", "DEFAULT_BACKEND"]

_log = Logger()

#: The backend ``workerwire exec`` uses unless told otherwise.
DEFAULT_BACKEND = "pb"
#: Seconds the embedded worker has to log in.
CONNECT_TIMEOUT = 30.0

_KILLED = re.compile(r"process killed by signal (\d+)")


@dataclass
class ExecOptions:
    """What ``workerwire exec`` was asked to do."""

    command: list[str]
    backend: str = DEFAULT_BACKEND
    json: bool = False
    env: dict[str, str] | None = None
    timeout: float | None = None


class _Printer:
    """Streams updates to stdout/stderr (or as JSON lines to stdout)."""

    def __init__(self, reactor: Any, as_json: bool, stdout: IO[bytes], stderr: IO[bytes]):
        self.as_json = as_json
        self.stdout = stdout
        self.stderr = stderr
        self.writer = OutputWriter(reactor)
        self.killed_by: int | None = None
        #: Called once if stdout or stderr stops taking output (e.g. ``| head`` exited).
        self.on_broken: Any = None

    def __call__(self, updates: list[Update]) -> Deferred[None]:
        """Queue the output; the result fires when the terminal has caught up."""
        for key, value in updates:
            if key == "header" and isinstance(value, str):
                m = _KILLED.search(value)
                if m:
                    self.killed_by = int(m.group(1))
            if self.as_json:
                line = json.dumps({"update": key, "value": _jsonable(value)}, ensure_ascii=False) + "\n"
                self.writer.write(self.stdout, line.encode("utf-8"))
            elif key == "stdout" and isinstance(value, str):
                self.writer.write(self.stdout, value.encode("utf-8", "surrogateescape"))
            elif key == "stderr" and isinstance(value, str):
                self.writer.write(self.stderr, value.encode("utf-8", "surrogateescape"))
        if self.writer.broken is not None and self.on_broken is not None:
            on_broken, self.on_broken = self.on_broken, None
            on_broken()
        return self.writer.room()

    def finish(self, record: dict[str, Any]) -> None:
        if self.as_json:
            self.writer.write(self.stdout, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self.writer.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


async def run_exec(reactor: Any, opts: ExecOptions, stdout: IO[bytes] | None = None,
                   stderr: IO[bytes] | None = None) -> int:
    """Run ``opts.command`` through a loopback master and worker; return the exit status."""
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr.buffer
    try:
        backend = load_backend(opts.backend)
    except (BackendNotFound, BackendLoadFailed) as e:
        print(f"workerwire exec: {e}", file=sys.stderr)
        return 2
    if not opts.command:
        print("workerwire exec: no command given; usage: workerwire exec [--backend NAME] [--json] -- CMD ...",
              file=sys.stderr)
        return 2
    name, password = "exec", secrets.token_urlsafe(24)
    # Both ends live in this process: a dead peer is impossible, so no keepalive.
    options = LinkOptions(keepalive_interval=None)
    config = MasterConfig(
        path="<workerwire exec>",
        protocols={backend.name: ProtocolConfig(backend.name, backend, backend.loopback_port(), options)},
        workers={name: WorkerConfig(name, password, (backend.name,), (("exec", "."),))},
    )
    master = Master(config, reactor)
    printer = _Printer(reactor, opts.json, stdout, stderr)
    connector = None
    try:
        await master.start()
        address = master.addresses()[backend.name]["address"]
        runtime = WorkerRuntime(os.getcwd(), reactor)
        connector = backend.create_connector(runtime, address, name, password, options, reactor)
        connector.start()
        try:
            conn = await wait_for(master.whenAttached(name), CONNECT_TIMEOUT, reactor)
        except TimedOut:
            why = getattr(connector, "last_error", None)
            raise WorkerwireError(f"the worker did not log in over {backend.name} within {CONNECT_TIMEOUT:g} s"
                                  + (f": {why}" if why else "")) from None
        target = RemoteCommand(printer)
        args = {"command": list(opts.command), "workdir": ".", "env": dict(opts.env or {}),
                "timeout": opts.timeout, "want_stdout": True, "want_stderr": True, "logEnviron": False}
        await conn.remoteStartCommand(target, "exec", "1", "shell", args)
        interrupted: list[int] = []

        def interrupt(signum: int) -> None:
            if interrupted:
                return
            interrupted.append(signum)
            ensureDeferred(_interrupt(conn, signal.Signals(signum).name))

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            on_signal(reactor, signum, lambda s=signum: interrupt(s))
        printer.on_broken = lambda: interrupt(signal.SIGPIPE)
        result = await target.done
        status = _status(result.rc, result.failure, printer.killed_by, interrupted)
        printer.finish({"complete": True, "rc": result.rc, "exit_status": status,
                        "failure": failure_dict(result.failure)})
        if result.failure is not None:
            print(f"workerwire exec: the command failed: {result.failure}", file=sys.stderr)
        return status
    except (WorkerwireError, ConfigErrors) as e:
        printer.finish({"complete": False, "failure": failure_dict(e)})
        print(f"workerwire exec: {e}", file=sys.stderr)
        return 255
    finally:
        if connector is not None:
            await connector.stop()
        await master.stop()


async def _interrupt(conn: Any, signame: str) -> None:
    try:
        await conn.remoteInterruptCommand("exec", "1", f"interrupted by {signame}")
    except WorkerwireError as e:
        _log.warn("interrupting the command failed: {why}", why=e)


def _status(rc: int | None, failure: BaseException | None, killed_by: int | None, interrupted: list[int]) -> int:
    if failure is not None or rc is None:
        return 255
    if rc == -1 and interrupted:
        return 128 + interrupted[0]
    if rc == -1 and killed_by is not None:
        return 128 + killed_by
    if 0 <= rc <= 255:
        return rc
    return 255
