"""A real Buildbot master runs builds on workerwire workers (issue 14).

Every test runs the PyPI ``buildbot`` master as a daemon (``buildbot start``,
sqlite, no web UI) with a stock ``buildbot-worker`` over Buildbot's own pb and
``workerwire worker`` processes over amp and over pb-through-workerwire,
configured with ``worker.WorkerwireWorker`` in the master.cfg.  What a
workerwire worker's builds end as is compared with what the stock pb worker's
identical builds end as in the same master.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test

from test_app_support import Processes
from test_buildbot_plugin_harness import BuildbotMaster, ProbeLink, WorkerSpec, free_port

# buildbot.process.results
SUCCESS, FAILURE, EXCEPTION, RETRY, CANCELLED = 0, 2, 4, 5, 6


@pytest_twisted.async_yield_fixture
async def master(tmp_path: Path) -> AsyncIterator[BuildbotMaster]:
    procs = Processes()
    probe = ProbeLink()
    port = await probe.listen()
    bb = BuildbotMaster(tmp_path / "master", procs, probe, port)
    try:
        yield bb
    finally:
        procs.cleanup()
        bb.kill()
        await probe.port.stopListening()


def three_workers() -> list[WorkerSpec]:
    return [
        WorkerSpec("linux-1", "pw1", "stock-pb"),
        WorkerSpec("mac-1", "pw2", "ww-amp", free_port()),
        WorkerSpec("bsd-1", "pw3", "ww-pb", free_port()),
    ]


async def start_all(master: BuildbotMaster, workers: list[WorkerSpec]) -> None:
    await master.create()
    master.write_config(workers)
    await master.start()
    for spec in workers:
        await master.start_any_worker(spec)
    for spec in workers:
        await master.probe.wait("worker-connected", name=spec.name)


def step(build: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in build["steps"] if s["name"] == name)


@async_test
async def test_builds_on_stock_pb_amp_and_pb_through_workerwire_side_by_side(master: BuildbotMaster) -> None:
    workers = three_workers()
    await start_all(master, workers)

    quick = {}
    for spec in workers:
        quick[spec.name] = build = await master.build(f"quick-{spec.name}")
        assert build["worker"] == spec.name
        hello = step(build, "hello")
        assert hello["results"] == SUCCESS, build
        assert f"hello from {spec.name} on line 1" in hello["logs"]["stdio"]
        assert "line 2" in hello["logs"]["stdio"]
        fails = step(build, "fails")
        assert fails["results"] == FAILURE, build
        assert "about to fail" in fails["logs"]["stdio"]
        assert "program finished with exit code 3" in fails["logs"]["stdio"]
        assert step(build, "after")["results"] == SUCCESS
        assert build["results"] == FAILURE

    stock = quick["linux-1"]
    for name in ("mac-1", "bsd-1"):
        assert [(s["name"], s["results"]) for s in quick[name]["steps"]] == \
            [(s["name"], s["results"]) for s in stock["steps"]]

    # An interrupted step (the web UI's "stop build"): ends as it does on the stock pb worker.
    stopped = {}
    for spec in workers:
        await master.probe.call("force", builder=f"slow-{spec.name}")
        started = await master.probe.wait("output", builder=f"slow-{spec.name}", line="sleeping")
        await master.probe.call("stop-build", buildid=started["buildid"], reason="stopped by the test")
        stopped[spec.name] = build = await master.probe.wait("build-finished", builder=f"slow-{spec.name}")
        assert "sleeping" in step(build, "sleeps")["logs"]["stdio"]
    assert stopped["linux-1"]["results"] == CANCELLED
    for name in ("mac-1", "bsd-1"):
        assert stopped[name]["results"] == stopped["linux-1"]["results"]
        assert step(stopped[name], "sleeps")["results"] == step(stopped["linux-1"], "sleeps")["results"]

    # Worker info in Buildbot's data API, as for the pb worker.
    listed = {w["name"]: w for w in (await master.probe.call("workers"))["workers"]}
    for spec in workers:
        info = listed[spec.name]["workerinfo"]
        assert listed[spec.name]["connected_to"], listed[spec.name]
        assert info.get("version"), info
        assert info.get("host"), info
