"""An unmodified ``buildbot-worker`` (PyPI) against a workerwire master.

Over ``pb`` (buildbot-worker's default protocol) into the workerwire ``pb``
master, or over Buildbot's MessagePack-over-WebSocket dialect (``create-worker
--protocol msgpack_experimental_v7``) into the workerwire ``msgpack`` master.
The worker directory is made by buildbot-worker's own ``create-worker``; the
worker runs with ``buildbot-worker start --nodaemon`` (twistd in the
foreground, so the spawned pid is the worker) and gets a ``shell`` command with
Buildbot's arguments that runs :mod:`bench.printer`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

from .base import remove_tree, spawn, within
from .ww import PASSWORD, WwLink, start_listener

__all__ = ["open_bbw_link", "shell_args", "printer_argv", "buildbot_worker_argv", "PROTOCOL_OPTIONS"]

#: ``create-worker`` options that make a stock worker speak each backend's dialect.
PROTOCOL_OPTIONS = {"pb": [], "msgpack": ["--protocol", "msgpack_experimental_v7"]}

PRINTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "printer.py")


def printer_argv(nbytes: int) -> list[str]:
    return [sys.executable, PRINTER, str(nbytes)]


def shell_args(nbytes: int) -> dict[str, Any]:
    """A ``shell`` command's arguments as a Buildbot master sends them."""
    return {
        "workdir": "build", "command": printer_argv(nbytes), "env": {}, "want_stdout": True,
        "want_stderr": True, "logfiles": {}, "timeout": 600, "maxTime": None, "max_lines": None,
        "sigtermTime": None, "usePTY": False, "logEnviron": False, "initial_stdin": None,
        "interruptSignal": None,
    }


def buildbot_worker_argv() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "buildbot-worker")
    if os.path.exists(exe):
        return [exe]
    return [sys.executable, "-c", "import sys; from buildbot_worker.scripts.runner import run; run()"]


def available() -> bool:
    try:
        import buildbot_worker  # noqa: F401
    except ImportError:
        return False
    return True


async def open_bbw_link(reactor: Any, timeout: float, backend_name: str = "pb") -> WwLink:
    """A stock buildbot-worker logged in to a workerwire *backend_name* master
    (``pb`` or ``msgpack``), its builder ``b1`` set up."""
    backend, master, listener = start_listener(backend_name, reactor)
    reg = await listener.updateRegistration("bbw", PASSWORD, backend.loopback_port())
    assert reg is not None
    basedir = tempfile.mkdtemp(prefix="workerwire-bench-bbw-")
    cleanup: list[Any] = [listener.stopListening, lambda: remove_tree(basedir)]
    # Setup, before anything is measured: the worker's own create-worker.
    subprocess.run(
        [*buildbot_worker_argv(), "create-worker", "--quiet", "--log-count=2", "--keepalive=600",
         *PROTOCOL_OPTIONS[backend_name], basedir, f"127.0.0.1:{reg.getPort()}", "bbw", PASSWORD],
        check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    child = spawn("buildbot-worker", [*buildbot_worker_argv(), "start", "--nodaemon", basedir], cwd=basedir)
    cleanup.append(child.terminate)
    try:
        conn = await within(master.whenConnection("bbw"), reactor, timeout, "buildbot-worker to log in")
        link = WwLink(conn, "shell", shell_args)
        link.worker_pid = child.pid
        link.cleanup = cleanup
        await within(conn.remoteSetBuilderList([("b1", "b1")]), reactor, timeout, "setBuilderList")
    except BaseException:
        log = os.path.join(basedir, "twistd.log")
        if os.path.exists(log):
            with open(log, encoding="utf-8", errors="replace") as f:
                sys.stderr.write(f.read()[-4000:])
        for step in reversed(cleanup):
            await step()
        raise
    return link
