"""Ready-made file transfer handles for a master: a local file to write
atomically, a directory to unpack a tar into, a local file to read.

Importable from :mod:`workerwire.transfer` as well.
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import tarfile
import tempfile
from typing import Any

from .transfer import FileReader, FileWriter

__all__ = ["LocalFileWriter", "DirectoryWriter", "LocalFileReader"]


class LocalFileWriter(FileWriter):
    """Writes to a temporary file beside *path*, renamed to *path* at
    :meth:`close`: the destination never exists half-written.  The temporary
    file is made at the first call, so a writer that is never used (its
    command refused) leaves nothing behind.

    :param maxsize: refuse writes beyond this many bytes in total.
    :param mode: file mode applied at close (e.g. ``0o644``).
    """

    def __init__(self, path: str, maxsize: int | None = None, mode: int | None = None):
        self.path = os.path.abspath(path)
        self.maxsize = maxsize
        self.mode = mode
        self.size = 0
        self.temp_path: str | None = None
        self._times: tuple[float, float] | None = None
        self._file: io.BufferedWriter | None = None
        self._done = False

    def _open(self) -> io.BufferedWriter:
        if self._done:
            raise ValueError(f"writer of {self.path} is closed")
        if self._file is None:
            directory = os.path.dirname(self.path)
            os.makedirs(directory, exist_ok=True)
            fd, self.temp_path = tempfile.mkstemp(
                prefix="." + os.path.basename(self.path) + ".", suffix=".part", dir=directory)
            self._file = os.fdopen(fd, "wb")
        return self._file

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"write takes bytes, not {type(data).__name__}")
        f = self._open()
        if self.maxsize is not None and self.size + len(data) > self.maxsize:
            self.cancel()
            raise OSError(f"upload to {self.path} exceeds its maximum size of {self.maxsize} bytes")
        f.write(data)
        self.size += len(data)

    def utime(self, times: Any) -> None:
        atime, mtime = times
        self._times = (float(atime), float(mtime))
        if self._done and os.path.exists(self.path):
            os.utime(self.path, self._times)  # after close, as buildbot-worker sends it

    def close(self) -> None:
        f = self._open()
        self._file = None
        self._done = True
        f.close()
        assert self.temp_path is not None
        if self.mode is not None:
            os.chmod(self.temp_path, self.mode)
        os.replace(self.temp_path, self.path)
        if self._times is not None:
            os.utime(self.path, self._times)

    def cancel(self) -> None:
        self._done = True
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.temp_path is not None:
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass


class DirectoryWriter(LocalFileWriter):
    """Receives a tar archive (gzip, bzip2 or none, detected from its first
    bytes) and unpacks it into *directory* on :meth:`unpack`.  The archive is
    kept in a temporary file beside *directory* and removed at :meth:`close`.

    Every member is checked before anything is unpacked: one that would land
    outside *directory* (absolute path, ``..``, a link pointing out) or is not
    a plain file, directory or link fails ``unpack`` and nothing is unpacked.
    """

    def __init__(self, directory: str, maxsize: int | None = None):
        self.directory = os.path.abspath(directory)
        parent = os.path.dirname(self.directory)
        super().__init__(os.path.join(parent, "." + os.path.basename(self.directory) + ".tar"), maxsize)

    def _members(self) -> Any:
        assert self.temp_path is not None
        with open(self.temp_path, "rb") as archive:
            head = archive.read(3)
        opener: Any = gzip.open if head[:2] == b"\x1f\x8b" else bz2.open if head == b"BZh" else open
        return opener(self.temp_path, "rb")

    def unpack(self) -> None:
        """Unpack the archive and remove it: the upload is over (as with
        Buildbot's ``DirectoryWriter``, no ``close`` needs to follow)."""
        self._open().flush()
        try:
            os.makedirs(self.directory, exist_ok=True)
            with self._members() as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
                for member in tar:  # check all first: nothing unpacked from a bad archive
                    tarfile.data_filter(member, self.directory)
            with self._members() as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
                tar.extractall(self.directory, filter="data")
        finally:
            self.cancel()  # the archive itself is not kept

    def close(self) -> None:
        if self._done:
            return  # after unpack
        self._open()
        self.cancel()  # closed without unpack: nothing to deliver


class LocalFileReader(FileReader):
    """Reads a local file in the pieces the worker asks for (opened at the
    first read)."""

    def __init__(self, path: str):
        self.path = path
        self._file: Any = None
        self._done = False

    def read(self, max_length: int) -> bytes:
        if self._done:
            raise ValueError(f"reader of {self.path} is closed")
        if self._file is None:
            self._file = open(self.path, "rb")  # at the first read: an unused reader holds nothing
        data: bytes = self._file.read(max(0, int(max_length)))
        return data

    def close(self) -> None:
        self._done = True
        if self._file is not None:
            self._file.close()
            self._file = None
