"""workerwire's own worker daemon (``workerwire worker``, the app) against a workerwire master.

The daemon is started as a user would start it (``python -m workerwire_app
worker --backend NAME ...``) and gets the same Buildbot-style ``shell``
command as ``buildbot-worker`` (see :mod:`bench.sides.bbw`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from typing import Any

from ..profiling import ENV
from .base import Child, child_env, remove_tree, within
from .bbw import shell_args
from .ww import PASSWORD, WwLink, start_listener

__all__ = ["available", "open_app_link"]

NAME = "appw"


def available() -> bool:
    return importlib.util.find_spec("workerwire_app") is not None


async def open_app_link(reactor: Any, backend_name: str, timeout: float) -> WwLink:
    backend, master, listener = start_listener(backend_name, reactor)
    reg = await listener.updateRegistration(NAME, PASSWORD, backend.loopback_port())
    assert reg is not None
    basedir = tempfile.mkdtemp(prefix="workerwire-bench-app-")
    cleanup: list[Any] = [listener.stopListening, lambda: remove_tree(basedir)]
    profile_dir = os.environ.get(ENV)
    prefix = ["-m", "cProfile", "-o", os.path.join(profile_dir, f"worker-app-{backend_name}-{os.getpid()}.prof")] \
        if profile_dir else []
    argv = [sys.executable, *prefix, "-m", "workerwire_app", "worker", "--backend", backend_name, "--master",
            reg.getAddress(), "--name", NAME, "--password-env", "BENCH_WORKER_PASSWORD", "--basedir", basedir,
            "--log-level", "warn"]
    env = {**child_env(), "BENCH_WORKER_PASSWORD": PASSWORD}
    child = Child("workerwire worker")
    reactor.spawnProcess(child, argv[0], argv, env=env, path=basedir)
    cleanup.append(child.terminate)
    try:
        conn = await within(master.whenConnection(NAME), reactor, timeout, "workerwire worker to log in")
        link = WwLink(conn, "shell", shell_args)
        link.worker_pid = child.pid
        link.cleanup = cleanup
        await within(conn.remoteSetBuilderList([("b1", "b1")]), reactor, timeout, "setBuilderList")
    except BaseException:
        for step in reversed(cleanup):
            await step()
        raise
    return link
