"""File transfer commands: ``uploadFile``, ``uploadDirectory``, ``downloadFile``.

They behave as ``buildbot-worker`` 4.3's (``commands/transfer.py``): same
arguments, same updates, same step results.  The master passes a transfer
handle in ``args``: ``writer`` (uploads: ``write(data)``, ``utime((atime,
mtime))``, ``unpack()``, ``close()``) or ``reader`` (downloads:
``read(maxLength) -> bytes``, ``close()``), each an object with
``callRemote(method, *args) -> Deferred`` whose failures are workerwire core
errors.

=================  ===============================================  ===========================
command            arguments                                        updates
=================  ===============================================  ===========================
uploadFile         ``workdir``, ``workersrc``, ``writer``,          ``header`` ``sending PATH``,
                   ``blocksize``, ``maxsize``, ``keepstamp``        ``rc``, ``stderr`` on error
uploadDirectory    ``workdir``, ``workersrc``, ``writer``,          the same
                   ``blocksize``, ``maxsize``, ``compress``
                   (None, ``"gz"``, ``"bz2"``)
downloadFile       ``workdir``, ``workerdest``, ``reader``,         ``rc``, ``stderr`` on error
                   ``blocksize``, ``maxsize``, ``mode``
=================  ===============================================  ===========================

(``path`` instead of ``workdir`` + ``workersrc``/``workerdest`` is accepted
too; the ``upload_file``, ``upload_directory`` and ``download_file``
spellings name the same commands.)  A source that cannot be read, or a
destination that cannot be written, ends with ``rc`` 1 and a ``stderr``
message; more than ``maxsize`` bytes end with ``rc`` 1 and "Maximum filesize
reached" (as in ``buildbot-worker``, also when the file is exactly
``maxsize`` bytes).  A handle call that fails ends the command with that
failure.  An interrupt stops the transfer at the next block with ``rc`` 1.
With ``keepstamp`` and a source that cannot be read, no ``utime`` is sent
(``buildbot-worker`` sends ``utime((None, None))``, which fails on the master).

Unlike ``buildbot-worker``, which waits for each block's answer before
sending the next, blocks stream while the link's transfer window has room
(the proxy's ``whenRoom()``, :meth:`workerwire.transfer.TransferProxy.whenRoom`:
one window per link, ``LinkOptions.output_window``, shared by every transfer
on it; handles answer in order), a directory is archived in a thread instead
of the reactor's, and a download is written to a temporary file beside the
destination that replaces it only once the transfer ended: a failed download
leaves no partial file that looks complete.  A handle without ``whenRoom``
gets one call at a time, as ``buildbot-worker`` makes them.
"""

from __future__ import annotations

import collections
import os
import tarfile
import tempfile
from typing import Any, Callable, Literal, overload

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire import CommandChannel

from .base import Command, CommandContext, header_line

__all__ = ["UploadFile", "UploadDirectory", "DownloadFile", "TRANSFER_COMMANDS"]

_log = Logger()

def _handle(args: dict[str, Any], key: str) -> Any:
    handle = args.get(key)
    if not callable(getattr(handle, "callRemote", None)):
        raise ValueError(f"argument {key!r} must be a transfer handle from the master, not {handle!r}")
    return handle


@overload
def _size(args: dict[str, Any], key: str, required: Literal[True]) -> int: ...
@overload
def _size(args: dict[str, Any], key: str, required: Literal[False]) -> int | None: ...
def _size(args: dict[str, Any], key: str, required: bool) -> int | None:
    """A size in bytes: required ones are >= 1, optional ones >= 0 or None."""
    value = args.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < (1 if required else 0):
        raise ValueError(f"argument {key!r} must be a number of bytes{'' if required else ' or None'}, "
                         f"not {value!r}")
    return value


def _transfer_path(ctx: CommandContext, args: dict[str, Any], *keys: str) -> str:
    """``workdir`` + ``workersrc``/``workerdest`` (``~`` expanded, as buildbot-worker does), or ``path``."""
    if isinstance(args.get("path"), str) and not any(k in args for k in keys):
        return ctx.paths.resolve(args["path"], ctx.builder_dir, "path")
    for key in keys:
        value = args.get(key)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ValueError(f"argument {key!r} must be a non-empty string, not {value!r}")
            workdir = args.get("workdir") or "."
            if not isinstance(workdir, str):
                raise ValueError(f"argument 'workdir' must be a string, not {workdir!r}")
            base = ctx.paths.resolve(workdir, ctx.builder_dir, "workdir")
            return ctx.paths.resolve(os.path.expanduser(value), base, key)
    raise ValueError(f"argument {keys[0]!r} (or 'path') is required")


def _swallow(f: Failure) -> None:
    return None


class _Transfer(Command):
    """Shared ending: ``rc`` and ``stderr`` as buildbot-worker's ``TransferCommand`` sends them."""

    #: the worker-side file or directory (set by each command)
    path: str

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        self.blocksize = _size(args, "blocksize", required=True)
        self.maxsize = _size(args, "maxsize", required=False)
        self.rc = 0
        self.stderr: str | None = None

    def start(self) -> None:
        ensureDeferred(self.run()).addErrback(self._failed)

    async def run(self) -> None:
        raise NotImplementedError

    def interrupt(self, why: str) -> None:
        if not self.interrupted:
            self.rc = 1
        super().interrupt(why)

    def fail_with(self, rc: int, stderr: str) -> None:
        self.rc = rc
        if self.stderr is None:
            self.stderr = stderr

    def end(self, error: BaseException | None = None) -> None:
        updates: list[Any] = [("rc", self.rc)]
        if self.stderr:
            updates.append(("stderr", self.stderr))
        self.send(updates)
        self.finish(error)

    def _failed(self, f: Failure) -> None:
        self.rc = 1
        _log.warn("{name} (command {cid}) failed: {why}", name=self.name, cid=self.command_id,
                  why=f.getErrorMessage())
        self.end(f.value)

    async def send_blocks(self, read: Callable[[int], bytes], writer: Any) -> None:
        """``write`` the blocks *read* gives, each as soon as the link's transfer
        window has room (``writer.whenRoom()``), without waiting for answers
        in between; a failed write stops the sending and raises."""
        when_room: Callable[[], Deferred[None]] | None = getattr(writer, "whenRoom", None)
        pending: collections.deque[Deferred[Any]] = collections.deque()
        failures: list[Failure] = []

        def failed(f: Failure) -> None:
            failures.append(f)

        remaining = self.maxsize
        try:
            while not self.interrupted and not failures:
                length = self.blocksize if remaining is None else min(self.blocksize, remaining)
                if length <= 0:
                    self.fail_with(1, f"Maximum filesize reached, truncating file '{self.path}'")
                    break
                data = read(length)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                if when_room is not None:
                    await when_room()
                while pending and (when_room is None or pending[0].called):
                    await pending.popleft()  # answered already, or (no window) one call at a time
                if failures:
                    break
                d = writer.callRemote("write", data)
                d.addErrback(failed)
                pending.append(d)
            while pending:
                await pending.popleft()
        finally:
            pending.clear()  # after a failure: the later answers do not matter (their errors are taken)
        if failures:
            failures[0].raiseException()


class UploadFile(_Transfer):
    """``uploadFile``: send one file to the master's writer."""

    name = "uploadFile"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        self.path = _transfer_path(ctx, args, "workersrc", "slavesrc")
        self.writer = _handle(args, "writer")
        self.keepstamp = bool(args.get("keepstamp", False))

    async def run(self) -> None:
        stamps = None
        fp = None
        try:
            if self.keepstamp:
                stamps = (os.path.getatime(self.path), os.path.getmtime(self.path))
            fp = open(self.path, "rb")
        except OSError:
            self.fail_with(1, f"Cannot open file '{self.path}' for upload")
        self.send([header_line(f"sending {self.path}")])
        try:
            if fp is not None:
                await self.send_blocks(fp.read, self.writer)
        except BaseException:
            self.rc = 1
            if fp is not None:
                fp.close()
            try:
                await self.writer.callRemote("close")
            except Exception as e:
                _log.warn("closing the master's writer after a failed upload failed too: {why}", why=e)
            raise
        if fp is not None:
            fp.close()
        await self.writer.callRemote("close")
        if stamps is not None:
            await self.writer.callRemote("utime", stamps)
        self.end()


class UploadDirectory(_Transfer):
    """``uploadDirectory``: send a directory as a tar archive (optionally gz/bz2) and have the master unpack it."""

    name = "uploadDirectory"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        self.path = _transfer_path(ctx, args, "workersrc", "slavesrc")
        self.writer = _handle(args, "writer")
        self.compress = args.get("compress")
        if self.compress not in (None, "gz", "bz2"):
            raise ValueError(f"argument 'compress' must be None, 'gz' or 'bz2', not {self.compress!r}")

    def _archive(self) -> str:
        """Write the tar archive to a temporary file (in a thread); return its name."""
        fd, name = tempfile.mkstemp(prefix="workerwire-transfer-")
        mode = {"gz": "w|gz", "bz2": "w|bz2"}.get(self.compress or "", "w")
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(mode=mode, fileobj=f) as archive:  # type: ignore
                archive.add(self.path, "")
        except BaseException:
            os.remove(name)
            raise
        return name

    async def run(self) -> None:
        reactor = self.ctx.reactor
        try:
            tarname = await deferToThreadPool(reactor, reactor.getThreadPool(), self._archive)
        except OSError as e:
            self.fail_with(1, f"Cannot read directory '{self.path}' for upload: {e}")
            self.end()
            return
        try:
            self.send([header_line(f"sending {self.path}")])
            with open(tarname, "rb") as fp:
                await self.send_blocks(fp.read, self.writer)
            try:
                await self.writer.callRemote("unpack")
            except BaseException:
                self.rc = 1
                raise
        finally:
            os.remove(tarname)
        self.end()


class DownloadFile(_Transfer):
    """``downloadFile``: read a file from the master's reader into ``workerdest``."""

    name = "downloadFile"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        self.path = _transfer_path(ctx, args, "workerdest", "slavedest")
        self.reader = _handle(args, "reader")
        mode = args.get("mode")
        if mode is not None and (isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777):
            raise ValueError(f"argument 'mode' must be a file mode such as 0o644 (420) or None, not {mode!r}")
        self.mode: int | None = mode
        self.part: str | None = None

    def _open(self) -> Any:
        """The temporary file beside the destination, or None (``rc`` 1) if it cannot be made."""
        if os.path.isdir(self.path):
            raise IsADirectoryError(self.path)
        directory, base = os.path.split(self.path)
        for attempt in range(100):
            part = os.path.join(directory, f".{base}.{os.getpid()}-{attempt}.part")
            try:
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            self.part = part
            if self.mode is not None:
                os.chmod(part, self.mode)
            return os.fdopen(fd, "wb")
        raise FileExistsError(f"no free temporary name beside {self.path}")

    async def run(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        fp = None
        try:
            fp = self._open()
        except OSError:
            self.fail_with(1, f"Cannot open file '{self.path}' for download")
        try:
            if fp is not None:
                await self._receive(fp)
        except BaseException:
            if fp is not None:
                fp.close()
            self._discard()
            await self._close_reader()
            raise
        await self._close_reader()
        if fp is not None:
            fp.close()
            try:
                os.replace(self.part, self.path)  # type: ignore[arg-type]
            except OSError:
                self._discard()
                self.fail_with(1, f"Cannot open file '{self.path}' for download")
        self.end()

    def _discard(self) -> None:
        if self.part is not None:
            try:
                os.remove(self.part)
            except OSError:
                pass

    async def _close_reader(self) -> None:
        try:
            await self.reader.callRemote("close")
        except Exception as e:
            _log.warn("closing the master's reader failed: {why}", why=e)

    async def _receive(self, fp: Any) -> None:
        """``read`` blocks into *fp*, asking for the next while the link's
        transfer window has room (``reader.whenRoom()``); stop at an empty block."""
        blocksize = self.blocksize
        when_room: Callable[[], Deferred[None]] | None = getattr(self.reader, "whenRoom", None)
        unrequested = self.maxsize  # bytes still allowed that no read asked for yet (None: no limit)
        in_flight: collections.deque[tuple[Deferred[Any], int]] = collections.deque()
        eof = False
        try:
            while True:
                while not eof and not self.interrupted and (unrequested is None or unrequested > 0):
                    if in_flight:
                        if when_room is None:
                            break  # no window: one read at a time
                        room = when_room()
                        if not room.called:
                            break  # the window is full: take an answer first
                    elif when_room is not None:
                        await when_room()  # the window may be full of other transfers' calls
                    length = blocksize if unrequested is None else min(blocksize, unrequested)
                    if unrequested is not None:
                        unrequested -= length
                    in_flight.append((self.reader.callRemote("read", length), length))
                if not in_flight:
                    break
                d, length = in_flight.popleft()
                data = await d
                if not isinstance(data, bytes):
                    raise TypeError(f"the master's reader answered {type(data).__name__}, not bytes")
                if eof:
                    continue
                if not data:
                    eof = True
                    continue
                if len(data) > length:
                    raise ValueError(f"the master's reader answered {len(data)} bytes to a read of {length}")
                if unrequested is not None:
                    unrequested += length - len(data)
                fp.write(data)
        finally:
            for d, _ in in_flight:
                d.addErrback(_swallow)
        if not eof and not self.interrupted:
            self.fail_with(1, f"Maximum filesize reached, truncating file '{self.path}'")


def _alias(cls: type[_Transfer], name: str) -> type[Command]:
    return type(cls.__name__ + "Alias", (cls,), {"name": name, "__doc__": f"``{name}``: the same as ``{cls.name}``."})


TRANSFER_COMMANDS: dict[str, type[Command]] = {
    "uploadFile": UploadFile,
    "upload_file": _alias(UploadFile, "upload_file"),
    "uploadDirectory": UploadDirectory,
    "upload_directory": _alias(UploadDirectory, "upload_directory"),
    "downloadFile": DownloadFile,
    "download_file": _alias(DownloadFile, "download_file"),
}
