"""The master's config: every kind of mistake is reported as ``FILE: KEY: what; valid: ...``.

Most cases run the real ``workerwire master`` command (exit status 2, the
message on stderr, nothing started); the finer points are checked on the
parser directly.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from test_app_support import network_backends, require_network_backend, workerwire_argv
from workerwire import LinkOptions, backend_names
from workerwire_app.config import ConfigErrors, load_config

GOOD = """
[protocols.null]
port = "null:0"

[[workers]]
name = "w1"
password = "pw1"
"""


def master(tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "master.toml"
    config.write_text(text)
    return subprocess.run([*workerwire_argv(), "master", "-c", str(config), *extra], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


def errors(tmp_path: Path, text: str) -> list[str]:
    config = tmp_path / "master.toml"
    config.write_text(text)
    with pytest.raises(ConfigErrors) as e:
        load_config(str(config))
    return [str(err) for err in e.value.errors]


def test_a_good_config_passes_the_check(tmp_path: Path) -> None:
    out = master(tmp_path, GOOD, "--check")
    assert out.returncode == 0, out.stderr
    assert "ok: 1 protocol(s), 1 worker(s)" in out.stdout


def test_unknown_backend_lists_the_installed_ones(tmp_path: Path) -> None:
    out = master(tmp_path, GOOD.replace("[protocols.null]", "[protocols.nosuch]"))
    assert out.returncode == 2
    installed = ", ".join(backend_names())
    assert out.stderr.strip() == (f"{tmp_path / 'master.toml'}: protocols.nosuch: unknown backend 'nosuch'; "
                                  f"valid: an installed backend: {installed}")


def test_bad_port_string_says_what_the_backend_accepts(tmp_path: Path) -> None:
    out = master(tmp_path, GOOD.replace('"null:0"', '"tcp:9989"'))
    assert out.returncode == 2
    assert out.stderr.startswith(f"{tmp_path / 'master.toml'}: protocols.null.port: ")
    assert "valid: a port string of backend 'null' such as 'null:0'" in out.stderr


def test_duplicate_worker_name(tmp_path: Path) -> None:
    out = master(tmp_path, GOOD + '\n[[workers]]\nname = "w1"\npassword = "other"\n')
    assert out.returncode == 2
    assert out.stderr.strip() == (f"{tmp_path / 'master.toml'}: workers[1].name: duplicate worker name 'w1' "
                                  f"(also workers[0]); valid: a name used by one [[workers]] entry only")


def test_missing_password(tmp_path: Path) -> None:
    out = master(tmp_path, GOOD.replace('password = "pw1"\n', ""))
    assert out.returncode == 2
    assert out.stderr.strip() == (f"{tmp_path / 'master.toml'}: workers[0].password: missing; valid: exactly one "
                                  f"of password = \"...\", password_file = \"PATH\", password_env = \"VARIABLE\"")


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path: Path) -> None:
    out = master(tmp_path, "colour = 'blue'\n" + GOOD.replace('port = "null:0"', 'port = "null:0"\nkeepalive = 5')
                 + 'passwd = "x"\n')
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    path = tmp_path / "master.toml"
    assert f"{path}: colour: unknown key; valid: master, protocols, workers, jobs" in lines
    assert f"{path}: protocols.null.keepalive: unknown key; valid: port, {', '.join(LinkOptions.names())}" in lines
    assert (f"{path}: workers[0].passwd: unknown key; valid: name, password, password_file, password_env, "
            "protocols, builders") in lines


def test_port_in_use_is_reported_and_nothing_stays_open(tmp_path: Path) -> None:
    names = require_network_backend()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        # The first protocol opens fine, the last one fails: the whole start is undone.
        protocols = "".join(f'[protocols.{n}]\nport = "tcp:port=0:interface=127.0.0.1"\n' for n in names[:-1])
        protocols += f'[protocols.{names[-1]}]\nport = "tcp:port={port}:interface=127.0.0.1"\n'
        events = tmp_path / "events.jsonl"
        out = master(tmp_path, protocols + '[[workers]]\nname = "w1"\npassword = "pw1"\n', "--events", str(events))
    finally:
        busy.close()
    assert out.returncode == 2
    [line] = [line for line in out.stderr.splitlines() if line.startswith(str(tmp_path / "master.toml"))]
    assert line.startswith(f"{tmp_path / 'master.toml'}: protocols.{names[-1]}.port: cannot open the port: ")
    assert f"{port}" in line and "in use" in line and line.endswith("; valid: a port that is free and that this "
                                                                    "user may open (or port 0 for any free port)")
    kinds = [line.split('"event": "')[1].split('"')[0] for line in events.read_text().splitlines()]
    assert kinds == ["start_failed"]


def test_two_protocols_on_one_port(tmp_path: Path) -> None:
    names = network_backends()
    if len(names) < 2:
        pytest.fail(f"needs two network backends; installed: {', '.join(backend_names())}")
    text = "".join(f'[protocols.{n}]\nport = "tcp:9989"\n' for n in names[:2]) + '[[workers]]\nname="w"\npassword="p"\n'
    assert any(f"protocols.{names[1]}.port: 'tcp:9989' is also the port of protocols.{names[0]}" in e
               for e in errors(tmp_path, text))


def test_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    text = """
[protocols.null]
port = 5
keepalive_interval = -1

[[workers]]
name = ""
password = "x"

[[workers]]
name = "w2"
password = "a"
password_env = "B"

[[jobs]]
name = "j"
command = []
workers = ["ghost"]
"""
    found = errors(tmp_path, text)
    keys = [e.split(": ")[1] for e in found]
    assert keys == ["protocols.null.port", "protocols.null.keepalive_interval", "workers[0].name",
                    "workers[1].password_env", "jobs[0].command", "jobs[0].workers"]


def test_password_file_and_env(tmp_path: Path) -> None:
    (tmp_path / "w1.pw").write_text("from-file\n")
    text = ('[protocols.null]\nport = "null:0"\n'
            '[[workers]]\nname = "w1"\npassword_file = "w1.pw"\n'
            '[[workers]]\nname = "w2"\npassword_env = "WW_TEST_W2"\n')
    config_path = tmp_path / "master.toml"
    config_path.write_text(text)
    config = load_config(str(config_path), environ={"WW_TEST_W2": "from-env"})
    assert config.workers["w1"].password == "from-file" and config.workers["w2"].password == "from-env"
    assert "from-file" not in repr(config) and "from-env" not in repr(config)

    found = errors(tmp_path, text.replace("w1.pw", "missing.pw"))
    assert any(f"workers[0].password_file: cannot read '{tmp_path / 'missing.pw'}'" in e for e in found)
    assert any("workers[1].password_env: environment variable 'WW_TEST_W2' is not set" in e for e in found)


def test_not_toml_at_all(tmp_path: Path) -> None:
    out = master(tmp_path, "[protocols.null\nport = 1\n")
    assert out.returncode == 2
    assert out.stderr.startswith(f"{tmp_path / 'master.toml'}: -: not valid TOML: ")


def test_missing_file(tmp_path: Path) -> None:
    out = subprocess.run([*workerwire_argv(), "master", "-c", str(tmp_path / "nope.toml")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert f"{tmp_path / 'nope.toml'}: -: cannot read the file: No such file or directory" in out.stderr


def test_defaults_and_options(tmp_path: Path) -> None:
    text = ('[master]\nduplicate_ping_timeout = 2.5\n'
            '[protocols.null]\nport = "null:0"\nkeepalive_interval = false\nkeepalive_timeout = 7\n'
            'max_message_size = 4096\n'
            '[[workers]]\nname = "w1"\npassword = "p"\nbuilders = ["b"]\n'
            '[[jobs]]\nname = "j"\ncommand = "make"\ntimeout = 60\n')
    path = tmp_path / "m.toml"
    path.write_text(text)
    config = load_config(str(path))
    options = config.protocols["null"].options
    assert options.keepalive_interval is None and options.keepalive_timeout == 7 and options.max_message_size == 4096
    assert config.duplicate_ping_timeout == 2.5
    assert config.workers["w1"].builders == (("b", "b"), ("j", "j"))  # a job's builder exists where it runs
    assert config.jobs[0].shell_args()["command"] == "make" and config.jobs[0].shell_args()["timeout"] == 60
    assert config.workers["w1"].protocols == ("null",)


def test_no_protocols(tmp_path: Path) -> None:
    found = errors(tmp_path, '[[workers]]\nname = "w"\npassword = "p"\n')
    assert found == [f"{tmp_path / 'master.toml'}: protocols: missing: no backend is enabled; valid: at least one "
                     f"[protocols.NAME] table; installed backends: {', '.join(backend_names())}"]


def test_worker_protocols_must_be_enabled(tmp_path: Path) -> None:
    found = errors(tmp_path, GOOD + 'protocols = ["pb-not-enabled"]\n')
    assert found == [f"{tmp_path / 'master.toml'}: workers[0].protocols: 'pb-not-enabled' not enabled in "
                     "[protocols]; valid: enabled protocols: null"]


def test_the_login_waiting_room_holds_every_worker_of_a_protocol_unless_set(tmp_path: Path) -> None:
    """A fleet larger than the default waiting room (1,024) that returns at once
    waits its turn instead of being closed at the login caps; an explicit
    ``max_waiting_logins`` is kept as written."""
    workers = "".join(f'[[workers]]\nname = "w{i}"\npassword = "p"\nprotocols = ["pb"]\n' for i in range(1500))
    path = tmp_path / "m.toml"
    path.write_text('[protocols.pb]\nport = "tcp:0"\n[protocols.amp]\nport = "tcp:0"\nmax_waiting_logins = 10\n'
                    '[protocols.null]\nport = "null:0"\n' + workers +
                    '[[workers]]\nname = "a"\npassword = "p"\nprotocols = ["amp", "null"]\n')
    config = load_config(str(path))
    assert config.protocols["pb"].options.max_waiting_logins == 1500
    assert config.protocols["amp"].options.max_waiting_logins == 10
    assert config.protocols["null"].options.max_waiting_logins == 1024
