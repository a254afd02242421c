"""``workerwire exec``: one command through a loopback master and worker, for every installed backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from test_app_support import Processes, workerwire_argv
from workerwire import backend_names

PY = sys.executable
BACKENDS = backend_names()


def run_exec(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*workerwire_argv(), "exec", *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exit_codes_and_streams_are_the_commands(backend: str, tmp_path: Path) -> None:
    script = "import sys; print('to stdout'); print('to stderr', file=sys.stderr); sys.exit(3)"
    out = run_exec("--backend", backend, "--", PY, "-c", script, cwd=tmp_path)
    assert (out.returncode, out.stdout, out.stderr) == (3, "to stdout\n", "to stderr\n")
    out = run_exec("--backend", backend, "--", "sh", "-c", "pwd", cwd=tmp_path)
    assert (out.returncode, out.stdout) == (0, f"{tmp_path}\n")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_command_killed_by_a_signal_exits_like_in_a_shell(backend: str) -> None:
    out = run_exec("--backend", backend, "--", "sh", "-c", "kill -TERM $$")
    assert out.returncode == 128 + 15


@pytest.mark.parametrize("backend", BACKENDS)
def test_json_prints_the_update_stream(backend: str) -> None:
    out = run_exec("--backend", backend, "--json", "--", "sh", "-c", "echo hi; exit 4")
    assert out.returncode == 4, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    updates = [(line["update"], line["value"]) for line in lines if "update" in line]
    assert ("stdout", "hi\n") in updates and ("rc", 4) in updates
    assert [k for k, _ in updates][-3:] == ["rc", "header", "elapsed"]
    assert lines[-1] == {"complete": True, "rc": 4, "exit_status": 4, "failure": None, "killed_by_signal": None,
                         "reason": None}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest_twisted.ensureDeferred
async def test_output_appears_while_the_command_runs(backend: str, tmp_path: Path, processes: Processes) -> None:
    """The command prints 'first', then waits for a file the test creates only after it saw 'first'."""
    go = tmp_path / "go"
    script = ("import os, time\nprint('first', flush=True)\n"
              f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\nprint('second')\n")
    proc = processes.start(["exec", "--backend", backend, "--", PY, "-c", script])
    await proc.wait_output("first\n")
    assert proc.status is None
    go.touch()
    assert await proc.wait_exit() == 0
    assert proc.text_out == "first\nsecond\n"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest_twisted.ensureDeferred
async def test_ctrl_c_interrupts_the_command(backend: str, processes: Processes) -> None:
    script = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"
    proc = processes.start(["exec", "--backend", backend, "--", PY, "-c", script])
    await proc.wait_output("ready\n")
    proc.signal("INT")
    assert await proc.wait_exit(timeout=15) == 128 + 2


def test_unknown_backend_is_a_usage_error() -> None:
    out = run_exec("--backend", "nosuch", "--", "true")
    assert out.returncode == 2
    assert out.stderr.strip() == (f"workerwire exec: no workerwire backend named 'nosuch'; installed: "
                                  f"{', '.join(BACKENDS)}")


def test_default_backend_is_pb() -> None:
    out = run_exec("--", "true")
    if "pb" in BACKENDS:
        assert out.returncode == 0, out.stderr
    else:
        assert out.returncode == 2 and "no workerwire backend named 'pb'" in out.stderr


def test_no_command_is_a_usage_error() -> None:
    out = run_exec("--backend", "null")
    assert out.returncode == 2 and "no command given" in out.stderr


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest_twisted.ensureDeferred
async def test_a_stalled_terminal_does_not_make_exec_buffer_the_output(backend: str, processes: Processes) -> None:
    """100 MB of output while the reader stops reading for a while: exec's memory stays bounded."""
    if not Path("/proc/self/status").exists():
        pytest.fail("needs /proc to watch the process's memory")
    from twisted.internet import task

    from test_app_support import REACTOR, sleep

    total = 100_000_000
    proc = processes.start(["exec", "--backend", backend, "--", "sh", "-c", f"yes 2>/dev/null | head -c {total}"],
                           keep_stdout=False)
    peak = [0]

    def watch() -> None:
        if proc.status is None and proc.pid is not None:
            try:
                peak[0] = max(peak[0], _rss(proc.pid))
            except OSError:
                pass

    loop = task.LoopingCall(watch)
    loop.clock = REACTOR
    loop.start(0.02)
    try:
        await proc.wait_stdout_bytes(1)
        proc.transport.pauseProducing()  # the terminal stops reading
        await sleep(1.5)
        proc.transport.resumeProducing()
        assert await proc.wait_exit(timeout=60) == 0, proc.text_err
    finally:
        loop.stop()
    assert proc.stdout_bytes == total
    assert 0 < peak[0] < 100 * 1024 * 1024, f"exec grew to {peak[0] // 2**20} MiB"
