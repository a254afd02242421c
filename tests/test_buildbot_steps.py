"""A real Buildbot 4.x master runs the same builds on a stock ``buildbot-worker`` and on
``workerwire worker --backend pb``: every step must end the same way with the same content.

One master per worker kind (both run at once, each worker a real subprocess
on loopback), one builder per step type of issue 11's table, all builds in
parallel.  Each test then compares one builder's build on the two workers:
the step results, and the content (the uploaded file on the master, the
downloaded file on the worker, the log text).

The transfer steps (FileUpload, DirectoryUpload, MultipleFileUpload,
FileDownload, StringDownload, JSONStringDownload) go through the pb backend's
transfer handles: the Buildbot master's own FileWriter/FileReader references.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList, ensureDeferred

from buildbot_master import (EXCEPTION, FAILURE, SUCCESS, Builder, BuildbotMaster, BuildResult, HarnessError,
                             WorkerProcess)

pytest.importorskip("buildbot", reason="buildbot (the master) is a test dependency (setup.cfg)")
pytest.importorskip("buildbot_worker", reason="buildbot-worker is a test dependency (setup.cfg)")

KINDS = ("buildbot-worker", "workerwire")
WORKER = "w1"
PASSWORD = "pw-steps"
#: Seconds every build of one kind has, together, to finish.
BUILDS_TIMEOUT = 150.0

UPLOAD_TEXT = "".join(f"upload line {i:06d} ✓\n" for i in range(40_000))  # ~900 KiB: several 256 KiB blocks
WRITE_UPLOAD = ("open('up.txt', 'w', encoding='utf-8').write("
                "''.join('upload line %06d \\u2713\\n' % i for i in range(40_000)))")
STAMP = 1577934245  # 2020-01-02 03:04:05 UTC, set on the worker's file and kept by keepstamp
STRING = "a string download ✓\n"
JSON_VALUE = {"a": [1, 2, 3], "b": "ü", "c": None}
PTY_PROBE = "import os; print('tty' if os.isatty(0) and os.isatty(1) else 'notty')"


def builders(root: Path, repo: Path, download_src: Path) -> list[Builder]:
    """The builds, one builder per step type; master-side paths under *root*."""
    up = root / "uploads"
    return [
        Builder("shell", WORKER, "[steps.ShellCommand(command=['sh', '-c', 'echo hello; echo oops >&2'])]"),
        Builder("fileops", WORKER, """[
            steps.MakeDirectory(dir='build/mk/a'),
            steps.ShellCommand(command=['touch', 'mk/a/f.txt']),
            steps.FileExists(file='build/mk/a/f.txt'),
            steps.RemoveDirectory(dir='build/mk'),
            steps.ShellCommand(command=['test', '!', '-e', 'mk']),
        ]"""),
        Builder("upload", WORKER, f"""[
            steps.ShellCommand(command=[{sys.executable!r}, '-c', {WRITE_UPLOAD!r}]),
            steps.ShellCommand(command=['touch', '-d', '@{STAMP}', 'up.txt']),
            steps.FileUpload(workersrc='up.txt', masterdest={str(up / 'up.txt')!r}, keepstamp=True),
        ]"""),
        Builder("dirupload", WORKER, f"""[
            steps.ShellCommand(command='mkdir -p tree/a && echo b > tree/a/b.txt && echo c > tree/c.txt'),
            steps.DirectoryUpload(workersrc='tree', masterdest={str(up / 'tree')!r}),
            steps.DirectoryUpload(workersrc='tree', masterdest={str(up / 'tree_gz')!r}, compress='gz'),
        ]"""),
        Builder("multiupload", WORKER, f"""[
            steps.ShellCommand(command='echo one > m1.txt && echo two > m2.txt && echo no > x.log'),
            steps.MultipleFileUpload(workersrcs=['*.txt'], masterdest={str(up / 'multi')!r}, glob=True),
        ]"""),
        Builder("download", WORKER, f"""[
            steps.FileDownload(mastersrc={str(download_src)!r}, workerdest='dl/data.bin', mode=0o640),
            steps.StringDownload({STRING!r}, workerdest='s.txt'),
            steps.JSONStringDownload({JSON_VALUE!r}, workerdest='j.json'),
            steps.ShellCommand(command=['sha256sum', 'dl/data.bin']),
        ]"""),
        Builder("cpdir", WORKER, """[
            steps.ShellCommand(command='mkdir -p srcdir/x && echo y > srcdir/x/y.txt'),
            steps.CopyDirectory(src='build/srcdir', dest='build/dstdir'),
        ]"""),
        Builder("git", WORKER, f"""[
            steps.Git(repourl={str(repo)!r}, branch='master', mode='full', method='copy'),
            steps.ShellCommand(command=['cat', 'README']),
        ]"""),
        Builder("logfiles", WORKER, """[
            steps.ShellCommand(command='echo one > some.log; echo two >> some.log; echo done',
                               logfiles={'mylog': 'some.log'}),
        ]"""),
        Builder("pty", WORKER, f"[steps.ShellCommand(command=[{sys.executable!r}, '-c', {PTY_PROBE!r}], usePTY=True)]"),
        Builder("sigterm", WORKER, """[
            steps.ShellCommand(command="trap 'echo got TERM; exit 3' TERM; echo ready; sleep 60 & wait",
                               timeout=2, sigtermTime=5),
        ]"""),
    ]


@dataclass
class KindRun:
    """Everything one worker kind produced."""

    kind: str
    root: Path
    worker_dir: Path
    builds: dict[str, BuildResult]
    errors: dict[str, str]

    def build(self, name: str) -> BuildResult:
        if name in self.errors:
            raise AssertionError(f"{self.kind}: {self.errors[name]}")
        return self.builds[name]

    def uploaded(self, *parts: str) -> Path:
        return self.root.joinpath("uploads", *parts)

    def on_worker(self, builder: str, *parts: str) -> Path:
        return self.worker_dir.joinpath(builder, *parts)


def _git_repo(path: Path) -> None:
    path.mkdir(parents=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    (path / "README").write_text("from the test repository\n")
    for argv in (["git", "init", "-q", "-b", "master"], ["git", "add", "README"], ["git", "commit", "-q", "-m", "one"]):
        subprocess.run(argv, cwd=path, env=env, check=True, timeout=60)


async def _run_kind(kind: str, root: Path, repo: Path, download_src: Path) -> KindRun:
    master = BuildbotMaster(root / "master", {WORKER: PASSWORD}, builders(root, repo, download_src))
    worker_dir = root / "worker"
    make = WorkerProcess.stock if kind == "buildbot-worker" else WorkerProcess.workerwire
    worker = make(worker_dir, master.worker_port, WORKER, PASSWORD)
    run = KindRun(kind, root, worker_dir, {}, {})
    await master.start()
    try:
        await worker.start()
        await master.wait_for_worker(WORKER, 90)
        names = [b.name for b in master.builders]
        results = await DeferredList([ensureDeferred(master.run_build(n, BUILDS_TIMEOUT)) for n in names],
                                     consumeErrors=True)
        for name, (ok, value) in zip(names, results):
            if ok:
                run.builds[name] = value
            else:
                run.errors[name] = f"{value.getErrorMessage()}\nworker output:\n{worker.output[-4000:]}"
    finally:
        await worker.stop()
        await master.stop()
    return run


@dataclass
class Runs:
    """Both worker kinds' runs, and the master-side file the download builds fetch."""

    kinds: dict[str, KindRun]
    download_src: Path

    def __getitem__(self, kind: str) -> KindRun:
        return self.kinds[kind]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Both worker kinds' builds (their masters run at the same time, each with every build at once)."""
    base = tmp_path_factory.mktemp("buildbot-steps")
    repo = base / "repo"
    _git_repo(repo)
    download_src = base / "download.bin"
    download_src.write_bytes(os.urandom(200_000))
    done = DeferredList([ensureDeferred(_run_kind(kind, base / kind, repo, download_src)) for kind in KINDS],
                        consumeErrors=True)
    results = pytest_twisted.blockon(done)
    kinds: dict[str, KindRun] = {}
    for kind, (ok, value) in zip(KINDS, results):
        if not ok:
            raise HarnessError(f"{kind}: {value.getErrorMessage()}")
        kinds[kind] = value
    return Runs(kinds, download_src)


def _failed_logs(build: BuildResult) -> str:
    return "\n".join(f"{s.name} {name}: {s.log_text(name, 'oeh')}" for s in build.steps if s.result != SUCCESS
                     for name in s.logs)


def same_steps(runs: Runs, builder: str, expected: int = SUCCESS) -> tuple[BuildResult, BuildResult]:
    """The two builds of *builder*: same step results, and the build ended with *expected*."""
    stock, ours = (runs[k].build(builder) for k in KINDS)
    assert ours.summary() == stock.summary(), f"{builder}: stock {stock.summary()} != workerwire {ours.summary()}"
    assert stock.result == expected, f"{builder} on buildbot-worker: {stock.summary()}\n{_failed_logs(stock)}"
    assert ours.result == stock.result
    return stock, ours


def test_plain_shell(runs: Runs) -> None:
    for build in same_steps(runs, "shell"):
        stdio = build.step("shell")
        assert stdio.log_text("stdio", "o") == "hello\n" and stdio.log_text("stdio", "e") == "oops\n"


def test_mkdir_stat_rmdir(runs: Runs) -> None:
    same_steps(runs, "fileops")
    for kind in KINDS:
        assert not runs[kind].on_worker("fileops", "build", "mk").exists()


def test_file_upload_keeps_content_and_stamp(runs: Runs) -> None:
    same_steps(runs, "upload")
    for kind in KINDS:
        path = runs[kind].uploaded("up.txt")
        assert path.read_text() == UPLOAD_TEXT, kind
        assert int(path.stat().st_mtime) == STAMP, kind


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_directory_upload_plain_and_gz(runs: Runs) -> None:
    same_steps(runs, "dirupload")
    for kind in KINDS:
        for name in ("tree", "tree_gz"):
            assert _tree(runs[kind].uploaded(name)) == {"a/b.txt": "b\n", "c.txt": "c\n"}, (kind, name)


def test_multiple_file_upload_with_glob(runs: Runs) -> None:
    same_steps(runs, "multiupload")
    for kind in KINDS:
        assert _tree(runs[kind].uploaded("multi")) == {"m1.txt": "one\n", "m2.txt": "two\n"}, kind


def test_file_string_and_json_downloads(runs: Runs) -> None:
    builds = same_steps(runs, "download")
    src = runs.download_src
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    for kind, build in zip(KINDS, builds):
        data = runs[kind].on_worker("download", "build", "dl", "data.bin")
        assert data.read_bytes() == src.read_bytes(), kind
        assert data.stat().st_mode & 0o777 == 0o640, kind
        assert runs[kind].on_worker("download", "build", "s.txt").read_text() == STRING
        assert json.loads(runs[kind].on_worker("download", "build", "j.json").read_text()) == JSON_VALUE
        assert build.steps[-1].log_text("stdio", "o").startswith(digest), kind


def test_copy_directory(runs: Runs) -> None:
    same_steps(runs, "cpdir")
    for kind in KINDS:
        assert runs[kind].on_worker("cpdir", "build", "dstdir", "x", "y.txt").read_text() == "y\n", kind
        assert runs[kind].on_worker("cpdir", "build", "srcdir", "x", "y.txt").exists(), kind


def test_git_full_copy(runs: Runs) -> None:
    builds = same_steps(runs, "git")
    for kind, build in zip(KINDS, builds):
        assert build.steps[-1].log_text("stdio", "o") == "from the test repository\n", kind
        assert runs[kind].on_worker("git", "source", "README").exists(), kind


def test_shell_logfiles_fill_the_log(runs: Runs) -> None:
    builds = same_steps(runs, "logfiles")
    for kind, build in zip(KINDS, builds):
        step = build.steps[-1]
        assert step.log_text("mylog") == "one\ntwo\n", kind
        assert " watching logfiles {'mylog': 'some.log'}\n" in step.log_text("stdio", "h"), kind


def test_use_pty_runs_on_a_terminal(runs: Runs) -> None:
    builds = same_steps(runs, "pty")
    for kind, build in zip(KINDS, builds):
        step = build.steps[-1]
        assert step.log_text("stdio", "o") == "tty\n", kind  # the master splits the terminal's \r\n
        assert " using PTY: True\n" in step.log_text("stdio", "h"), kind


def test_timeout_sends_sigterm_first_and_the_trap_runs(runs: Runs) -> None:
    builds = same_steps(runs, "sigterm", expected=FAILURE)
    for kind, build in zip(KINDS, builds):
        step = build.steps[-1]
        assert step.log_text("stdio", "o") == "ready\ngot TERM\n", kind
        headers = step.log_text("stdio", "h")
        assert "command timed out: 2 seconds without output" in headers, kind
        assert "program finished with exit code 3" in headers, kind


def test_no_step_ended_in_exception(runs: Runs) -> None:
    """An EXCEPTION would also quarantine the worker on the master."""
    for kind in KINDS:
        bad = [(name, b.summary()) for name, b in runs[kind].builds.items() if b.result == EXCEPTION]
        assert not bad and not runs[kind].errors, (kind, bad, runs[kind].errors)
