"""Each command's output kept in a file under the master's state directory.

``STATE_DIR/jobs/<UTC time>-<worker>-<command id>.log`` holds, in the order
they arrived, the command's ``header`` lines and its stdout and stderr bytes
exactly as the worker sent them (a str update is written as UTF-8).  At most
``[master] job_logs_kept`` files are kept: when a new one is opened, the
oldest beyond that number are removed (names sort by time).
"""

from __future__ import annotations

import os
import re
import time
from typing import IO

from twisted.logger import Logger

from workerwire import Update

__all__ = ["JobLog", "open_job_log"]

_log = Logger()

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class JobLog:
    """One command's output file (see the module docstring)."""

    def __init__(self, path: str, file: IO[bytes]):
        self.path = path
        self._file: IO[bytes] | None = file

    def write(self, updates: list[Update]) -> None:
        f = self._file
        if f is None:
            return
        try:
            for key, value in updates:
                if key in ("stdout", "stderr", "header"):
                    f.write(value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape"))
            f.flush()
        except OSError as e:
            _log.warn("cannot write the job output file {path}: {why}; no more output is kept",
                      path=self.path, why=e.strerror or e)
            self.close()

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass


def open_job_log(state_dir: str, keep: int, worker: str, command_id: str) -> JobLog | None:
    """A new output file, after removing the oldest beyond *keep*; None when
    *keep* is 0 or the file cannot be created (logged: a job never fails for it)."""
    if keep <= 0:
        return None
    folder = os.path.join(state_dir, "jobs")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:]
    name = f"{stamp}Z-{_UNSAFE.sub('_', worker)}-{_UNSAFE.sub('_', command_id)}.log"
    path = os.path.join(folder, name)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        _rotate(folder, keep - 1)
        file = open(path, "xb")
    except OSError as e:
        _log.warn("cannot keep the output of {command} in {path}: {why}", command=command_id, path=path,
                  why=e.strerror or e)
        return None
    return JobLog(path, file)


def _rotate(folder: str, keep: int) -> None:
    logs = sorted(n for n in os.listdir(folder) if n.endswith(".log"))
    for name in logs[:max(0, len(logs) - keep)]:
        try:
            os.remove(os.path.join(folder, name))
        except FileNotFoundError:
            pass
