"""A worker's commands outlive a lost link only while the link comes back to the same master.

The worker runtime keeps a command whose link was lost (an *orphan*) for its
``lost_link_grace``; when the link comes back to the same master, the orphan
runs to its natural end.  Here over pb: one address is one master, so a
reconnect to that address keeps the orphan.  (The other case, a link that
comes back to *another* master of an amqp pool, is
``tests/test_amqp_orphans.py`` and ``tests/test_amqp_failover.py``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted

from test_app_support import InProcess, until
from workerwire.errors import ConnectionLost
from workerwire_app.remote_command import RemoteCommand

#: The orphan outlives this grace only if the reconnect kept it.
GRACE = 3.0


@pytest_twisted.ensureDeferred
async def test_pb_orphan_runs_to_its_end_across_a_reconnect_to_the_same_master(tmp_path: Path) -> None:
    done = tmp_path / "done"
    env = InProcess(tmp_path, {"w1": "pw1"}, backend="pb")
    await env.start()
    try:
        env.worker("w1", "pw1", lost_link_grace=GRACE)
        conn = await env.master.whenAttached("w1")
        runtime = env.runtimes["w1"]
        updates: list[Any] = []
        target = RemoteCommand(updates.extend)
        # Ends on its own well after the grace: only a kept orphan gets there.
        await conn.remoteStartCommand(target, "b1", "c1", "shell",
                                      {"command": f"echo ready; sleep {GRACE + 2:g}; touch {done}"})
        await until(lambda: any(k == "stdout" and "ready" in v for k, v in updates), "'ready' on stdout")
        conn.loseConnection()
        result = await target.done
        assert isinstance(result.failure, ConnectionLost)
        await env.master.whenAttached("w1")  # the worker logged in again, to the same master
        await until(done.exists, "the orphan's natural end", timeout=GRACE + 30)
        assert not runtime.running()
    finally:
        await env.stop()
