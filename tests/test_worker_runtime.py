"""The worker runtime does what buildbot-worker 4.3 does: transfers, cpdir, the shell's
logfiles / usePTY / sigtermTime / max_lines / initial_stdin, raw_output, worker info.

Shell and file commands run through a real master over the ``null`` backend
(:class:`test_app_worker.Setup`).  The transfer commands are driven directly,
without a link: :class:`RecordingWriter` / :class:`RecordingReader` stand in
for the contract's handle proxies (same ``callRemote(method, *args) ->
Deferred`` interface, answering asynchronously and in order, as a link does)
so a test can fail a chosen call; ``test_buildbot_steps.py`` runs the same
commands with a real Buildbot master's handles over pb.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from test_app_support import REACTOR, until
from test_app_worker import Setup, headers, keys, text
from workerwire.errors import ConnectionLost, RemoteCallFailed
from workerwire_app.worker_runtime import COMMANDS
from workerwire_app.worker_runtime.base import CommandContext
from workerwire_app.worker_runtime.paths import PathPolicy
from workerwire_app.worker_runtime.transfer import DownloadFile, UploadDirectory, UploadFile

PY = sys.executable


# -- stand-ins for the contract's transfer proxies ---------------------------------------------


class _Handle:
    """Answers each call on a later reactor turn, in call order; *fail_on* fails that method.

    ``whenRoom()`` is the proxy's (:meth:`workerwire.transfer.TransferProxy.whenRoom`):
    it fires once fewer than *window* bytes of calls (write data, read lengths)
    are unanswered; ``window=None`` makes a handle without it (as a handle of
    another kind could be)."""

    def __init__(self, fail_on: str | None = None, fail_after: int = 0, window: int | None = 8000):
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail_on = fail_on
        self.fail_after = fail_after
        self.max_in_flight = 0
        self._in_flight = 0
        self.window = window
        self.bytes_in_flight = 0
        self.max_bytes_in_flight = 0
        self._room: list[Deferred[None]] = []
        if window is None:
            self.whenRoom = None  # type: ignore[method-assign]  # a handle without the proxy's window

    def whenRoom(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.window is None or self.bytes_in_flight < self.window:
            d.callback(None)
        else:
            self._room.append(d)
        return d

    def callRemote(self, method: str, *args: Any) -> Deferred[Any]:
        self.calls.append((method, args))
        d: Deferred[Any] = Deferred()
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        size = len(args[0]) if method == "write" else args[0] if method == "read" else 0
        self.bytes_in_flight += size
        self.max_bytes_in_flight = max(self.max_bytes_in_flight, self.bytes_in_flight)
        if method == self.fail_on and sum(1 for m, _ in self.calls if m == method) > self.fail_after:
            outcome: Any = RemoteCallFailed("OSError", f"{method} failed on the master")
        else:
            outcome = self.answer(method, args)

        def fire() -> None:
            self._in_flight -= 1
            self.bytes_in_flight -= size
            if self._room and (self.window is None or self.bytes_in_flight < self.window):
                waiting, self._room = self._room, []
                for w in waiting:
                    w.callback(None)
            if isinstance(outcome, Exception):
                d.errback(outcome)
            else:
                d.callback(outcome)

        REACTOR.callLater(0, fire)
        return d

    def answer(self, method: str, args: tuple[Any, ...]) -> Any:
        return None

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]


class RecordingWriter(_Handle):
    """Stands in for the contract's writer proxy (Buildbot's FileWriterImpl roles)."""

    def __init__(self, fail_on: str | None = None, fail_after: int = 0, window: int | None = 8000):
        super().__init__(fail_on, fail_after, window)
        self.data = bytearray()

    def answer(self, method: str, args: tuple[Any, ...]) -> Any:
        if method == "write":
            assert isinstance(args[0], bytes)
            self.data += args[0]
        return None


class RecordingReader(_Handle):
    """Stands in for the contract's reader proxy (Buildbot's FileReaderImpl roles)."""

    def __init__(self, content: bytes, fail_on: str | None = None, fail_after: int = 0,
                 window: int | None = 8000):
        super().__init__(fail_on, fail_after, window)
        self.content = content
        self.pos = 0

    def answer(self, method: str, args: tuple[Any, ...]) -> Any:
        if method == "read":
            data = self.content[self.pos:self.pos + args[0]]
            self.pos += len(data)
            return data
        return None


class _Channel:
    """A command channel that accepts every update at once and records the completion."""

    builderName = "b1"
    commandId = "t1"

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.completed: Deferred[Any] = Deferred()

    def update(self, updates: list[Any]) -> Deferred[None]:
        self.received.extend(updates)
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d

    def complete(self, failure: Any = None) -> Deferred[None]:
        self.completed.callback(failure)
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d


async def run_transfer(cls: type, basedir: Path, args: dict[str, Any]) -> tuple[Any, list[Any]]:
    """Run one transfer command in *basedir*/b1; return (completion failure or None, updates)."""
    builder = basedir / "b1"
    builder.mkdir(parents=True, exist_ok=True)
    ctx = CommandContext(REACTOR, PathPolicy(str(basedir)), str(builder), "b1")
    channel = _Channel()
    command = cls(ctx, channel, {"workdir": "build", "blocksize": 1000, "maxsize": None, **args})
    command.start()
    failure = await channel.completed
    return failure, channel.received


# -- uploadFile -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upload_file_sends_every_block_then_close_and_utime(tmp_path: Path) -> None:
    src = tmp_path / "b1" / "build" / "f.bin"
    src.parent.mkdir(parents=True)
    content = os.urandom(123_456)
    src.write_bytes(content)
    os.utime(src, (1_500_000_000, 1_600_000_000))
    writer = RecordingWriter()
    failure, updates = await run_transfer(UploadFile, tmp_path, {"workersrc": "f.bin", "writer": writer,
                                                                 "keepstamp": True})
    assert failure is None and bytes(writer.data) == content
    assert writer.methods()[-2:] == ["close", "utime"] and writer.calls[-1][1] == ((1_500_000_000, 1_600_000_000),)
    assert set(writer.methods()[:-2]) == {"write"} and all(len(a[0]) <= 1000 for m, a in writer.calls[:-2])
    assert writer.max_in_flight > 1  # blocks are pipelined, not one round trip each
    assert updates[0] == ("header", f"sending {src}\n")
    assert keys(updates) == ["header", "rc", "elapsed"] and dict(updates)["rc"] == 0


@pytest_twisted.ensureDeferred
async def test_upload_file_over_maxsize_is_truncated_with_rc_1(tmp_path: Path) -> None:
    src = tmp_path / "b1" / "build" / "big.txt"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"x" * 5000)
    writer = RecordingWriter()
    failure, updates = await run_transfer(UploadFile, tmp_path, {"workersrc": "big.txt", "writer": writer,
                                                                 "maxsize": 2500})
    assert failure is None and bytes(writer.data) == b"x" * 2500 and writer.methods()[-1] == "close"
    assert dict(updates)["rc"] == 1
    assert dict(updates)["stderr"] == f"Maximum filesize reached, truncating file '{src}'"


@pytest_twisted.ensureDeferred
async def test_upload_of_a_missing_file_says_so_and_closes_the_writer(tmp_path: Path) -> None:
    writer = RecordingWriter()
    failure, updates = await run_transfer(UploadFile, tmp_path, {"workersrc": "nope.txt", "writer": writer})
    path = tmp_path / "b1" / "build" / "nope.txt"
    assert failure is None and writer.methods() == ["close"]
    assert dict(updates)["rc"] == 1 and dict(updates)["stderr"] == f"Cannot open file '{path}' for upload"


@pytest_twisted.ensureDeferred
async def test_a_failing_writer_fails_the_command(tmp_path: Path) -> None:
    src = tmp_path / "b1" / "build" / "f.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(os.urandom(50_000))
    writer = RecordingWriter(fail_on="write", fail_after=3)
    failure, updates = await run_transfer(UploadFile, tmp_path, {"workersrc": "f.bin", "writer": writer})
    assert isinstance(failure, RemoteCallFailed) and "write failed on the master" in str(failure)
    assert dict(updates)["rc"] == 1 and writer.methods()[-1] == "close"


@pytest_twisted.ensureDeferred
async def test_upload_refuses_a_path_outside_the_base_directory(tmp_path: Path) -> None:
    (tmp_path / "b1").mkdir()
    ctx = CommandContext(REACTOR, PathPolicy(str(tmp_path)), str(tmp_path / "b1"), "b1")
    with pytest.raises(PermissionError, match="--allow-absolute-paths"):
        UploadFile(ctx, _Channel(), {"workdir": "build", "workersrc": "/etc/passwd", "writer": RecordingWriter(),
                                     "blocksize": 1000, "maxsize": None})
    with pytest.raises(ValueError, match="'writer' must be a transfer handle"):
        UploadFile(ctx, _Channel(), {"workdir": "build", "workersrc": "f", "writer": "nope", "blocksize": 1000})


# -- uploadDirectory --------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [None, "gz", "bz2"])
@pytest_twisted.ensureDeferred
async def test_upload_directory_sends_a_tar_and_unpacks(tmp_path: Path, compress: str | None) -> None:
    tree = tmp_path / "b1" / "build" / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "b.txt").write_text("b\n")
    (tree / "c.bin").write_bytes(os.urandom(20_000))
    writer = RecordingWriter()
    archives_before = set(Path(tempfile.gettempdir()).glob("workerwire-transfer-*"))
    failure, updates = await run_transfer(UploadDirectory, tmp_path, {"workersrc": "tree", "writer": writer,
                                                                      "compress": compress})
    assert set(Path(tempfile.gettempdir()).glob("workerwire-transfer-*")) <= archives_before  # removed
    assert failure is None and writer.methods()[-1] == "unpack" and "close" not in writer.methods()
    assert dict(updates)["rc"] == 0 and updates[0] == ("header", f"sending {tree}\n")
    mode = {None: "r:", "gz": "r:gz", "bz2": "r:bz2"}[compress]
    with tarfile.open(fileobj=io.BytesIO(bytes(writer.data)), mode=mode) as archive:  # type: ignore[call-overload]
        files = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore
    assert files == {"a/b.txt": b"b\n", "c.bin": (tree / "c.bin").read_bytes()}


@pytest_twisted.ensureDeferred
async def test_upload_of_a_missing_directory_fails_with_rc_1(tmp_path: Path) -> None:
    writer = RecordingWriter()
    failure, updates = await run_transfer(UploadDirectory, tmp_path, {"workersrc": "nope", "writer": writer,
                                                                      "compress": None})
    assert failure is None and writer.calls == []
    assert dict(updates)["rc"] == 1 and "Cannot read directory" in dict(updates)["stderr"]


# -- downloadFile -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_download_file_writes_content_and_mode(tmp_path: Path) -> None:
    content = os.urandom(77_777)
    reader = RecordingReader(content)
    failure, updates = await run_transfer(DownloadFile, tmp_path, {"workerdest": "dl/x.bin", "reader": reader,
                                                                   "mode": 0o640})
    dest = tmp_path / "b1" / "build" / "dl" / "x.bin"
    assert failure is None and dest.read_bytes() == content and dest.stat().st_mode & 0o777 == 0o640
    assert reader.methods()[-1] == "close" and reader.max_in_flight > 1
    assert keys(updates) == ["rc", "elapsed"] and dict(updates)["rc"] == 0
    assert sorted(p.name for p in dest.parent.iterdir()) == ["x.bin"]  # no temporary file left


@pytest_twisted.ensureDeferred
async def test_download_over_maxsize_is_truncated_with_rc_1(tmp_path: Path) -> None:
    reader = RecordingReader(b"y" * 5000)
    failure, updates = await run_transfer(DownloadFile, tmp_path, {"workerdest": "t.bin", "reader": reader,
                                                                   "maxsize": 3210, "mode": None})
    dest = tmp_path / "b1" / "build" / "t.bin"
    assert failure is None and dest.read_bytes() == b"y" * 3210
    assert dict(updates)["rc"] == 1
    assert dict(updates)["stderr"] == f"Maximum filesize reached, truncating file '{dest}'"


@pytest_twisted.ensureDeferred
async def test_a_download_that_fails_midway_leaves_no_destination(tmp_path: Path) -> None:
    dest = tmp_path / "b1" / "build" / "keep.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"the old content")
    reader = RecordingReader(os.urandom(50_000), fail_on="read", fail_after=5)
    failure, updates = await run_transfer(DownloadFile, tmp_path, {"workerdest": "keep.bin", "reader": reader,
                                                                   "mode": None})
    assert isinstance(failure, RemoteCallFailed) and dict(updates)["rc"] == 1
    assert dest.read_bytes() == b"the old content"  # untouched, and no partial file beside it
    assert sorted(p.name for p in dest.parent.iterdir()) == ["keep.bin"]
    assert reader.methods()[-1] == "close"


@pytest_twisted.ensureDeferred
async def test_a_lost_link_fails_a_download_the_same_way(tmp_path: Path) -> None:
    class LostReader(RecordingReader):
        def answer(self, method: str, args: tuple[Any, ...]) -> Any:
            if method == "read" and self.pos > 10_000:
                return ConnectionLost("the link to the master was lost")
            return super().answer(method, args)

    reader = LostReader(os.urandom(40_000))
    failure, _ = await run_transfer(DownloadFile, tmp_path, {"workerdest": "x.bin", "reader": reader, "mode": None})
    assert isinstance(failure, ConnectionLost)
    assert not (tmp_path / "b1" / "build" / "x.bin").exists()
    assert list((tmp_path / "b1" / "build").iterdir()) == []


# -- cpdir and the command list ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cpdir_copies_a_tree_like_cp_r(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        src = s.builder_dir / "src" / "x"
        src.mkdir(parents=True)
        (src / "y.txt").write_text("y\n")
        os.symlink("y.txt", src / "link")
        result, updates = await s.run("cpdir", {"fromdir": "src", "todir": "out/dst", "logEnviron": False})
    assert result.rc == 0 and (s.builder_dir / "out" / "dst" / "x" / "y.txt").read_text() == "y\n"
    assert os.readlink(s.builder_dir / "out" / "dst" / "x" / "link") == "y.txt"  # -P: links stay links
    assert "y.txt" in text(updates, "stdout")  # cp -v lists what it copied
    assert headers(updates).startswith("cp -R -P -p -v ")


def test_worker_commands_are_buildbot_workers_names_and_versions() -> None:
    registry = pytest.importorskip("buildbot_worker.commands.registry")
    base = pytest.importorskip("buildbot_worker.commands.base")
    theirs = {name: base.command_version for name in registry.getAllCommandNames()}
    ours = {name: cls.version for name, cls in COMMANDS.items()}
    assert ours == theirs


# -- shell ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_shell_headers_are_buildbot_workers(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        result, updates = await s.run("shell", {"command": ["echo", "a b"], "workdir": "w", "timeout": 1,
                                                "maxTime": 30, "logEnviron": False, "initial_stdin": "in"})
    lines = [v for k, v in updates if k == "header"]
    assert lines[:5] == [
        "echo 'a b'\n",
        f" in dir {s.builder_dir / 'w'} (timeout 1 sec) (maxTime 30 secs)\n",
        " watching logfiles {}\n",
        " argv: [b'echo', b'a b']\n",
        " writing 2 bytes to stdin\n",
    ]
    assert lines[5] == " using PTY: False\n" and result.rc == 0


@pytest_twisted.ensureDeferred
async def test_logfiles_are_sent_as_log_updates(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        workdir = s.builder_dir / "build"
        workdir.mkdir()
        (workdir / "old.log").write_text("from an earlier build\n")
        script = ("import time\n"
                  "open('some.log', 'w').write('one\\n')\n"
                  "time.sleep(2.5)\n"  # the watcher polls every 2 s: 'one' goes while the process runs
                  "open('some.log', 'a').write('two ✓\\n')\n"
                  "open('old.log', 'a').write('new line\\n')\n")
        result, updates = await s.run("shell", {
            "command": [PY, "-c", script], "workdir": "build", "logEnviron": False,
            "logfiles": {"mylog": "some.log", "followed": {"filename": "old.log", "follow": True}}})
    logs: dict[str, str] = {}
    for key, value in updates:
        if key == "log":
            name, chunk = value
            logs[name] = logs.get(name, "") + chunk
    assert result.rc == 0 and logs == {"mylog": "one\ntwo ✓\n", "followed": "new line\n"}
    assert " watching logfiles {'mylog': 'some.log', 'followed': {'filename': 'old.log', 'follow': True}}\n" \
        in headers(updates)
    assert keys(updates).index("log") < keys(updates).index("rc")


@pytest_twisted.ensureDeferred
async def test_use_pty_runs_the_command_on_a_terminal(tmp_path: Path) -> None:
    probe = "import os, sys; print(os.isatty(0), os.isatty(1)); print('err', file=sys.stderr)"
    async with Setup(tmp_path) as s:
        result, updates = await s.run("shell", {"command": [PY, "-c", probe], "usePTY": True, "logEnviron": False})
        plain, plain_updates = await s.run("shell", {"command": [PY, "-c", probe], "usePTY": False})
        stdin, stdin_updates = await s.run("shell", {"command": [PY, "-c", probe], "usePTY": True,
                                                     "initial_stdin": ""})
    assert result.rc == 0 and text(updates, "stdout") == "True True\r\nerr\r\n"  # one terminal for both
    assert " using PTY: True\n" in headers(updates)
    assert text(plain_updates, "stdout") == "False False\n" and text(plain_updates, "stderr") == "err\n"
    # As buildbot-worker: initial_stdin turns the PTY off, with a warning first.
    assert stdin_updates[0] == ("header", "WARNING: disabling usePTY for this command\n")
    assert text(stdin_updates, "stdout") == "False False\n"


@pytest_twisted.ensureDeferred
async def test_sigterm_time_sends_term_first_so_a_trap_runs(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        result, updates = await s.run("shell", {
            "command": "trap 'echo got TERM; exit 3' TERM; echo ready; sleep 60 & wait",
            "timeout": 1, "sigtermTime": 5, "logEnviron": False})
    assert text(updates, "stdout") == "ready\ngot TERM\n"
    assert result.rc == 3 and result.failure_reason == "timeout_without_output"


@pytest_twisted.ensureDeferred
async def test_interrupt_signal_follows_sigterm_time_when_term_is_ignored(tmp_path: Path) -> None:
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "signal.signal(signal.SIGINT, lambda *a: (print('got INT', flush=True), exit(5)))\n"
              "print('ready', flush=True)\ntime.sleep(30)\n")
    async with Setup(tmp_path) as s:
        updates: list[Any] = []
        started, target = s.start("shell", {"command": [PY, "-c", script], "sigtermTime": 0.5,
                                            "interruptSignal": "INT", "logEnviron": False}, updates)
        await started
        await until(lambda: "ready" in text(updates, "stdout"), "'ready' on stdout")
        await s.conn.remoteInterruptCommand("b1", "c1", "stop it")
        result = await target.done
    assert "got INT" in text(updates, "stdout") and result.rc == 5
    assert "stop it, attempting to kill" in headers(updates)


@pytest_twisted.ensureDeferred
async def test_max_lines_kills_a_chatty_command(tmp_path: Path) -> None:
    script = "import time\nfor i in range(10000):\n    print(i, flush=True)\n    time.sleep(0.001)\n"
    async with Setup(tmp_path) as s:
        result, updates = await s.run("shell", {"command": [PY, "-c", script], "max_lines": 20,
                                                "logEnviron": False})
    assert result.rc == -1 and result.failure_reason == "max_lines_failure"
    assert "command exceeds max lines: " in headers(updates) and "/20 written/allowed" in headers(updates)


@pytest_twisted.ensureDeferred
async def test_initial_stdin_reaches_the_process(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        result, updates = await s.run("shell", {"command": ["cat"], "initial_stdin": "fed ✓\n",
                                                "logEnviron": False})
    assert result.rc == 0 and text(updates, "stdout") == "fed ✓\n"
    assert " writing 8 bytes to stdin\n" in headers(updates)


@pytest_twisted.ensureDeferred
async def test_raw_output_is_bytes_exactly_as_written(tmp_path: Path) -> None:
    raw = b"\xff\xfe not utf-8 \xe2\x9c\n\x00end"
    script = f"import sys; sys.stdout.buffer.write({raw!r}); sys.stderr.buffer.write(b'\\x80')"
    async with Setup(tmp_path) as s:
        result, updates = await s.run("shell", {"command": [PY, "-c", script], "raw_output": True,
                                                "logEnviron": False})
        decoded, decoded_updates = await s.run("shell", {"command": [PY, "-c", script], "logEnviron": False})
    out = [v for k, v in updates if k == "stdout"]
    assert result.rc == 0 and all(isinstance(v, bytes) for v in out) and b"".join(out) == raw
    assert [v for k, v in updates if k == "stderr"] == [b"\x80"]
    assert text(decoded_updates, "stdout") == raw.decode("utf-8", "replace")
    assert all(isinstance(v, str) for k, v in updates if k == "header")


@pytest_twisted.ensureDeferred
async def test_log_environ_is_on_by_default_as_in_buildbot(tmp_path: Path) -> None:
    async with Setup(tmp_path) as s:
        _, updates = await s.run("shell", {"command": ["true"], "env": {"WW_MARK": "marked"}})
    assert " environment:\n" in headers(updates) and "  WW_MARK=marked\n" in headers(updates)


# -- worker info, against a real buildbot-worker ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_worker_info_has_a_real_buildbot_workers_keys_and_types(tmp_path: Path) -> None:
    """A stock buildbot-worker (its own create-worker, its own process) and a WorkerRuntime log in
    to the same workerwire pb master; their getWorkerInfo answers agree in keys and value types."""
    from test_pb_buildbot_worker import START_TIMEOUT, StockWorker

    from workerwire import Backoff, LinkOptions, load_backend
    from workerwire.conformance import RecordingMaster, within
    from workerwire_app import __version__
    from workerwire_app.worker_runtime import WorkerRuntime

    backend = load_backend("pb")
    master = RecordingMaster(REACTOR)
    listener = backend.create_listener(master, LinkOptions(keepalive_interval=None), REACTOR)
    stock_reg = await listener.updateRegistration("stock", "pw-stock", "tcp:port=0:interface=127.0.0.1")
    await listener.updateRegistration("ours", "pw-ours", "tcp:port=0:interface=127.0.0.1")
    port = stock_reg.getPort()
    stock = StockWorker(REACTOR, str(tmp_path / "stock"))
    runtime = WorkerRuntime(str(tmp_path / "ours"), REACTOR)
    connector = backend.create_connector(runtime, f"tcp:host=127.0.0.1:port={port}", "ours", "pw-ours",
                                         LinkOptions(keepalive_interval=None), REACTOR, Backoff(initial=0.05))
    try:
        await stock.create(port, "stock", "pw-stock")
        # The same info files as create-worker wrote for the stock worker.
        (tmp_path / "ours" / "info").mkdir()
        for name in os.listdir(tmp_path / "stock" / "info"):
            (tmp_path / "ours" / "info" / name).write_bytes((tmp_path / "stock" / "info" / name).read_bytes())
        stock_conn = master.whenConnection("stock")
        our_conn = master.whenConnection("ours")
        stock.start()
        connector.start()
        theirs = await (await within(stock_conn, REACTOR, START_TIMEOUT, what="buildbot-worker's login")
                        ).remoteGetWorkerInfo()
        ours = await (await within(our_conn, REACTOR, START_TIMEOUT, what="our worker's login")).remoteGetWorkerInfo()
    finally:
        await connector.stop()
        await stock.stop()
        await listener.stopListening()
    # The contract also promises access_uri; with no info/access_uri file it is None (a master reads
    # a missing key as None).
    assert "access_uri" not in theirs and ours.pop("access_uri") is None
    assert sorted(ours) == sorted(theirs)
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in theirs.items()}
    for key in ("admin", "host", "system", "numcpus", "worker_commands", "delete_leftover_dirs"):
        assert ours[key] == theirs[key], key
    assert ours["admin"].endswith("\n") and ours["delete_leftover_dirs"] == 0
    assert {k: v for k, v in ours.items() if k.startswith("os_")} == \
        {k: v for k, v in theirs.items() if k.startswith("os_")}
    assert ours["version"] == __version__ and ours["basedir"] == str(tmp_path / "ours")


# -- the link's transfer window -----------------------------------------------------------------


@pytest.mark.parametrize("window", [3000, 20_000])
@pytest_twisted.ensureDeferred
async def test_transfers_keep_the_links_window_full_and_no_fuller(tmp_path: Path, window: int) -> None:
    """Blocks go out while the handle's ``whenRoom()`` says the window has room
    (core's window, one per link), not up to a window of the runtime's own."""
    content = os.urandom(200_000)
    src = tmp_path / "b1" / "build" / "up.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(content)
    writer = RecordingWriter(window=window)
    failure, _ = await run_transfer(UploadFile, tmp_path, {"workersrc": "up.bin", "writer": writer})
    assert failure is None and bytes(writer.data) == content
    # Full: more than one block unanswered at a time; no fuller: one block past the window at most.
    assert 2 * 1000 < writer.max_bytes_in_flight < window + 1000

    reader = RecordingReader(content, window=window)
    failure, _ = await run_transfer(DownloadFile, tmp_path, {"workerdest": "down.bin", "reader": reader})
    assert failure is None and (tmp_path / "b1" / "build" / "down.bin").read_bytes() == content
    assert 2 * 1000 < reader.max_bytes_in_flight < window + 1000


@pytest_twisted.ensureDeferred
async def test_a_handle_without_when_room_gets_one_call_at_a_time(tmp_path: Path) -> None:
    content = os.urandom(20_000)
    src = tmp_path / "b1" / "build" / "up.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(content)
    writer = RecordingWriter(window=None)
    failure, _ = await run_transfer(UploadFile, tmp_path, {"workersrc": "up.bin", "writer": writer})
    assert failure is None and bytes(writer.data) == content and writer.max_in_flight == 1
    reader = RecordingReader(content, window=None)
    failure, _ = await run_transfer(DownloadFile, tmp_path, {"workerdest": "down.bin", "reader": reader})
    assert failure is None and (tmp_path / "b1" / "build" / "down.bin").read_bytes() == content
    assert reader.max_in_flight == 1


@pytest_twisted.ensureDeferred
async def test_an_upload_stops_at_the_first_failed_write(tmp_path: Path) -> None:
    src = tmp_path / "b1" / "build" / "up.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(os.urandom(100_000))
    writer = RecordingWriter(fail_on="write", fail_after=3, window=5000)
    failure, updates = await run_transfer(UploadFile, tmp_path, {"workersrc": "up.bin", "writer": writer})
    assert isinstance(failure, RemoteCallFailed) and dict(updates)["rc"] == 1
    # The writes already in the window when the failure came back, and no more.
    assert writer.methods().count("write") <= 4 + 5000 // 1000 + 1
    assert writer.methods()[-1] == "close"
