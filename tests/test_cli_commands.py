"""``workerwire backends``, ``workerwire conformance`` and the worker's argument checks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import write_distribution
from test_app_support import network_backends, workerwire_argv
from workerwire import backend_names, load_backend


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*workerwire_argv(), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def with_broken_backend(tmp_path: Path) -> dict[str, str]:
    """An environment in which a third-party distribution registers a backend that fails to import."""
    return write_distribution(tmp_path, "acme-broken", "2.0", {"acme-broken": "acme_broken:backend"},
                              {"acme_broken": "raise ImportError('acme needs libacme, which is missing')\n"})


def test_backends_lists_every_installed_backend() -> None:
    out = cli("backends")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "LOADS", "DESCRIPTION"]
    rows = {line.split()[0]: line.split()[:4] for line in lines[1:]}
    assert sorted(rows) == backend_names()
    for name, row in rows.items():
        assert row[1] == "workerwire" and row[3] == "yes", row


def test_a_broken_backend_is_shown_as_broken_not_a_crash(tmp_path: Path) -> None:
    env = with_broken_backend(tmp_path)
    out = cli("backends", env=env)
    assert out.returncode == 0, out.stderr
    [row] = [line for line in out.stdout.splitlines() if line.startswith("acme-broken ")]
    assert row.split()[1:4] == ["acme-broken", "2.0", "no"]
    assert "error:" in row and "libacme" in row
    infos = {b["name"]: b for b in json.loads(cli("backends", "--json", env=env).stdout)}
    assert infos["acme-broken"]["loads"] is False and "libacme" in infos["acme-broken"]["error"]
    assert all(infos[n]["loads"] for n in backend_names())


def test_a_broken_backend_in_a_config_is_a_config_error(tmp_path: Path) -> None:
    env = with_broken_backend(tmp_path)
    config = tmp_path / "m.toml"
    config.write_text('[protocols.acme-broken]\nport = "x"\n[[workers]]\nname = "w"\npassword = "p"\n')
    out = cli("master", "-c", str(config), env=env)
    assert out.returncode == 2
    assert out.stderr.startswith(f"{config}: protocols.acme-broken: backend 'acme-broken' is installed but does "
                                 "not load: ")


def test_conformance_runs_the_suite_against_a_backend() -> None:
    out = cli("conformance", "null", "--", "-q", "-p", "no:randomly", "-k", "test_login")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_conformance_refuses_an_unknown_backend() -> None:
    out = cli("conformance", "nosuch")
    assert out.returncode == 2
    assert out.stderr.strip() == (f"workerwire conformance: no workerwire backend named 'nosuch'; installed: "
                                  f"{', '.join(backend_names())}")


def test_worker_refuses_an_in_process_backend(tmp_path: Path) -> None:
    out = cli("worker", "--backend", "null", "--master", "null:x", "--name", "w", "--password", "p",
              "--basedir", str(tmp_path))
    assert out.returncode == 2
    others = ", ".join(n for n in backend_names() if not load_backend(n).in_process) or "none installed"
    assert out.stderr.strip() == ("workerwire worker: --backend: 'null' is an in-process backend and cannot reach "
                                  f"a master in another process; valid: a network backend ({others})")


def test_worker_refuses_an_unknown_backend_and_a_missing_password_file(tmp_path: Path) -> None:
    out = cli("worker", "--backend", "nosuch", "--master", "tcp:host=h:port=1", "--name", "w", "--password", "p",
              "--basedir", str(tmp_path))
    assert out.returncode == 2 and "no workerwire backend named 'nosuch'; installed:" in out.stderr
    names = network_backends()
    backend = names[0] if names else "null"
    out = cli("worker", "--backend", backend, "--master", "tcp:host=127.0.0.1:port=1", "--name", "w",
              "--password-file", str(tmp_path / "nope"), "--basedir", str(tmp_path))
    assert out.returncode == 2
    if names:
        assert f"cannot read the password file '{tmp_path / 'nope'}'" in out.stderr


def test_usage_errors_exit_2() -> None:
    assert cli("frobnicate").returncode == 2
    assert cli("master").returncode == 2  # -c is required
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("workerwire ")


def test_output_into_a_pipe_closed_early_ends_quietly() -> None:
    """`workerwire backends | head -0`: the reader is gone before anything is
    written; the command stops as SIGPIPE would (141), no traceback."""
    proc = subprocess.Popen([*workerwire_argv(), "backends"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
