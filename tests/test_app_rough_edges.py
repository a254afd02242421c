"""The ten rough edges an operator hit (issue 16), one or more tests each.

Masters and workers are real: in this process over real loopback sockets
where the test drives the master's API (reload), separate ``workerwire``
processes where the operator's view (exit status, stderr, the events file) is
what is tested.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from test_app_support import (  # noqa: F401  (processes is a fixture)
    REACTOR, InProcess, Processes, processes, require_network_backend, to_toml, until, workerwire_argv)
from workerwire import LinkOptions, backend_names, load_backend
from workerwire.tls import add_client_options

PY = sys.executable
DOCS = Path(__file__).resolve().parent.parent / "docs" / "operating.md"


def _needs(backend: str) -> None:
    if backend not in backend_names():
        pytest.fail(f"backend {backend!r} is not installed (installed: {', '.join(backend_names())})")


class _Log:
    """Log lines (formatted) emitted while it is open."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        #: Lines of the master side only (not of the worker connectors in this process).
        self.master_lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        line = formatEvent(event) or ""
        self.lines.append(line)
        if event.get("log_level", LogLevel.info) >= LogLevel.info and not str(event.get("log_namespace", "")).startswith(("workerwire.base_worker", "workerwire_pb.worker",
                                                                "workerwire_amp.worker")):
            self.master_lines.append(line)

    def __enter__(self) -> "_Log":
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *_: Any) -> None:
        globalLogPublisher.removeObserver(self)


def _cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*workerwire_argv(), *args], capture_output=True, timeout=90, env=env, cwd=cwd,
                          input=stdin if stdin is not None else b"")


# -- 1. a reload that cannot be applied ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_1_reload_switches_a_port_to_tls_on_the_same_port(tmp_path: Path) -> None:
    from test_tls import PKI

    _needs("pb")
    pki = PKI(tmp_path)
    env = InProcess(tmp_path, {"w1": "pw1"}, backend="pb", port="tcp:port=0:interface=127.0.0.1")
    await env.start()
    try:
        env.worker("w1", "pw1")
        await env.master.whenAttached("w1")
        port = env.master.addresses()["pb"]["port"]
        tls_port = f"ssl:port={port}:interface=127.0.0.1:privateKey={pki.master[1]}:certKey={pki.master[0]}"
        env.write({"w1": "pw1"}, port=tls_port)
        summary = await env.master.reload()
        assert summary is not None and summary["changed"] == ["w1"]
        assert env.master.addresses()["pb"] == {"port": port, "address": f"tls:host=127.0.0.1:port={port}"}
        assert env.master.config.protocols["pb"].port == tls_port
        # A worker dialling TLS on that port now logs in; the plain one cannot any more.
        await env.events.wait("disconnected", worker="w1")
        for connector in env.connectors:
            await connector.stop()
        env.worker("w1", "pw1", address=add_client_options(env.master.addresses()["pb"]["address"], ca_file=pki.ca))
        conn = await env.master.whenAttached("w1")
        assert env.events.matching("connected", worker="w1")[-1]["tls"] is True
        assert env.master.status()["workers"][0]["tls"] is True and conn.isConnected
        assert not env.events.matching("reload_failed")
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_1_a_reload_whose_port_is_taken_fails_and_the_old_port_keeps_serving(tmp_path: Path) -> None:
    _needs("pb")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    env = InProcess(tmp_path, {"w1": "pw1", "w2": "pw2"}, backend="pb", port="tcp:port=0:interface=127.0.0.1")
    await env.start()
    try:
        env.worker("w1", "pw1")
        w1 = await env.master.whenAttached("w1")
        old = env.master.addresses()["pb"]
        running = env.master.config
        env.write({"w1": "pw1", "w2": "pw2"}, port=f"tcp:port={taken.getsockname()[1]}:interface=127.0.0.1")
        assert await env.master.reload() is None
        failed = await env.events.wait("reload_failed")
        assert "protocols.pb.port: cannot open the port" in failed["errors"][0]
        assert not env.events.matching("reloaded")
        # Nothing claims the new port: the running config, the old port, the connected worker.
        assert env.master.config is running and env.master.addresses()["pb"] == old
        assert w1.isConnected and env.master.connection("w1") is w1
        env.worker("w2", "pw2", address=old["address"])
        await env.master.whenAttached("w2")
    finally:
        taken.close()
        await env.stop()


# -- 2. a changed port: what the docs promise ----------------------------------------------


def test_2_the_docs_say_a_moved_worker_must_be_pointed_at_the_new_port() -> None:
    text = DOCS.read_text()
    assert "logs in on the new port" not in text
    row = next(line for line in text.splitlines() if line.startswith("| port of its protocol changed"))
    assert "--master" in row and "new port" in row


# -- 3. failed logins reach the events file; a protocol a worker may not use --------------------


@pytest_twisted.ensureDeferred
async def test_3_a_worker_on_a_protocol_it_may_not_use_is_told_so_and_not_throttled(tmp_path: Path) -> None:
    _needs("pb")
    _needs("amp")
    env = InProcess(tmp_path, {}, backend="pb", port="tcp:port=0:interface=127.0.0.1")
    env.config_path.write_text(to_toml({
        "protocols": {"pb": {"port": "tcp:port=0:interface=127.0.0.1"},
                      "amp": {"port": "tcp:port=0:interface=127.0.0.1"}},
        "workers": [{"name": "w1", "password": "pw1", "protocols": ["amp"]}],
    }))
    await env.start()
    try:
        with _Log() as log:
            for _ in range(5):  # beyond failed_login_grace (3): no delay, no throttling
                connector = env.worker("w1", "pw1")
                refused = await env.events.wait("login_refused", worker="w1", count=len(env.connectors))
                await connector.stop()
        assert refused["reason"] == "protocol_not_allowed" and refused["backend"] == "pb"
        assert "may not log in over pb; its protocols: amp" in refused["message"]
        assert not any("unknown worker" in line or "throttled" in line.lower() for line in log.lines)
        guard = env.master._listeners["pb"].login_guard
        assert guard.stats["refused"] == 0 and guard.stats["throttled"] == 0
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_3_unknown_worker_and_wrong_password_logins_are_events(tmp_path: Path) -> None:
    backend = require_network_backend()[0]
    env = InProcess(tmp_path, {"w1": "pw1"}, backend=backend, port="tcp:port=0:interface=127.0.0.1")
    await env.start()
    try:
        env.worker("stranger", "whatever")
        env.worker("w1", "not-pw1")
        stranger = await env.events.wait("login_refused", worker="stranger")
        wrong = await env.events.wait("login_refused", worker="w1")
        assert (stranger["reason"], wrong["reason"]) == ("unknown_worker", "wrong_password")
        assert stranger["peer"].startswith("127.0.0.1:") and stranger["backend"] == backend
        assert "not-pw1" not in env.events_path.read_text()
    finally:
        await env.stop()


# -- 4. a worker dialling the wrong port -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_4_a_worker_dialling_another_backends_port_is_told_what_to_check(tmp_path: Path,
                                                                                processes: Processes) -> None:
    _needs("pb")
    _needs("amp")
    env = InProcess(tmp_path, {"w1": "pw1"}, backend="pb", port="tcp:port=0:interface=127.0.0.1")
    await env.start()
    try:
        worker = processes.start(["worker", "--backend", "amp", "--master", env.address, "--name", "w1",
                                  "--password", "pw1", "--basedir", str(tmp_path / "w")], name="worker")
        await worker.wait_output("not logged in to", stream="stderr", timeout=30)
        assert "Check that it is the master's amp port" in worker.text_err
        assert "not a TLS port" in worker.text_err
        worker.signal("TERM")
        assert await worker.wait_exit() == 0
    finally:
        await env.stop()


@pytest.mark.parametrize("port_of,client", [("pb", "amp"), ("pb", "tls"), ("amp", "tls"), ("amp", "pb-ish")])
@pytest_twisted.ensureDeferred
async def test_4_the_master_says_what_a_client_on_the_wrong_port_speaks(tmp_path: Path, port_of: str,
                                                                        client: str) -> None:
    """A real client's first bytes: an amp worker's login box, a TLS ClientHello (both captured from
    this project's worker connectors), sent over a real socket to the other backend's port."""
    _needs(port_of)
    first = {
        "amp": b"\x00\x04_ask\x00\x011\x00\x08_command\x00\x05Hello" + b"\x00" * 80,
        "tls": b"\x16\x03\x01\x05\xfd\x01\x00\x05\xf9\x03\x03" + bytes(range(120)),
        "pb-ish": b"\x01\x80\x02\x82pb" + b"\x01" * 100,
    }[client]
    if port_of == "amp" and client == "pb-ish":
        first = b"\x01\x80\x02\x82pb" + b"\xff" * 400  # not an AMP key length: a protocol error at once
    env = InProcess(tmp_path, {"w1": "pw1"}, backend=port_of, port="tcp:port=0:interface=127.0.0.1")
    await env.start()
    try:
        with _Log() as log:
            port = env.master.addresses()[port_of]["port"]
            from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
            from twisted.internet.protocol import Protocol

            sender = Protocol()
            await connectProtocol(TCP4ClientEndpoint(REACTOR, "127.0.0.1", port), sender)
            sender.transport.write(first)
            await until(lambda: any("protocol error" in line for line in log.master_lines), "the protocol error")
            sender.transport.abortConnection()
        line = next(line for line in log.master_lines if "protocol error" in line)
        expected = {"amp": "the client speaks amp, but this port is the master's pb port",
                    "tls": f"it dialled a tls: address, but this {port_of} port is not a TLS port",
                    "pb-ish": "the client speaks pb, but this port is the master's amp port"}[client]
        assert expected in line, line
    finally:
        await env.stop()


# -- 5. one typo, one error ---------------------------------------------------------------------


def test_5_a_misspelt_password_key_is_reported_once(tmp_path: Path) -> None:
    from workerwire_app.config import ConfigErrors, load_config

    config = tmp_path / "master.toml"
    config.write_text(to_toml({
        "protocols": {"null": {"port": "null:0"}},
        "workers": [{"name": "w1", "pasword_file": "w1.pw"}],
        "jobs": [{"name": "smoke", "command": ["true"], "workers": ["w1"]}],
    }))
    with pytest.raises(ConfigErrors) as e:
        load_config(str(config))
    keys = [err.key for err in e.value.errors]
    assert keys == ["workers[0].pasword_file", "workers[0].password"]


# -- 6. keys table, --events, --check ----------------------------------------------------------


def test_6_every_key_the_config_accepts_is_in_the_docs_keys_table() -> None:
    from workerwire_app.config import _JOB_KEYS, _MASTER_KEYS, _WORKER_KEYS

    text = DOCS.read_text()
    table = text[text.index("\nKeys:\n"):text.index("### 2. Start the master")]
    for key in [*LinkOptions.names(), *_MASTER_KEYS, *_WORKER_KEYS, *_JOB_KEYS]:
        assert f"`{key}`" in table, f"{key} is missing from the keys table of docs/operating.md"


def test_6_events_into_a_missing_directory_is_one_line_and_status_2(tmp_path: Path) -> None:
    (tmp_path / "master.toml").write_text('[protocols.null]\nport = "null:0"\n')
    out = _cli("master", "-c", str(tmp_path / "master.toml"), "--events", str(tmp_path / "no" / "events.jsonl"))
    assert out.returncode == 2
    assert out.stderr.decode().strip() == (
        f"workerwire master: --events: cannot open '{tmp_path / 'no' / 'events.jsonl'}': No such file or "
        "directory; valid: a file in an existing directory this user may write")


def test_6_check_looks_at_password_env_names_not_values(tmp_path: Path) -> None:
    config = tmp_path / "master.toml"
    config.write_text('[protocols.null]\nport = "null:0"\n[[workers]]\nname = "w1"\npassword_env = "WW_UNSET_PW"\n')
    env = {k: v for k, v in __import__("os").environ.items() if k != "WW_UNSET_PW"}
    out = _cli("master", "-c", str(config), "--check", env=env)
    assert out.returncode == 0, out.stderr
    out = _cli("master", "-c", str(config), "--check", "--check-secrets", env=env)
    assert out.returncode == 2 and b"'WW_UNSET_PW' is not set" in out.stderr
    config.write_text(config.read_text().replace("WW_UNSET_PW", "not a name"))
    out = _cli("master", "-c", str(config), "--check", env=env)
    assert out.returncode == 2 and b"'not a name' is not an environment variable name" in out.stderr


# -- 7. jobs added by a reload ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_7_a_job_added_by_reload_runs_on_connected_workers(tmp_path: Path) -> None:
    env = InProcess(tmp_path, {"w1": "pw1", "w2": "pw2"})
    await env.start()
    try:
        env.worker("w1", "pw1")
        env.worker("w2", "pw2")
        await env.master.whenAttached("w1")
        await env.master.whenAttached("w2")
        env.jobs = [{"name": "late", "command": ["echo", "late job"], "workers": ["w2"]}]
        env.write({"w1": "pw1", "w2": "pw2"})
        summary = await env.master.reload()
        assert summary is not None and summary["jobs_added"] == ["late"] and summary["unchanged"] == ["w1", "w2"]
        finished = await env.events.wait("job_finished", job="late")
        assert finished["worker"] == "w2", finished
        assert finished["rc"] == 0, finished
        assert finished["worker"] == "w2" and finished["rc"] == 0 and "late job" in finished["output_tail"]
        reloaded = await env.events.wait("reloaded")
        assert reloaded["jobs_added"] == ["late"]
        # Once: another reload without changes does not run it again.
        summary = await env.master.reload()
        assert summary is not None and summary["jobs_added"] == []
        assert len(env.events.matching("job_started", job="late")) == 1
        assert not env.events.matching("job_started", worker="w1")
    finally:
        await env.stop()


# -- 8. log noise ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_8_no_factory_lines_and_one_line_per_duplicate_refusal(tmp_path: Path) -> None:
    backends = require_network_backend()
    for backend in backends:
        env = InProcess(tmp_path / backend, {"w1": "pw1"}, backend=backend, port="tcp:port=0:interface=127.0.0.1",
                        ping_timeout=5.0) if (tmp_path / backend).mkdir() is None else None
        assert env is not None
        await env.start()
        try:
            with _Log() as log:
                env.worker("w1", "pw1")
                await env.master.whenAttached("w1")
                second = env.worker("w1", "pw1")
                await env.events.wait("refused", worker="w1")
                await second.stop()
            assert not [line for line in log.lines if "Starting factory" in line or "Stopping factory" in line]
            duplicate = [line for line in log.master_lines if "already connected" in line]
            refusals = env.events.matching("refused", worker="w1")
            # The second worker may log in again before it is stopped, and be refused again: one line
            # per refusal, never two for one login (each names the refused connection's address).
            assert 1 <= len(duplicate) <= len(refusals), f"{backend}: {duplicate}; refusals: {refusals}"
            refused_peers = [line.rsplit("second login from ", 1)[1] for line in duplicate]
            assert len(set(refused_peers)) == len(refused_peers), f"{backend}: {duplicate}"
        finally:
            await env.stop()


# -- 9. exec: stdin, timeout, signals, bytes -------------------------------------------------------


def test_9_exec_gives_stdin_to_the_command() -> None:
    out = _cli("exec", "--", "cat", stdin=b"x from stdin\n")
    assert (out.returncode, out.stdout) == (0, b"x from stdin\n")
    out = _cli("exec", "-n", "--", "cat", stdin=b"not read\n")
    assert (out.returncode, out.stdout) == (0, b"")


def test_9_exec_timeout_says_why_it_exits_143() -> None:
    out = _cli("exec", "--timeout", "0.5", "--", "sleep", "30")
    assert out.returncode == 128 + 15
    assert out.stderr.decode().strip() == ("workerwire exec: the command timed out (0.5 seconds without output); "
                                          "the command was killed by SIGTERM (15) (exit status 143)")


def test_9_exec_output_is_byte_exact(tmp_path: Path) -> None:
    data = bytes(range(256)) * 3 + b"\xff\xfe not utf-8 \xc3\n"
    (tmp_path / "blob").write_bytes(data)
    out = _cli("exec", "--", "cat", "blob", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == data
    out = _cli("exec", "--json", "--", "cat", "blob", cwd=tmp_path)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    import base64

    got = b"".join(base64.b64decode(line["b64"]) if "b64" in line else line["value"].encode()
                   for line in lines if line.get("update") == "stdout")
    assert got == data


@pytest_twisted.ensureDeferred
async def test_9_ctrl_c_json_and_exit_status_agree(processes: Processes) -> None:
    proc = processes.start(["exec", "--json", "--", "sh", "-c", "echo ready; exec sleep 60"])
    await proc.wait_output('"ready\\n"')
    proc.signal("INT")
    assert await proc.wait_exit(timeout=20) == 130
    final = json.loads(proc.text_out.splitlines()[-1])
    assert (final["rc"], final["exit_status"], final["killed_by_signal"]) == (-1, 130, 15)
    assert final["reason"] == ("interrupted by SIGINT (2); the command was killed by SIGTERM (15) "
                               "(exit status 130 = 128 + 2)")
    assert final["reason"] in proc.text_err


# -- 10. small ones ------------------------------------------------------------------------------


def test_10_worker_keepalive_interval_false_disables_as_in_the_config() -> None:
    from workerwire_app.cli import build_parser

    for text in ("false", "0"):
        args = build_parser().parse_args(["worker", "--backend", "pb", "--master", "tcp:host=h:port=1", "--name", "w",
                                          "--password", "p", "--basedir", "b", "--keepalive-interval", text])
        assert args.keepalive_interval == 0.0
    help_text = build_parser()._subparsers._group_actions[0].choices["worker"].format_help()  # type: ignore[union-attr]
    assert "false (or 0) disables keepalive" in " ".join(help_text.split())


@pytest_twisted.ensureDeferred
async def test_10_mutual_tls_without_a_certificate_names_the_worker_options(tmp_path: Path) -> None:
    from test_tls import PKI

    _needs("pb")
    pki = PKI(tmp_path)
    port = f"ssl:port=0:interface=127.0.0.1:privateKey={pki.master[1]}:certKey={pki.master[0]}:caCertsFile={pki.ca}"
    env = InProcess(tmp_path, {"w1": "pw1"}, backend="pb", port=port)
    await env.start()
    try:
        connector = env.worker("w1", "pw1", address=add_client_options(env.address, ca_file=pki.ca))
        await until(lambda: connector.last_error is not None, "a failed TLS login")
        assert "--client-cert and --client-key" in str(connector.last_error)
    finally:
        await env.stop()
