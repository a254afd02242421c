"""A real Buildbot master runs builds on workerwire workers (issue 14).

Every test runs the PyPI ``buildbot`` master as a daemon (``buildbot start``,
sqlite, no web UI) with a stock ``buildbot-worker`` over Buildbot's own pb and
``workerwire worker`` processes over amp and over pb-through-workerwire,
configured with ``worker.WorkerwireWorker`` in the master.cfg.  What a
workerwire worker's builds end as is compared with what the stock pb worker's
identical builds end as in the same master.
"""

from __future__ import annotations

import socket
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


def three_workers(extra: str = "") -> list[WorkerSpec]:
    return [
        WorkerSpec("linux-1", "pw1", "stock-pb", extra=extra),
        WorkerSpec("mac-1", "pw2", "ww-amp", free_port(), extra=extra),
        WorkerSpec("bsd-1", "pw3", "ww-pb", free_port(), extra=extra),
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
    stock_info = listed["linux-1"]["workerinfo"]
    for spec in workers:
        info = listed[spec.name]["workerinfo"]
        assert listed[spec.name]["connected_to"], listed[spec.name]
        assert info.get("version"), info
        assert set(info) == set(stock_info), (info, stock_info)


async def wait_text(proc: Any, text: str, timeout: float = 60.0) -> None:
    """*text* on the process's stdout or stderr (loggers differ in where they write)."""
    await proc._wait(lambda: text in proc.text_out or text in proc.text_err, f"{text!r} in its output", timeout)


@async_test
async def test_file_download_upload_and_directory_upload_on_every_kind_of_worker(master: BuildbotMaster) -> None:
    workers = three_workers()
    await start_all(master, workers)
    payload = "".join(f"line {i} of the file sent to every worker\n" for i in range(20000))   # ~840 KB
    (master.basedir / "to-workers.txt").write_text(payload, encoding="utf-8")
    for spec in workers:
        build = await master.build(f"transfer-{spec.name}")
        assert build["results"] == SUCCESS, build
        assert (master.basedir / "uploads" / f"{spec.name}.txt").read_text(encoding="utf-8") == payload
        assert (master.basedir / "uploads" / f"{spec.name}-dir" / "e" / "f.txt").read_text() == "deep\n"


@async_test
async def test_reconfig_adds_removes_moves_and_repasswords_workers(master: BuildbotMaster) -> None:
    stock, mac1 = WorkerSpec("linux-1", "pw1", "stock-pb"), WorkerSpec("mac-1", "pw2", "ww-amp", free_port())
    await start_all(master, [stock, mac1])

    mac2 = WorkerSpec("mac-2", "pw4", "ww-amp", mac1.port)        # same backend and port: shares mac-1's listener
    bsd1 = WorkerSpec("bsd-1", "pw3", "ww-pb", free_port())
    mac1_new = WorkerSpec("mac-1", "pw2-new", "ww-amp", mac1.port)
    master.write_config([stock, mac1_new, mac2, bsd1])
    await master.reconfig()                                          # the real `buildbot reconfig`

    for spec in (mac2, bsd1):
        master.start_worker(spec)
        await master.probe.wait("worker-connected", name=spec.name)
        build = await master.build(f"quick-{spec.name}")
        assert f"hello from {spec.name}" in step(build, "hello")["logs"]["stdio"]
    ports = (await master.probe.call("ports"))["ports"]
    assert ports["mac-1"] == ports["mac-2"] == mac1.port

    # As for pb, a new password leaves the live connection up; the next login needs it.
    assert not master.probe.matching("worker-disconnected", name="mac-1")
    await master.build("quick-mac-1")
    master.worker_procs["mac-1"].signal("KILL")
    await master.probe.wait("worker-disconnected", name="mac-1")
    old_pw = master.start_worker(mac1)                              # still the old password
    await wait_text(old_pw, "refused")
    assert len(master.probe.matching("worker-connected", name="mac-1")) == 1
    (master.basedir.parent / "mac-1.password").write_text("pw2-new", encoding="utf-8")
    await master.probe.wait("worker-connected", name="mac-1", count=2)   # the worker re-reads its password file
    build = await master.build("quick-mac-1", count=2)
    assert step(build, "hello")["results"] == SUCCESS

    # A second reconfig: bsd-1 moves from pb to amp on a new port, mac-2 is removed.
    bsd1_moved = WorkerSpec("bsd-1", "pw3", "ww-amp", free_port())
    master.write_config([stock, mac1_new, bsd1_moved])
    await master.reconfig()
    await master.probe.wait("worker-disconnected", name="mac-2")      # removed: Buildbot disconnects it
    await wait_text(master.worker_procs["mac-2"], "refused")           # and refuses its next logins
    with pytest.raises(OSError):                                       # bsd-1's old pb port closed with it
        socket.create_connection(("127.0.0.1", bsd1.port), timeout=5).close()
    master.worker_procs["bsd-1"].signal("KILL")                        # its live pb connection stays until then
    await master.probe.wait("worker-disconnected", name="bsd-1")
    master.start_worker(bsd1_moved)
    await master.probe.wait("worker-connected", name="bsd-1", count=2)
    build = await master.build("quick-bsd-1", count=2)
    assert "hello from bsd-1" in step(build, "hello")["logs"]["stdio"]
    assert (await master.probe.call("ports"))["ports"]["bsd-1"] == bsd1_moved.port


@async_test
async def test_master_restart_every_worker_rejoins_and_builds_again(master: BuildbotMaster) -> None:
    workers = three_workers()
    await start_all(master, workers)
    for spec in workers:
        await master.build(f"quick-{spec.name}")

    await master.stop()                                              # `buildbot stop`: returns once it exited
    for spec in workers[1:]:                                         # the workerwire ports are closed
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", spec.port), timeout=5).close()

    await master.start()
    for spec in workers:
        await master.probe.wait("worker-connected", name=spec.name, count=2)
    for spec in workers:
        build = await master.build(f"quick-{spec.name}", count=2)
        assert step(build, "hello")["results"] == SUCCESS
        assert f"hello from {spec.name}" in step(build, "hello")["logs"]["stdio"]


@async_test
async def test_worker_killed_mid_build_ends_the_build_as_for_pb_and_notify_on_missing_fires(
        master: BuildbotMaster) -> None:
    workers = three_workers(extra=", missing_timeout=2, notify_on_missing=['ops@example.org']")
    await start_all(master, workers)
    ended = {}
    for spec in workers:
        await master.probe.call("force", builder=f"slow-{spec.name}")
        await master.probe.wait("output", builder=f"slow-{spec.name}", line="sleeping")
        master.worker_procs[spec.name].signal("KILL")
        ended[spec.name] = await master.probe.wait("build-finished", builder=f"slow-{spec.name}")
        await master.probe.wait("worker-disconnected", name=spec.name)
    assert ended["linux-1"]["results"] == RETRY
    for name in ("mac-1", "bsd-1"):
        assert ended[name]["results"] == ended["linux-1"]["results"], ended[name]
        assert step(ended[name], "sleeps")["results"] == step(ended["linux-1"], "sleeps")["results"]
    for spec in workers:   # missing_timeout after the loss, Buildbot reports the worker missing to notify_on_missing
        missing = await master.probe.wait("worker-missing", name=spec.name)
        assert missing["notify"] == ["ops@example.org"], missing


@async_test
async def test_duplicate_login_is_refused_and_stop_worker_shuts_it_down(master: BuildbotMaster) -> None:
    stock, mac1 = WorkerSpec("linux-1", "pw1", "stock-pb"), WorkerSpec("mac-1", "pw2", "ww-amp", free_port())
    await start_all(master, [stock, mac1])
    first = master.worker_procs["mac-1"]

    second = master.start_worker(mac1)                              # same name while the first answers
    await wait_text(second, "already connected")
    second.signal("KILL")
    assert len(master.probe.matching("worker-connected", name="mac-1")) == 1
    build = await master.build("quick-mac-1")
    assert step(build, "hello")["results"] == SUCCESS

    # The web UI's "stop worker" (graceful shutdown): the workerwire worker process exits.
    await master.probe.call("stop-worker", name="mac-1")
    await master.probe.wait("worker-disconnected", name="mac-1")
    assert await first.wait_exit(60) == 0


@async_test
async def test_checkconfig_names_installed_backends_and_the_bad_port(master: BuildbotMaster) -> None:
    await master.create()
    master.write_config([WorkerSpec("mac-1", "pw", "ww-amp", 9990, extra=", keepalive_timeout=-1")])
    text = (master.basedir / "master.cfg").read_text()
    (master.basedir / "master.cfg").write_text(text.replace(
        "    worker.WorkerwireWorker('mac-1'",
        "    worker.WorkerwireWorker('x-1', 'pw', backend='nats', port='tcp:1'),\n"
        "    worker.WorkerwireWorker('x-2', 'pw', backend='amp', port='carrier-pigeon:9'),\n"
        "    worker.WorkerwireWorker('mac-1'"))
    proc = await master.check_config()
    out = proc.text_out + proc.text_err
    assert proc.status != 0
    assert "WorkerwireWorker 'x-1': no workerwire backend named 'nats'; installed: amp, " in out, out
    assert "WorkerwireWorker 'x-2': port 'carrier-pigeon:9' is not valid for backend 'amp'" in out, out
    assert "WorkerwireWorker 'mac-1': link options {'keepalive_timeout': -1}: keepalive_timeout must be positive" in out


@async_test
async def test_workers_sharing_a_port_with_different_link_options_stop_the_start_with_a_clear_error(
        master: BuildbotMaster) -> None:
    port = free_port()
    await master.create()
    master.write_config([WorkerSpec("mac-1", "pw1", "ww-amp", port, extra=", keepalive_interval=10"),
                         WorkerSpec("mac-2", "pw2", "ww-amp", port, extra=", keepalive_interval=20")])
    with pytest.raises(AssertionError, match="buildbot start .* exited 1"):
        await master.start()
    log = (master.basedir / "twistd.log").read_text(errors="replace")
    # Buildbot configures the workers in no fixed order: either one finds the other already there.
    shared = f"workers on amp port 'tcp:{port}:interface=127.0.0.1' share one listener and so need the same link options"
    assert (f"WorkerwireWorker 'mac-2': {shared}; already there: mac-1, with keepalive_interval=10 (this one: 20)"
            in log) or \
        (f"WorkerwireWorker 'mac-1': {shared}; already there: mac-2, with keepalive_interval=20 (this one: 10)" in log), \
        log[-3000:]
