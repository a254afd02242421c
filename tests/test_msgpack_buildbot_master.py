"""The msgpack backend's worker against the real thing: a Buildbot 4.3 master
from PyPI (``tests/buildbot_master.py``: ``buildbot create-master``, sqlite, no
web UI) whose workers dial ``c['protocols']['msgpack_experimental_v7']``, run
in the foreground as a subprocess, and the workerwire worker as its user runs
it (``workerwire worker --backend msgpack_experimental_v7``), also a
subprocess.

A build with a shell step and a file upload runs on it; the test checks what
the steps did on both ends and what the master recorded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pytest_twisted import ensureDeferred as async_test

from buildbot_master import SUCCESS, Builder, BuildbotMaster, WorkerProcess

PROTOCOL = "msgpack_experimental_v7"


@async_test
async def test_a_real_buildbot_master_runs_a_shell_step_on_the_workerwire_worker(tmp_path: Path) -> None:
    uploaded = tmp_path / "uploaded-marker.txt"
    hello = (f"[steps.ShellCommand(name='hello', command=[{sys.executable!r}, '-c', "
             "\"import os, sys; print('hello from', os.getcwd()); sys.stderr.write('to stderr\\\\n'); "
             "open('marker.txt', 'w').write('ran')\"]), "
             f"steps.FileUpload(workersrc='marker.txt', masterdest={str(uploaded)!r})]")
    master = BuildbotMaster(tmp_path / "master", {"ww1": "pw-ww-1"}, [Builder("b1", "ww1", hello)],
                            protocol=PROTOCOL)
    worker = WorkerProcess.workerwire(tmp_path / "ww-worker", master.worker_port, "ww1", "pw-ww-1", PROTOCOL,
                                      "--keepalive-interval", "5")
    await master.start()
    try:
        await worker.start()
        await master.wait_for_worker("ww1")
        build = await master.run_build("b1")
        assert build.result == SUCCESS, (build.summary(), worker.output, master.log_text()[-4000:])
        stdio = build.step("hello").log_text("stdio")
        assert "hello from" in stdio and "to stderr" in stdio
        assert (worker.basedir / "b1" / "build" / "marker.txt").read_text() == "ran"
        # The upload went through Buildbot's update_upload_file_* messages.  (No download step:
        # Buildbot 4.3's msgpack master answers update_read_file with None instead of the data,
        # docs/protocols/msgpack.md section 6, so a download from it fails with any worker.)
        assert uploaded.read_text() == "ran"
        master_log = master.log_text()
        assert "worker 'ww1' attaching" in master_log
        assert "pw-ww-1" not in worker.output
        for bad in ("Traceback", "protocol error", "does not exist"):
            assert bad not in worker.output and bad not in master_log, (bad, worker.output)
    finally:
        await worker.stop()
        await master.stop()
