"""A master's metrics and status from the inside: keepalive round trips, the
control socket's ownership, and the link observer (``workerwire.observe``).

Real listeners and worker connectors on loopback, in this process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import pytest_twisted
from prometheus_client import generate_latest
from twisted.web.client import Agent, readBody

from test_app_support import (REACTOR, EventLog, InProcess, Processes, network_backends, processes,  # noqa: F401
                              require_network_backend, to_toml, until)
from workerwire import observe
from workerwire.transfer_files import LocalFileReader, LocalFileWriter
from workerwire_app.config import ConfigErrors
from workerwire_app.remote_command import RemoteCommand


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


async def _scrape(address: str) -> dict[str, float]:
    """``/metrics`` over HTTP: ``{'name{labels}': value}``."""
    response = await Agent(REACTOR).request(b"GET", f"http://{address}/metrics".encode())
    assert response.code == 200
    text = (await readBody(response)).decode("utf-8")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


#: Framing, headers, logins and keepalives a few commands add to their payload on a link, at most.
OVERHEAD = 256 * 1024


@pytest.mark.parametrize("backend", ["pb", "amp", "msgpack"])
@pytest_twisted.ensureDeferred
async def test_link_and_transfer_bytes_reach_the_metrics_and_the_status(tmp_path: Path, backend: str) -> None:
    """A command with known output, an upload and a download of known sizes over a
    real loopback link: the link counters (master and worker side) moved by at
    least the payload and not absurdly more; the transfer counters by exactly it."""
    assert backend in network_backends()
    env = InProcess(tmp_path, {"w1": "pw1"}, backend=backend)
    config = env.config_data({"w1": "pw1"}, "tcp:port=0:interface=127.0.0.1")
    config["master"]["metrics"] = "tcp:0:interface=127.0.0.1"
    env.config_path.write_text(to_toml(config))
    await env.start()
    try:
        connector = env.worker("w1", "pw1")
        conn = await env.master.whenAttached("w1")
        address = env.master.metrics_address()
        before = await _scrape(address)
        worker_before = (connector.link_bytes.received, connector.link_bytes.sent)
        label = f'{{backend="{backend}"}}'

        output = 300_000
        target, started = await env.master.run_command(conn, "b1", "out-1", {
            "command": [sys.executable, "-c", f"import sys; sys.stdout.write('x' * {output})"],
            "workdir": "build", "want_stdout": True, "want_stderr": True})
        assert started and (await target.done).rc == 0

        size = 400_000
        source = tmp_path / "worker-w1" / "b1" / "build" / "up.bin"
        source.write_bytes(os.urandom(size))
        uploaded, downloaded = tmp_path / "uploaded.bin", tmp_path / "worker-w1" / "b1" / "build" / "down.bin"
        upload = RemoteCommand()
        await conn.remoteStartCommand(upload, "b1", "up-1", "uploadFile", {
            "workdir": "build", "workersrc": "up.bin", "writer": LocalFileWriter(str(uploaded)),
            "blocksize": 32768, "maxsize": None})
        assert (await upload.done).rc == 0 and uploaded.read_bytes() == source.read_bytes()
        download = RemoteCommand()
        await conn.remoteStartCommand(download, "b1", "down-1", "downloadFile", {
            "workdir": "build", "workerdest": "down.bin", "reader": LocalFileReader(str(uploaded)),
            "blocksize": 32768, "maxsize": None})
        assert (await download.done).rc == 0 and downloaded.read_bytes() == source.read_bytes()

        after = await _scrape(address)
        received = after[f"workerwire_link_received_bytes_total{label}"] - before[
            f"workerwire_link_received_bytes_total{label}"]
        sent = after[f"workerwire_link_sent_bytes_total{label}"] - before[f"workerwire_link_sent_bytes_total{label}"]
        assert output + size <= received <= output + size + OVERHEAD, received
        assert size <= sent <= size + OVERHEAD, sent
        assert after['workerwire_transfer_bytes_total{direction="upload"}'] - before[
            'workerwire_transfer_bytes_total{direction="upload"}'] == size
        assert after['workerwire_transfer_bytes_total{direction="download"}'] - before[
            'workerwire_transfer_bytes_total{direction="download"}'] == size

        # The worker's end counted the same traffic the other way round.
        worker_received = connector.link_bytes.received - worker_before[0]
        worker_sent = connector.link_bytes.sent - worker_before[1]
        assert size <= worker_received <= size + OVERHEAD, worker_received
        assert output + size <= worker_sent <= output + size + OVERHEAD, worker_sent

        (entry,) = env.master.status()["workers"]
        assert entry["bytes_received"] >= output + size and entry["bytes_sent"] >= size
        assert (entry["transfer_uploaded"], entry["transfer_downloaded"]) == (size, size)
    finally:
        await env.stop()
