"""``workerwire exec``: a master and a worker in one process, one command, its exit status.

The master listens on the backend's loopback port (an ephemeral port on
127.0.0.1 for network backends) with freshly generated credentials; the
worker dials it over the same backend, exactly as a remote worker would, and
runs the command with the ``shell`` command in the current directory.  Its
stdout and stderr reach this process's stdout and stderr as they arrive,
byte for byte; this process's stdin (unless it is a terminal, or ``-n``) is
read to its end first and given to the command as its stdin.

Exit status: see :mod:`workerwire_app.command_output` (the command's exit
code, ``128 + N`` for a signal, ``255`` if workerwire failed); ``2`` for a
usage error (such as an unknown backend).
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from typing import IO, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from workerwire import LinkOptions, load_backend
from workerwire.errors import BackendLoadFailed, BackendNotFound, WorkerwireError

from .asyncutil import TimedOut, wait_for
from .command_output import SIGTERM_GRACE, CommandPrinter, ending, exit_status
from .config import ConfigErrors, MasterConfig, ProtocolConfig, WorkerConfig
from .daemon import on_signal
from .master import Master
from .remote_command import RemoteCommand, failure_dict
from .worker_runtime import WorkerRuntime

__all__ = ["ExecOptions", "run_exec", "DEFAULT_BACKEND", "MAX_STDIN"]

_log = Logger()

#: The backend ``workerwire exec`` uses unless told otherwise.
DEFAULT_BACKEND = "pb"
#: Seconds the embedded worker has to log in.
CONNECT_TIMEOUT = 30.0

#: Most bytes of stdin ``workerwire exec`` passes to the command.
MAX_STDIN = 64 * 1024 * 1024


@dataclass
class ExecOptions:
    """What ``workerwire exec`` was asked to do.

    :ivar stdin: bytes given to the command's standard input (all at once,
        Buildbot's ``initial_stdin``); ``None``: the command's stdin is empty.
    """

    command: list[str]
    backend: str = DEFAULT_BACKEND
    json: bool = False
    env: dict[str, str] | None = None
    timeout: float | None = None
    stdin: bytes | None = None


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
    printer = CommandPrinter(reactor, opts.json, stdout, stderr)
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
        args: dict[str, Any] = {"command": list(opts.command), "workdir": ".", "env": dict(opts.env or {}),
                "timeout": opts.timeout, "want_stdout": True, "want_stderr": True, "logEnviron": False,
                # Output as bytes, exactly as the command wrote it (a workerwire extension).
                "raw_output": True,
                # Interrupts and --timeout: SIGTERM first, SIGKILL 5 s later (Buildbot's default is SIGKILL at once).
                "sigtermTime": SIGTERM_GRACE}
        if opts.stdin:
            args["initial_stdin"] = opts.stdin
        await conn.remoteStartCommand(target, "exec", "1", "shell", args)
        interrupted = printer.ending.interrupted_by

        def interrupt(signum: int) -> None:
            if interrupted:
                return
            interrupted.append(signum)
            ensureDeferred(_interrupt(conn, signal.Signals(signum).name))

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            on_signal(reactor, signum, functools.partial(interrupt, signum))
        printer.on_broken = lambda: interrupt(signal.SIGPIPE)
        result = await target.done
        status = exit_status(result.rc, result.failure, printer.ending)
        why = ending(result.rc, result.failure, printer.ending)
        printer.finish({"complete": True, "rc": result.rc, "exit_status": status,
                        "failure": failure_dict(result.failure), "killed_by_signal": printer.ending.killed_by,
                        "reason": why})
        if why is not None:
            print(f"workerwire exec: {why}", file=sys.stderr)
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
