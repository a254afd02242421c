"""What a stock ``buildbot-worker`` 4.3 does with the transfer handles of a
workerwire master, checked the same way whichever Buildbot dialect carries them
(pb: remote references; msgpack: ``update_upload_file_write`` ... messages).

Each check takes a logged-in connection to the stock worker, the worker (for
its ``basedir``) and a temporary directory for the master's files; the test
modules of each dialect start the worker and call them.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from workerwire.conformance import RecordingCommand, within
from workerwire.transfer import DirectoryWriter, LocalFileReader, LocalFileWriter

#: Seconds one transfer command may take on buildbot-worker.
TIMEOUT = 30.0
MiB = 1024 * 1024


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


async def _run(conn: Any, command: str, args: dict[str, Any], command_id: str) -> RecordingCommand:
    rc = RecordingCommand()
    await conn.remoteStartCommand(rc, "b1", command_id, command, args)
    await within(rc.done, conn._clock, TIMEOUT, what=f"{command} on buildbot-worker")
    return rc


async def uploads_a_file_with_its_stamps(conn: Any, worker: Any, tmp_path: Any) -> None:
    await conn.remoteSetBuilderList([("b1", "b1")])
    source = os.path.join(worker.basedir, "b1", "build", "artifact.bin")
    os.makedirs(os.path.dirname(source))
    with open(source, "wb") as f:
        f.write(os.urandom(3 * MiB + 123))
    os.utime(source, (1_100_000_000, 1_300_000_000))
    target = str(tmp_path / "master" / "artifact.bin")
    rc = await _run(conn, "uploadFile", {
        "workdir": "build", "workersrc": "artifact.bin", "writer": LocalFileWriter(target), "maxsize": None,
        "blocksize": 16 * 1024, "keepstamp": True,
    }, "up-1")
    assert rc.completions == [None], rc.completions
    assert rc.values("rc") == [0], rc.updates
    assert _sha(target) == _sha(source)
    assert os.stat(target).st_mtime == pytest.approx(1_300_000_000, abs=1)
    assert len(conn.transfer_handles) == 0


async def uploads_a_directory_as_a_tar(conn: Any, worker: Any, tmp_path: Any) -> None:
    await conn.remoteSetBuilderList([("b1", "b1")])
    source = os.path.join(worker.basedir, "b1", "build", "out")
    os.makedirs(os.path.join(source, "sub"))
    files = {"a.txt": b"alpha\n", os.path.join("sub", "b.bin"): os.urandom(200_000)}
    for name, data in files.items():
        with open(os.path.join(source, name), "wb") as f:
            f.write(data)
    target = str(tmp_path / "master" / "out")
    rc = await _run(conn, "uploadDirectory", {
        "workdir": "build", "workersrc": "out", "writer": DirectoryWriter(target), "maxsize": None,
        "blocksize": 16 * 1024, "compress": "gz",
    }, "up-dir")
    assert rc.completions == [None], rc.completions
    for name, data in files.items():
        with open(os.path.join(target, name), "rb") as f:
            assert f.read() == data


async def downloads_a_file(conn: Any, worker: Any, tmp_path: Any) -> None:
    await conn.remoteSetBuilderList([("b1", "b1")])
    source = str(tmp_path / "master-file.bin")
    with open(source, "wb") as f:
        f.write(os.urandom(2 * MiB + 7))
    dest = os.path.join(worker.basedir, "b1", "build", "fetched", "file.bin")
    rc = await _run(conn, "downloadFile", {
        "workdir": "build", "workerdest": "fetched/file.bin", "reader": LocalFileReader(source),
        "maxsize": None, "blocksize": 16 * 1024, "mode": 0o640,
    }, "down-1")
    assert rc.completions == [None], rc.completions
    assert _sha(dest) == _sha(source)
    assert os.stat(dest).st_mode & 0o777 == 0o640
    assert len(conn.transfer_handles) == 0
