"""The ``shell`` command's ``logfiles``: files a process writes, sent to the master as ``log`` updates.

As in ``buildbot-worker``: each file is stat'ed when the command is set up;
it counts as started once its (ctime, mtime, size) differ from that first
look (so an old file left from an earlier build is not sent again); then what
it gained is read every :data:`POLL_INTERVAL` seconds and once more when the
process ends.  With ``follow`` only what was written after the first look is
sent (all of it if it was rewritten smaller); without it, the whole file once it changed.
"""

from __future__ import annotations

import codecs
import os
from typing import Any, BinaryIO, Callable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .paths import PathPolicy

__all__ = ["LogfileWatcher", "parse_logfiles", "POLL_INTERVAL", "READ_SIZE"]

_log = Logger()

#: Seconds between two looks at a watched file.
POLL_INTERVAL = 2.0
#: Bytes read from a watched file at a time.
READ_SIZE = 64 * 1024


def parse_logfiles(value: Any, paths: PathPolicy, workdir: str) -> list[tuple[str, str, bool]]:
    """``(name, absolute path, follow)`` for each entry of a ``logfiles`` argument.

    :raises ValueError: the argument is not ``{name: filename}`` or
        ``{name: {'filename': F, 'follow': bool}}``.
    :raises PathNotAllowed: a file lies outside the worker's base directory.
    """
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ValueError(f"argument 'logfiles' must be a dict of log name to file name, not {value!r}")
    out = []
    for name, spec in value.items():
        follow = False
        filename = spec
        if isinstance(spec, dict):
            filename = spec.get("filename")
            follow = bool(spec.get("follow", False))
        if not isinstance(name, str) or not name or not isinstance(filename, str) or not filename:
            raise ValueError(f"logfiles[{name!r}] must be a file name or {{'filename': F, 'follow': bool}}, "
                             f"not {spec!r}")
        out.append((name, paths.resolve(filename, workdir, f"logfiles[{name!r}]"), follow))
    return out


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (int(st.st_ctime), int(st.st_mtime), st.st_size)


class LogfileWatcher:
    """Polls one file and hands the text it gains to *on_text* ``(name, text)``."""

    def __init__(self, reactor: Any, name: str, path: str, follow: bool, on_text: Callable[[str, str], None]):
        self.name = name
        self.path = path
        self.follow = follow
        self.on_text = on_text
        self._first_look = _stat(path)
        self._file: BinaryIO | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._loop = LoopingCall(self.poll)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(POLL_INTERVAL, now=True).addErrback(
            lambda f: _log.failure("watching log file {path} failed", f, path=self.path))

    def stop(self) -> None:
        """One last look, then stop and close the file."""
        if self._loop.running:
            self._loop.stop()
        try:
            self.poll()
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None

    def poll(self) -> None:
        if self._file is None:
            now = _stat(self.path)
            if now == self._first_look:
                return  # not (re)written yet
            if now is None:  # deleted since the first look: whatever appears next is new
                self._first_look = None
                return
            try:
                self._file = open(self.path, "rb")
            except OSError as e:
                _log.warn("cannot open log file {path}: {why}", path=self.path, why=e.strerror or e)
                return
            if self.follow and self._first_look is not None and now[2] >= self._first_look[2]:
                # What it held at the first look is old; buildbot-worker 4.3 seeks to the size at
                # *this* look instead, which drops what was written between the two looks.
                self._file.seek(self._first_look[2])
        while True:
            data = self._file.read(READ_SIZE)
            if not data:
                return
            text = self._decoder.decode(data)
            if text:
                self.on_text(self.name, text)
