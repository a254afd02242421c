"""An amqp worker's orphaned commands: kept across a reconnect to the same
master, interrupted at once when the worker now serves another master of the pool.

Real masters (:class:`workerwire_app.master.Master`) and a real worker runtime
in this process, on the tests' private broker.  The other master knows
nothing of a command the first one ran (the first already failed it with
ConnectionLost), so the worker must not let it run on for its
``lost_link_grace``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest_twisted

from test_app_support import InProcess, until
from workerwire.errors import ConnectionLost
from workerwire_app.remote_command import RemoteCommand

#: Long enough that an orphan interrupted before it was interrupted by the reconnect.
LONG_GRACE = 120.0
#: The orphan outlives this grace only if the reconnect kept it.
GRACE = 3.0


def _pool_env(tmp_path: Path, pool: str, master: str) -> InProcess:
    home = tmp_path / master
    home.mkdir()
    return InProcess(home, {"w1": "pw1"}, backend="amqp", port=f"amqp:pool={pool}:master={master}")


async def _running(env: InProcess, command: str) -> tuple[Any, RemoteCommand, list[Any]]:
    conn = await env.master.whenAttached("w1")
    updates: list[Any] = []
    target = RemoteCommand(updates.extend)
    await conn.remoteStartCommand(target, "b1", "c1", "shell", {"command": command})
    await until(lambda: any(k == "stdout" and "ready" in v for k, v in updates), "'ready' on stdout")
    return conn, target, updates


@pytest_twisted.ensureDeferred
async def test_an_orphan_is_interrupted_when_the_worker_now_serves_another_master(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    a = _pool_env(tmp_path, "orphans-x", "ma")
    b = _pool_env(tmp_path, "orphans-x", "mb")
    await a.start()
    try:
        a.worker("w1", "pw1", lost_link_grace=LONG_GRACE)
        runtime = a.runtimes["w1"]
        _, target, _ = await _running(a, f"echo $$ > {pidfile}; echo ready; exec sleep 600")
        pid = int(pidfile.read_text())
        await b.start()
        await a.master.stop()  # the worker's master goes; the pool's other master takes its next login
        a.master = None
        result = await target.done
        assert isinstance(result.failure, ConnectionLost)
        await b.master.whenAttached("w1")
        await until(lambda: not runtime.running(), "the orphan interrupted on the login to another master",
                    timeout=LONG_GRACE / 4)
        await until(lambda: not _alive(pid), "the orphan's process gone", timeout=30)
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_an_orphan_runs_to_its_end_across_a_reconnect_to_the_same_master(tmp_path: Path) -> None:
    done = tmp_path / "done"
    a = _pool_env(tmp_path, "orphans-y", "ma")
    await a.start()
    try:
        a.worker("w1", "pw1", lost_link_grace=GRACE)
        runtime = a.runtimes["w1"]
        conn, target, _ = await _running(a, f"echo ready; sleep {GRACE + 2:g}; touch {done}")
        conn.loseConnection()
        result = await target.done
        assert isinstance(result.failure, ConnectionLost)
        await a.master.whenAttached("w1")  # logged in again, to the same master
        await until(done.exists, "the orphan's natural end", timeout=GRACE + 30)
        # Its last command ran; the process's end reaches the runtime a moment later.
        await until(lambda: not runtime.running(), "the orphan's process to end", timeout=30)
    finally:
        await a.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
