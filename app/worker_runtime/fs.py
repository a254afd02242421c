"""File commands, with Buildbot's names, arguments and updates.

Paths are relative to the builder's directory (absolute ones are accepted
when they lie inside the worker's base directory, or anywhere with
``--allow-absolute-paths``).  Each command ends with ``rc`` ``0``, or with a
``header`` naming the error and ``rc`` set to its errno, as
``buildbot-worker`` reports it.

=========  ===========================================  ====================
command    arguments                                    extra updates
=========  ===========================================  ====================
mkdir      ``dir`` (str) or ``paths`` (list)            —
rmdir      ``dir`` (str or list) or ``paths`` (list)    —
stat       ``file`` (+ optional ``workdir``) or ``path``  ``stat`` (10 ints)
listdir    ``dir`` or ``path``                          ``files``
glob       ``path`` (a pattern; ``**`` recurses)        ``files``
rmfile     ``path``                                     —
cpdir      ``fromdir``, ``todir`` (+ ``timeout``,        as ``shell``
           ``maxTime``, ``logEnviron``)
=========  ===========================================  ====================

``cpdir`` runs ``cp -R -P -p -v FROM TO`` in the worker's base directory, as
``buildbot-worker`` does on POSIX, so its log shows what was copied.

Slow work (``rmdir``, ``glob``) runs in the reactor's thread pool, never in
the reactor thread.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat as stat_module
import sys
from typing import Any, Callable

from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from workerwire import CommandChannel

from .base import Command, CommandContext, errno_rc, header_line
from .shell import ShellCommand

__all__ = ["MakeDirectory", "RemoveDirectory", "StatFile", "ListDir", "GlobPath", "RemoveFile", "CopyDirectory",
           "FS_COMMANDS"]


def _path_list(args: dict[str, Any], single: str, many: str) -> list[str]:
    value = args.get(many) if many in args else args.get(single)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"argument {single!r} (a path or list of paths) or {many!r} (a list) is required")
    return value


def _one_path(args: dict[str, Any], *keys: str) -> tuple[str, str]:
    for key in keys:
        value = args.get(key)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ValueError(f"argument {key!r} must be a non-empty string, not {value!r}")
            return key, value
    raise ValueError(f"argument {' or '.join(repr(k) for k in keys)} is required")


class _FileCommand(Command):
    """Runs :meth:`work` and reports its updates, or its OSError as header + errno."""

    header = "?"

    def _report(self, updates: list[Any]) -> None:
        self.send(updates)
        self.finish(None)

    def _failed(self, error: OSError, path: str) -> None:
        self._report([header_line(f"{self.header}: {error.strerror or error}: {path}"), ("rc", errno_rc(error))])

    def _in_thread(self, work: Callable[[], list[Any]], path: str) -> None:
        reactor = self.ctx.reactor
        d = deferToThreadPool(reactor, reactor.getThreadPool(), work)

        def failed(f: Failure) -> None:
            if isinstance(f.value, OSError):
                self._failed(f.value, path)
            else:
                self.send([header_line(f"{self.header}: {f.getErrorMessage()}"), ("rc", -1)])
                self.finish(f.value)

        d.addCallbacks(self._report, failed)


class MakeDirectory(_FileCommand):
    name = header = "mkdir"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        self.paths = [ctx.paths.resolve(p, ctx.builder_dir, "dir") for p in _path_list(args, "dir", "paths")]

    def start(self) -> None:
        for path in self.paths:
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as e:
                self._failed(e, path)
                return
        self._report([("rc", 0)])


class RemoveDirectory(_FileCommand):
    name = header = "rmdir"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        self.paths = [ctx.paths.resolve(p, ctx.builder_dir, "dir") for p in _path_list(args, "dir", "paths")]
        for path in self.paths:
            if os.path.realpath(path) == os.path.realpath(ctx.paths.basedir):
                raise ValueError(f"refusing to remove the worker's base directory {path!r}")

    def start(self) -> None:
        def work() -> list[Any]:
            updates: list[Any] = []
            rc = 0
            for path in self.paths:
                try:
                    _remove_tree(path)
                except OSError as e:
                    updates.append(header_line(f"rmdir: {e.strerror or e}: {e.filename or path}"))
                    rc = errno_rc(e)  # keep going, as buildbot-worker does; report the failure
            return [*updates, ("rc", rc)]

        self._in_thread(work, ", ".join(self.paths))


def _remove_tree(path: str) -> None:
    """``rm -rf``: a missing path is fine; unwritable directories are made writable first."""
    if not os.path.lexists(path):
        return
    if os.path.isfile(path) or os.path.islink(path):
        os.remove(path)
        return

    def retry(func: Callable[[str], Any], target: str, exc: BaseException) -> None:
        if not isinstance(exc, PermissionError):
            raise exc
        parent = os.path.dirname(target)
        os.chmod(parent, os.stat(parent).st_mode | stat_module.S_IRWXU)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, os.stat(target).st_mode | stat_module.S_IRWXU)
            shutil.rmtree(target)
        else:
            func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=lambda f, p, ei: retry(f, p, ei[1]))


class StatFile(_FileCommand):
    name = header = "stat"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        key, value = _one_path(args, "file", "path")
        base = ctx.builder_dir
        if key == "file" and args.get("workdir"):
            base = ctx.paths.resolve(args["workdir"], ctx.builder_dir, "workdir")
        self.path = ctx.paths.resolve(value, base, key)

    def start(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as e:
            self._failed(e, self.path)
            return
        self._report([("stat", [int(x) for x in tuple(st)]), ("rc", 0)])


class ListDir(_FileCommand):
    name = header = "listdir"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        key, value = _one_path(args, "dir", "path")
        self.path = ctx.paths.resolve(value, ctx.builder_dir, key)

    def start(self) -> None:
        try:
            files = os.listdir(self.path)
        except OSError as e:
            self._failed(e, self.path)
            return
        self._report([("files", files), ("rc", 0)])


class GlobPath(_FileCommand):
    name = header = "glob"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        _, value = _one_path(args, "path")
        self.pattern = ctx.paths.resolve(value, ctx.builder_dir, "path")

    def start(self) -> None:
        paths = self.ctx.paths

        def work() -> list[Any]:
            found = glob.glob(self.pattern, recursive=True)
            if not paths.allow_absolute:
                found = [f for f in found if paths.inside(f)]
            return [("files", found), ("rc", 0)]

        self._in_thread(work, self.pattern)


class RemoveFile(_FileCommand):
    name = header = "rmfile"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        _, value = _one_path(args, "path")
        self.path = ctx.paths.resolve(value, ctx.builder_dir, "path")

    def start(self) -> None:
        try:
            os.remove(self.path)
        except OSError as e:
            self._failed(e, self.path)
            return
        self._report([("rc", 0)])


class CopyDirectory(ShellCommand):
    """``cpdir``: copy ``fromdir`` to ``todir`` (both relative to the builder's directory)."""

    name = "cpdir"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        from_key, from_dir = _one_path(args, "fromdir", "from_path")
        to_key, to_dir = _one_path(args, "todir", "to_path")
        self.from_path = ctx.paths.resolve(from_dir, ctx.builder_dir, from_key)
        self.to_path = ctx.paths.resolve(to_dir, ctx.builder_dir, to_key)
        shell_args = {
            "command": ["cp", "-R", "-P", "-p", "-v", self.from_path, self.to_path],
            "workdir": ctx.paths.basedir,
            "timeout": args.get("timeout", 120),
            "maxTime": args.get("maxTime"),
            "logEnviron": args.get("logEnviron", True),
        }
        super().__init__(ctx, channel, shell_args)
        self.args = args

    def start(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.to_path), exist_ok=True)
        except OSError as e:
            self.send([header_line(f"cpdir: {e.strerror or e}: {self.to_path}"), ("rc", errno_rc(e))])
            self.finish(None)
            return
        super().start()


FS_COMMANDS: dict[str, type[Command]] = {
    cls.name: cls for cls in (MakeDirectory, RemoveDirectory, StatFile, ListDir, GlobPath, RemoveFile, CopyDirectory)
}
