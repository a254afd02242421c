"""The master service: duplicate logins, reloads, jobs, shutdown requests, start failures.

Driven in-process over the ``null`` backend (the end-to-end tests repeat the
important cases with real processes over network backends).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from test_app_support import REACTOR, InProcess

#: What a reload that changed no [[jobs]] reports about them.
NO_JOB_CHANGES = {"jobs_added": [], "jobs_removed": [], "jobs_changed": []}
from workerwire.conformance.relay import make_interposer
from workerwire.errors import DuplicateWorker, LoginRefused
from workerwire_app.config import ConfigErrors, load_config
from workerwire_app.master import Master


@pytest_twisted.ensureDeferred
async def test_a_second_login_while_the_first_answers_is_refused(tmp_path: Path) -> None:
    env = InProcess(tmp_path, {"w1": "pw1"})
    await env.start()
    try:
        env.worker("w1", "pw1")
        first = await env.master.whenAttached("w1")
        second = env.worker("w1", "pw1")
        with pytest.raises(DuplicateWorker) as e:
            await second.whenConnected()
        assert "already connected" in str(e.value) and "refusing the second login" in str(e.value)
        assert env.master.connection("w1") is first and first.isConnected
        refused = await env.events.wait("refused", worker="w1")
        assert "answers" in refused["reason"]
        await second.stop()
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_a_dead_old_connection_is_dropped_for_the_new_login(tmp_path: Path) -> None:
    env = InProcess(tmp_path, {"w1": "pw1"}, ping_timeout=0.3)
    await env.start()
    try:
        relay = await make_interposer(env.backend, env.address, REACTOR)
        env.worker("w1", "pw1", address=relay.address)
        old = await env.master.whenAttached("w1")
        relay.blackhole()  # the old link is half-open: nothing passes, nobody is told
        env.worker("w1", "pw1")
        await env.events.wait("attached", worker="w1", count=2)
        new = env.master.connection("w1")
        assert new is not None and new is not old and not old.isConnected and new.isConnected
        # The old connection's detach ran before the new one was accepted.
        sequence = [e["event"] for e in env.events.events() if e.get("worker") == "w1"]
        assert sequence == ["connected", "attached", "disconnected", "connected", "attached"]
        gone = await env.events.wait("disconnected", worker="w1")
        assert "stopped answering" in gone["reason"]
        await relay.close()
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_reload_disconnects_only_the_worker_whose_password_changed(tmp_path: Path) -> None:
    from workerwire_app.worker_daemon import PasswordSource, WorkerDaemon
    from workerwire_app.worker_runtime import WorkerRuntime
    from workerwire import LinkOptions

    env = InProcess(tmp_path, {"w1": "pw1", "w2": "pw2"})
    await env.start()
    pwfile = tmp_path / "w2.pw"
    pwfile.write_text("pw2\n")
    daemon = WorkerDaemon(env.backend, env.address, "w2", PasswordSource(file=str(pwfile)),
                          WorkerRuntime(str(tmp_path / "w2"), REACTOR), LinkOptions(keepalive_interval=None), REACTOR)
    try:
        env.worker("w1", "pw1")
        daemon.start()
        w1 = await env.master.whenAttached("w1")
        w2 = await env.master.whenAttached("w2")
        # Rotate w2's password on both sides.
        pwfile.write_text("new-secret\n")
        env.write({"w1": "pw1", "w2": "new-secret"})
        summary = await env.master.reload()
        assert summary == {"added": [], "removed": [], "changed": ["w2"], "unchanged": ["w1"],
                           **NO_JOB_CHANGES}
        await env.events.wait("disconnected", worker="w2")
        await env.events.wait("attached", worker="w2", count=2)
        new_w2 = env.master.connection("w2")
        assert new_w2 is not None and new_w2 is not w2 and not w2.isConnected
        assert env.master.connection("w1") is w1 and w1.isConnected
        assert not env.events.matching("disconnected", worker="w1")
    finally:
        await daemon.stop()
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_reload_adds_removes_and_keeps_workers(tmp_path: Path) -> None:
    env = InProcess(tmp_path, {"keep": "k", "gone": "g"})
    await env.start()
    try:
        env.worker("keep", "k")
        gone_connector = env.worker("gone", "g")
        keep = await env.master.whenAttached("keep")
        await env.master.whenAttached("gone")
        env.write({"keep": "k", "new": "n"})
        summary = await env.master.reload()
        assert summary == {"added": ["new"], "removed": ["gone"], "changed": [], "unchanged": ["keep"],
                           **NO_JOB_CHANGES}
        event = await env.events.wait("disconnected", worker="gone")
        assert event["reason"] == "it was removed from the config"
        with pytest.raises(LoginRefused):
            await gone_connector.whenConnected()  # its next login is refused
        env.worker("new", "n")
        await env.master.whenAttached("new")
        assert env.master.connection("keep") is keep and keep.isConnected
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_reload_with_a_changed_port_moves_the_worker(tmp_path: Path) -> None:
    env = InProcess(tmp_path, {"w1": "pw1"}, port="null:first")
    await env.start()
    try:
        env.worker("w1", "pw1", address="null:first")
        old = await env.master.whenAttached("w1")
        env.write({"w1": "pw1"}, port="null:second")
        summary = await env.master.reload()
        assert summary is not None and summary["changed"] == ["w1"]
        event = await env.events.wait("disconnected", worker="w1")
        assert "port" in event["reason"] and not old.isConnected
        assert env.master.addresses()["null"]["address"] == "null:second"
        env.worker("w1", "pw1", address="null:second")
        await env.events.wait("attached", worker="w1", count=2)
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_an_invalid_config_on_reload_keeps_the_running_one(tmp_path: Path) -> None:
    env = InProcess(tmp_path, {"w1": "pw1"})
    await env.start()
    try:
        env.worker("w1", "pw1")
        conn = await env.master.whenAttached("w1")
        env.config_path.write_text("[[workers]]\nname = 'w1'\n")
        assert await env.master.reload() is None
        event = await env.events.wait("reload_failed")
        assert any("workers[0].password: missing" in err for err in event["errors"])
        assert conn.isConnected and env.master.config.workers["w1"].password == "pw1"
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_jobs_run_on_attach_and_are_reported(tmp_path: Path) -> None:
    jobs = [{"name": "hello", "command": "echo hello from $(basename $(dirname $PWD))"},
            {"name": "fails", "command": ["false"], "workers": ["w1"]}]
    env = InProcess(tmp_path, {"w1": "pw1"}, jobs=jobs)
    await env.start()
    try:
        env.worker("w1", "pw1")
        hello = await env.events.wait("job_finished", job="hello")
        fails = await env.events.wait("job_finished", job="fails")
        assert hello["rc"] == 0 and hello["output_tail"] == "hello from hello\n" and hello["failure"] is None
        assert fails["rc"] == 1
        attached = env.events.matching("attached", worker="w1")[0]
        assert attached["builders"] == ["b1", "fails", "hello"]
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_a_worker_asking_to_shut_down_is_shut_down(tmp_path: Path) -> None:
    env = InProcess(tmp_path, {"w1": "pw1"})
    await env.start()
    try:
        asked: Deferred[None] = Deferred()
        connector = env.worker("w1", "pw1", on_shutdown=lambda: asked.callback(None))
        await env.master.whenAttached("w1")
        await connector.requestShutdown()
        await asked
        await env.events.wait("shutdown_requested", worker="w1")
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_stops_the_start_and_leaves_nothing_open(tmp_path: Path) -> None:
    (tmp_path / "blocker").mkdir()
    blocker = InProcess(tmp_path / "blocker", {"x": "y"}, port="null:busy", events=False)
    await blocker.start()
    env = InProcess(tmp_path, {"w1": "pw1"}, port="null:busy")
    try:
        with pytest.raises(ConfigErrors) as e:
            await env.start()
        [err] = e.value.errors
        assert err.key == "protocols.null.port" and "'busy' is already in use" in err.problem
        assert err.file == str(env.config_path)
        assert env.master.addresses() == {} and env.master._listeners == {}
    finally:
        await blocker.stop()


@pytest_twisted.ensureDeferred
async def test_no_password_reaches_the_log_or_the_event_file(tmp_path: Path) -> None:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        from twisted.logger import formatEvent

        lines.append(formatEvent(event) + json.dumps({k: str(v) for k, v in event.items()}))

    globalLogPublisher.addObserver(observe)
    env = InProcess(tmp_path, {"w1": "sekrit-one", "w2": "sekrit-two"})
    try:
        await env.start()
        env.worker("w1", "sekrit-one")
        bad = env.worker("w2", "sekrit-wrong")
        await env.master.whenAttached("w1")
        with pytest.raises(LoginRefused):
            await bad.whenConnected()
        env.write({"w1": "sekrit-three", "w2": "sekrit-two"})
        await env.master.reload()
        await env.events.wait("disconnected", worker="w1")
    finally:
        await env.stop()
        globalLogPublisher.removeObserver(observe)
    everything = "\n".join(lines) + env.events_path.read_text()
    assert "w1" in everything
    assert "sekrit" not in everything


def test_the_master_refuses_logins_until_started(tmp_path: Path) -> None:
    env = InProcess(tmp_path, {"w1": "pw1"}, events=False)
    master = Master(load_config(str(env.config_path)), REACTOR)
    d = master.newConnection(object(), "w1")  # type: ignore[arg-type]
    failure: list[Any] = []
    d.addErrback(failure.append)
    assert failure and failure[0].check(LoginRefused)
    assert "not accepting" in str(failure[0].value)


@pytest_twisted.ensureDeferred
async def test_stop_disconnects_every_worker(tmp_path: Path) -> None:
    env = InProcess(tmp_path, {"w1": "pw1", "w2": "pw2"})
    await env.start()
    try:
        env.worker("w1", "pw1")
        env.worker("w2", "pw2")
        c1 = await env.master.whenAttached("w1")
        c2 = await env.master.whenAttached("w2")
        await env.master.stop()
        assert not c1.isConnected and not c2.isConnected
        for name in ("w1", "w2"):
            assert env.events.matching("disconnected", worker=name, reason="the master is stopping")
        assert env.events.events()[-1]["event"] == "stopped"
    finally:
        env.master = None
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_reload_with_new_link_options_reconnects_that_protocols_workers(tmp_path: Path) -> None:
    from test_app_support import to_toml

    env = InProcess(tmp_path, {"w1": "pw1"}, port="null:fixed")
    await env.start()
    try:
        env.worker("w1", "pw1", address="null:fixed")
        old = await env.master.whenAttached("w1")
        data = env.config_data({"w1": "pw1"})
        data["protocols"]["null"]["keepalive_interval"] = 30
        env.config_path.write_text(to_toml(data))
        summary = await env.master.reload()
        assert summary is not None and summary["changed"] == ["w1"]
        event = await env.events.wait("disconnected", worker="w1")
        assert event["reason"] == "protocol null was reconfigured" and not old.isConnected
        await env.events.wait("attached", worker="w1", count=2)
        new = env.master.connection("w1")
        assert new is not None and new.keepalive_interval == 30
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_a_master_without_workers_still_listens(tmp_path: Path) -> None:
    env = InProcess(tmp_path, {})
    await env.start()
    try:
        ready = await env.events.wait("ready")
        assert ready["workers"] == [] and ready["protocols"]["null"]["address"].startswith("null:")
        env.write({"late": "pw"})
        await env.master.reload()
        env.worker("late", "pw")
        await env.master.whenAttached("late")
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_stop_fails_the_waiters_of_workers_that_never_attached(tmp_path: Path) -> None:
    from workerwire.errors import ConnectionLost

    env = InProcess(tmp_path, {"w1": "pw1", "w2": "pw2"})
    await env.start()
    try:
        env.worker("w1", "pw1")
        await env.master.whenAttached("w1")
        never = env.master.whenAttached("w2")  # no worker w2 ever connects
        assert not never.called
    finally:
        await env.stop()
    assert never.called, "stop() must not leave a whenAttached waiter hanging"
    with pytest.raises(ConnectionLost, match="w2"):
        await never
    with pytest.raises(ConnectionLost, match="stopped"):
        await env.master.whenAttached("w1")
