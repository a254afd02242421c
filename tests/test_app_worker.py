"""The worker runtime's commands, driven by a real master over the in-process backend.

Every test runs real processes and real files; the link is the ``null``
backend, which is as strict as a network backend (values go through the
codec, calls are asynchronous).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from test_app_support import REACTOR, InProcess, sleep, until
from workerwire.errors import ConnectionLost, RemoteCallFailed, UnknownBuilder, UnknownCommand
from workerwire_app.remote_command import RemoteCommand
from workerwire_app.worker_runtime import COMMANDS
from workerwire_app.worker_runtime.base import CommandContext
from workerwire_app.worker_runtime.paths import PathPolicy
from workerwire_app.worker_runtime.shell import BATCH_SIZE, ShellCommand

PY = sys.executable


class Setup:
    """One master, one attached worker ``w1`` with builder ``b1``."""

    def __init__(self, tmp_path: Path):
        self.env = InProcess(tmp_path, {"w1": "pw1"})
        self.ids = 0

    async def __aenter__(self) -> "Setup":
        await self.env.start()
        self.env.worker("w1", "pw1", **self.runtime_kw())
        self.conn = await self.env.master.whenAttached("w1")
        self.runtime = self.env.runtimes["w1"]
        self.builder_dir = Path(self.runtime.builders["b1"])
        return self

    def runtime_kw(self) -> dict[str, Any]:
        return {}

    async def __aexit__(self, *exc: Any) -> None:
        await self.env.stop()

    def start(self, name: str, args: dict[str, Any], updates: list[Any] | None = None,
              builder: str = "b1") -> tuple[Deferred[None], RemoteCommand]:
        self.ids += 1
        target = RemoteCommand(None if updates is None else updates.extend)
        return self.conn.remoteStartCommand(target, builder, f"c{self.ids}", name, args), target

    async def run(self, name: str, args: dict[str, Any]) -> tuple[Any, list[Any]]:
        updates: list[Any] = []
        started, target = self.start(name, args, updates)
        await started
        return await target.done, updates


def keys(updates: list[Any]) -> list[str]:
    return [k for k, _ in updates]


def text(updates: list[Any], key: str) -> str:
    return "".join(v for k, v in updates if k == key)


def headers(updates: list[Any]) -> str:
    return text(updates, "header")


@pytest_twisted.ensureDeferred
async def test_shell_argv_streams_stdout_stderr_and_ends_with_rc_and_elapsed(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        result, updates = await s.run("shell", {"command": [PY, "-c", "import sys; print('out'); "
                                                           "print('err', file=sys.stderr); sys.exit(3)"],
                                                "workdir": "build"})
    assert result.failure is None and result.rc == 3
    assert text(updates, "stdout") == "out\n" and text(updates, "stderr") == "err\n"
    assert updates[0][0] == "header" and updates[0][1].startswith(f"{PY} -c ")
    # Buildbot's order at the end: rc, then the elapsedTime header, then elapsed.
    assert keys(updates)[-3:] == ["rc", "header", "elapsed"]
    assert updates[-2][1].startswith("elapsedTime=") and isinstance(updates[-1][1], float)


@pytest_twisted.ensureDeferred
async def test_shell_string_runs_through_sh_in_workdir_with_env(tmp_path: Path) -> None:
    os.environ["WW_TEST_BASE"] = "base"
    try:
        async with Setup(tmp_path) as s:
            result, updates = await s.run("shell", {
                "command": 'echo "$PWD|$A|$B|${WW_TEST_BASE-unset}|$P"; exit 7',
                "workdir": "sub/dir",
                "env": {"A": "x", "B": "${WW_TEST_BASE}-y", "WW_TEST_BASE": None, "P": ["p1", "p2"]},
            })
            workdir = s.builder_dir / "sub" / "dir"
    finally:
        del os.environ["WW_TEST_BASE"]
    assert result.rc == 7
    assert text(updates, "stdout") == f"{workdir}|x|base-y|unset|p1{os.pathsep}p2\n"
    assert workdir.is_dir()


@pytest_twisted.ensureDeferred
async def test_missing_program_reports_rc_127(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        result, updates = await s.run("shell", {"command": ["no-such-program-xyz"], "workdir": "."})
    assert result.failure is None and result.rc == 127
    assert "cannot run 'no-such-program-xyz'" in text(updates, "stderr")


@pytest_twisted.ensureDeferred
async def test_output_is_streamed_while_the_command_runs(tmp_path: Path) -> None:
    """'first' reaches the master before the command may go on: it waits for a file the test
    creates only after seeing 'first'."""
    go = tmp_path / "go"
    seen: Deferred[None] = Deferred()
    updates: list[Any] = []

    def on_update(batch: list[Any]) -> None:
        updates.extend(batch)
        if "first" in text(updates, "stdout") and not seen.called:
            seen.callback(None)

    async with Setup(tmp_path) as s:
        target = RemoteCommand(on_update)
        script = ("import os, time\nprint('first', flush=True)\n"
                  f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\nprint('second')\n")
        await s.conn.remoteStartCommand(target, "b1", "live", "shell", {"command": [PY, "-c", script]})
        await seen
        assert not target.done.called
        go.touch()
        result = await target.done
    assert result.rc == 0 and text(updates, "stdout") == "first\nsecond\n"


@pytest_twisted.ensureDeferred
async def test_large_output_arrives_intact_in_few_batches(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        batches: list[list[Any]] = []
        target = RemoteCommand(batches.append)
        script = "import sys\nfor i in range(20000): sys.stdout.write('line %05d\\n' % i)\n"
        await s.conn.remoteStartCommand(target, "b1", "big", "shell", {"command": [PY, "-c", script]})
        result = await target.done
    updates = [u for b in batches for u in b]
    out = text(updates, "stdout")
    assert result.rc == 0 and out == "".join("line %05d\n" % i for i in range(20000))
    stdout_updates = [v for k, v in updates if k == "stdout"]
    assert len(stdout_updates) < 40  # batched, not one update per write
    assert max(len(v) for v in stdout_updates) <= BATCH_SIZE + 8192


@pytest_twisted.ensureDeferred
async def test_silence_timeout_kills_with_failure_reason(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        result, updates = await s.run("shell", {"command": ["sleep", "30"], "timeout": 0.3})
    assert result.rc == -1 and result.failure_reason == "timeout_without_output"
    assert "command timed out: 0.3 seconds without output" in headers(updates)
    # Without sigtermTime, buildbot-worker sends interruptSignal (default KILL) at once.
    assert "process killed by signal 9" in headers(updates)
    assert result.elapsed is not None and result.elapsed < 10


@pytest_twisted.ensureDeferred
async def test_max_time_kills_a_chatty_command(tmp_path: Path) -> None:
    script = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.05)\n"
    async with Setup(tmp_path) as s:
        result, updates = await s.run("shell", {"command": [PY, "-c", script], "timeout": 5, "maxTime": 0.4})
    assert result.rc == -1 and result.failure_reason == "timeout"
    assert "command timed out: 0.4 seconds elapsed" in headers(updates)
    assert "tick" in text(updates, "stdout")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest_twisted.ensureDeferred
async def test_interrupt_terminates_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    async with Setup(tmp_path) as s:
        updates: list[Any] = []
        started, target = s.start("shell", {"command": f"sleep 30 & echo $! > {pidfile}; echo ready; wait"},
                                  updates)
        await started
        await until(lambda: "ready" in text(updates, "stdout"), "'ready' on stdout")
        child = int(pidfile.read_text())
        await s.conn.remoteInterruptCommand("b1", "c1", "stop now")
        result = await target.done
    assert result.rc == -1 and "stop now, attempting to kill" in headers(updates)
    # The background child got SIGTERM too (give the kernel a moment to reap it).
    await until(lambda: not _alive(child), "the background child's end")


@pytest_twisted.ensureDeferred
async def test_interrupt_escalates_to_sigkill_after_the_grace_period(tmp_path: Path) -> None:
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('ready', flush=True)\ntime.sleep(30)\n")
    async with Setup(tmp_path) as s:
        updates: list[Any] = []
        started, target = s.start("shell", {"command": [PY, "-c", script], "sigtermTime": 0.3}, updates)
        await started
        await until(lambda: "ready" in text(updates, "stdout"), "'ready' on stdout")
        await s.conn.remoteInterruptCommand("b1", "c1", "enough")
        result = await target.done
    # SIGTERM (ignored), then after sigtermTime the interrupt signal (default KILL).
    assert result.rc == -1 and "process killed by signal 9" in headers(updates)


@pytest_twisted.ensureDeferred
async def test_interrupting_a_finished_or_unknown_command_is_harmless(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        await s.run("shell", {"command": ["true"]})
        await s.conn.remoteInterruptCommand("b1", "c1", "too late")
        await s.conn.remoteInterruptCommand("b1", "nope", "never existed")


@pytest_twisted.ensureDeferred
async def test_unknown_command_and_builder_are_refused_with_the_valid_names(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        started, target = s.start("frobnicate", {})
        with pytest.raises(UnknownCommand) as e:
            await started
        for name in COMMANDS:
            assert name in str(e.value)
        started, _ = s.start("shell", {"command": ["true"]}, builder="nope")
        with pytest.raises(UnknownBuilder) as b:
            await started
        assert "'nope'" in str(b.value) and "b1" in str(b.value)
        assert not target.done.called


@pytest_twisted.ensureDeferred
async def test_bad_arguments_refuse_the_start(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        for args in ({}, {"command": []}, {"command": ["x"], "timeout": "soon"}, {"command": ["x"], "env": "A=1"}):
            started, _ = s.start("shell", args)
            with pytest.raises(RemoteCallFailed) as e:
                await started
            assert e.value.type_name == "ValueError"


@pytest_twisted.ensureDeferred
async def test_paths_stay_inside_the_base_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    async with Setup(tmp_path) as s:
        for name, args in (("shell", {"command": ["true"], "workdir": "../../.."}),
                           ("shell", {"command": ["true"], "workdir": str(outside)}),
                           ("mkdir", {"dir": "../../x"}),
                           ("rmdir", {"dir": str(outside)}),
                           ("stat", {"file": "/etc/passwd"}),
                           ("rmfile", {"path": "../../../x"})):
            started, _ = s.start(name, args)
            with pytest.raises(RemoteCallFailed) as e:
                await started
            assert e.value.type_name == "PathNotAllowed" and "--allow-absolute-paths" in str(e.value)
        # Absolute paths inside the base directory are fine.
        result, _ = await s.run("mkdir", {"dir": str(s.builder_dir / "abs")})
        assert result.rc == 0 and (s.builder_dir / "abs").is_dir()
    assert outside.is_dir()


class _AbsoluteSetup(Setup):
    def runtime_kw(self) -> dict[str, Any]:
        return {"allow_absolute_paths": True}


@pytest_twisted.ensureDeferred
async def test_allow_absolute_paths_lets_commands_leave_the_base_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    async with _AbsoluteSetup(tmp_path) as s:
        result, updates = await s.run("shell", {"command": ["pwd"], "workdir": str(outside)})
    assert result.rc == 0 and text(updates, "stdout").strip() == str(outside)


@pytest_twisted.ensureDeferred
async def test_file_commands_behave_like_buildbot_worker(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        b = s.builder_dir
        result, _ = await s.run("mkdir", {"dir": "d/e"})
        assert result.rc == 0 and (b / "d" / "e").is_dir()
        (b / "d" / "f.txt").write_text("12345")
        (b / "d" / "e" / "g.txt").write_text("x")

        result, updates = await s.run("stat", {"file": "f.txt", "workdir": "d"})
        stat = dict(updates)["stat"]
        assert result.rc == 0 and len(stat) == 10 and stat[6] == 5  # st_size

        result, updates = await s.run("listdir", {"dir": "d"})
        assert result.rc == 0 and sorted(dict(updates)["files"]) == ["e", "f.txt"]

        result, updates = await s.run("glob", {"path": "d/**/*.txt"})
        assert sorted(dict(updates)["files"]) == [str(b / "d" / "e" / "g.txt"), str(b / "d" / "f.txt")]

        result, updates = await s.run("rmfile", {"path": "d/f.txt"})
        assert result.rc == 0 and not (b / "d" / "f.txt").exists()

        # Errors: a header naming the error and rc = errno, like buildbot-worker.
        import errno

        result, updates = await s.run("rmfile", {"path": "d/f.txt"})
        assert result.rc == errno.ENOENT and headers(updates).startswith("rmfile: No such file or directory")
        result, updates = await s.run("stat", {"file": "missing"})
        assert result.rc == errno.ENOENT and "stat: No such file or directory" in headers(updates)
        result, updates = await s.run("listdir", {"dir": "missing"})
        assert result.rc == errno.ENOENT

        (b / "d" / "e").chmod(0o500)  # rmdir copes with an unwritable directory, as rm -rf after chmod does
        result, _ = await s.run("rmdir", {"dir": ["d", "never-existed"]})
        assert result.rc == 0 and not (b / "d").exists()


@pytest_twisted.ensureDeferred
async def test_worker_info_has_the_keys_a_master_reads(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        info_dir = Path(s.runtime.basedir) / "info"
        info_dir.mkdir()
        (info_dir / "admin").write_text("Ada <ada@example.org>\n")
        info = await s.conn.remoteGetWorkerInfo()
    for key in ("version", "worker_commands", "basedir", "system", "host", "admin", "access_uri", "environ",
                "numcpus"):
        assert key in info, key
    # As buildbot-worker: info files are sent whole (trailing newline kept); missing ones are None.
    assert info["admin"] == "Ada <ada@example.org>\n" and info["basedir"] == s.runtime.basedir
    assert info["host"] is None and info["access_uri"] is None and info["delete_leftover_dirs"] == 0
    assert set(info["worker_commands"]) == set(COMMANDS)


@pytest_twisted.ensureDeferred
async def test_set_builder_list_creates_and_replaces_builders(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        names = await s.conn.remoteSetBuilderList([("x", "dir-x"), ("y", "y")])
        assert names == ["x", "y"] and (Path(s.runtime.basedir) / "dir-x").is_dir()
        with pytest.raises(UnknownBuilder):
            await s.conn.remoteStartBuild("b1")
        with pytest.raises(RemoteCallFailed):
            await s.conn.remoteSetBuilderList([("evil", "../../evil")])


@pytest_twisted.ensureDeferred
async def test_commands_of_a_lost_master_are_interrupted_after_the_grace_period(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    class Grace(Setup):
        def runtime_kw(self) -> dict[str, Any]:
            return {"lost_link_grace": 1.0}

    async with Grace(tmp_path) as s:
        updates: list[Any] = []
        started, target = s.start("shell", {"command": f"echo $$ > {pidfile}; echo ready; exec sleep 30"}, updates)
        await started
        await until(lambda: "ready" in text(updates, "stdout"), "'ready' on stdout")
        pid = int(pidfile.read_text())
        await s.env.master.stop()  # the master is gone for good
        result = await target.done
        assert isinstance(result.failure, ConnectionLost)
        assert _alive(pid)  # still inside the grace period
        await until(lambda: not s.runtime.running(), "the orphaned command's end")
        await until(lambda: not _alive(pid), "the orphaned process's end")
        s.env.master = None


@pytest_twisted.ensureDeferred
async def test_commands_keep_running_when_the_link_comes_back_within_the_grace_period(tmp_path: Path) -> None:
    done_file = tmp_path / "done"

    class Grace(Setup):
        def runtime_kw(self) -> dict[str, Any]:
            return {"lost_link_grace": 5.0}

    async with Grace(tmp_path) as s:
        updates: list[Any] = []
        started, target = s.start("shell", {"command": f"echo ready; sleep 0.5; touch {done_file}"}, updates)
        await started
        await until(lambda: "ready" in text(updates, "stdout"), "'ready' on stdout")
        s.conn.loseConnection()
        result = await target.done
        assert isinstance(result.failure, ConnectionLost)
        await s.env.master.whenAttached("w1")  # the worker logged in again
        await until(done_file.exists, "the command's natural end")


class _SlowChannel:
    """A channel whose updates are accepted only when the test says so."""

    builderName = "b1"
    commandId = "slow"

    def __init__(self) -> None:
        self.pending: list[Deferred[None]] = []
        self.received: list[Any] = []
        self.completed: list[Any] = []

    def update(self, updates: list[Any]) -> Deferred[None]:
        self.received.extend(updates)
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d

    def complete(self, failure: Any = None) -> Deferred[None]:
        self.completed.append(failure)
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d

    def accept_all(self) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            d.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_slow_link_pauses_reading_the_process_output(tmp_path: Path) -> None:
    """While the link has not accepted a batch, at most about one more batch is
    read from the process: the process blocks instead of the worker buffering."""
    channel = _SlowChannel()
    ctx = CommandContext(REACTOR, PathPolicy(str(tmp_path)), str(tmp_path), "b1")
    total = 4 * 1024 * 1024
    script = f"import sys\nsys.stdout.write('x' * {total})\n"
    cmd = ShellCommand(ctx, channel, {"command": [PY, "-c", script]})  # type: ignore[arg-type]
    cmd.start()
    await until(lambda: cmd.paused, "pausing the process output")
    # Held back: one batch in flight, about one waiting; the rest is still in the pipe.
    await sleep(0.2)
    assert len(text(channel.received, "stdout")) <= BATCH_SIZE * 2
    assert cmd._pending_size <= BATCH_SIZE * 2 and not cmd.finished.called
    deadline = REACTOR.seconds() + 30
    while not cmd.finished.called:
        assert REACTOR.seconds() < deadline, "the command did not finish"
        channel.accept_all()
        await sleep(0.005)
    assert text(channel.received, "stdout") == "x" * total
    assert dict(channel.received)["rc"] == 0 and channel.completed == [None]


def test_signal_numbers() -> None:
    from workerwire_app.worker_runtime.shell import _signal_number

    assert _signal_number(None) == signal.SIGKILL and _signal_number("INT") == signal.SIGINT
    assert _signal_number("SIGKILL") == signal.SIGKILL
    with pytest.raises(ValueError):
        _signal_number("NOPE")
