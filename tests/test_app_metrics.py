"""A master's metrics and status from the inside: keepalive round trips, the
control socket's ownership, and the link observer (``workerwire.observe``).

Real listeners and worker connectors on loopback, in this process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from prometheus_client import generate_latest

from test_app_support import EventLog, InProcess, Processes, processes, require_network_backend, to_toml, until  # noqa: F401
from workerwire import observe
from workerwire_app.config import ConfigErrors


def _config(env: InProcess, **protocol: object) -> None:
    env.config_path.write_text(to_toml({
        "protocols": {env.backend.name: {"port": "tcp:port=0:interface=127.0.0.1", **protocol}},
        "workers": [{"name": "w1", "password": "pw1"}],
    }))


@pytest_twisted.ensureDeferred
async def test_keepalive_round_trips_reach_the_status_and_the_histogram(tmp_path: Path) -> None:
    backend = require_network_backend()[0]
    env = InProcess(tmp_path, {"w1": "pw1"}, backend=backend)
    _config(env, keepalive_interval=0.2, keepalive_timeout=10)
    await env.start()
    try:
        env.worker("w1", "pw1")
        await env.master.whenAttached("w1")
        await until(lambda: env.master.status()["workers"][0].get("keepalive_rtt") is not None,
                    "a keepalive round trip")
        rtt = env.master.status()["workers"][0]["keepalive_rtt"]
        assert 0 <= rtt < 10
        text = generate_latest(env.master.metrics.registry).decode()
        count = next(line for line in text.splitlines()
                     if line.startswith(f'workerwire_keepalive_rtt_seconds_count{{backend="{backend}"}}'))
        assert float(count.rsplit(" ", 1)[1]) >= 1
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_a_second_master_on_the_same_control_socket_does_not_start(tmp_path: Path) -> None:
    backend = require_network_backend()[0]
    first = InProcess(tmp_path, {"w1": "pw1"}, backend=backend, events=False)
    _config(first)
    await first.start()
    second = InProcess(tmp_path, {"w1": "pw1"}, backend=backend, events=False)
    _config(second)
    try:
        with pytest.raises(ConfigErrors) as e:
            await second.start()
        assert [err.key for err in e.value.errors] == ["master.control_socket"]
        # The second master closed what it had opened; the first still serves.
        assert second.master.addresses() == {}
        assert (tmp_path / "state" / "control.sock").exists()
    finally:
        await first.stop()


@pytest_twisted.ensureDeferred
async def test_the_control_socket_of_a_killed_master_is_taken_over(tmp_path: Path, processes: Processes) -> None:
    backend = require_network_backend()[0]
    env = InProcess(tmp_path, {"w1": "pw1"}, backend=backend, events=False)
    _config(env)
    killed = processes.start(["master", "-c", str(env.config_path), "--events", str(tmp_path / "killed.jsonl")],
                             name="master")
    await EventLog(tmp_path / "killed.jsonl", killed).wait("ready")
    killed.signal("KILL")
    await killed.wait_exit()
    assert (tmp_path / "state" / "control.sock").exists()  # left behind
    await env.start()
    try:
        assert env.master.status()["workers"][0]["name"] == "w1"
    finally:
        await env.stop()


def test_an_observer_that_raises_does_not_stop_the_others() -> None:
    seen: list[float] = []

    class Broken:
        def keepalive_answered(self, owner: object, rtt: float) -> None:
            raise RuntimeError("observer bug")

    class Counting:
        def keepalive_answered(self, owner: object, rtt: float) -> None:
            seen.append(rtt)

    subs = [observe.observe(Broken()), observe.observe(Counting()), observe.observe(object())]
    try:
        observe.keepalive_answered(None, 0.25)
        observe.login_refused(None, "pb", "w1", "127.0.0.1:1", "wrong password")  # nobody implements it
    finally:
        for sub in subs:
            sub.unsubscribe()
    observe.keepalive_answered(None, 0.5)
    assert seen == [0.25]
