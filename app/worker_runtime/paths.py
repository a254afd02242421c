"""Keeping command paths inside the worker's base directory."""

from __future__ import annotations

import os

__all__ = ["PathPolicy", "PathNotAllowed"]


class PathNotAllowed(PermissionError):
    """A path in a command's args points outside the worker's base directory."""


class PathPolicy:
    """Resolves paths from a master the way ``buildbot-worker`` does, but safely.

    A relative path is joined to a base (the builder's directory).  The
    result, with ``..`` and symbolic links resolved, must lie inside the
    worker's base directory unless *allow_absolute* is set (the worker was
    started with ``--allow-absolute-paths``); absolute paths inside the base
    directory are always accepted.
    """

    def __init__(self, basedir: str, allow_absolute: bool = False):
        self.basedir = os.path.abspath(basedir)
        self._real_basedir = os.path.realpath(self.basedir)
        self.allow_absolute = allow_absolute

    def resolve(self, path: str, base: str, what: str = "path") -> str:
        """Return *path* joined to *base*, normalized.

        :raises PathNotAllowed: it lies outside the base directory.
        :raises ValueError: *path* is not a non-empty string.
        """
        if not isinstance(path, str) or not path or "\0" in path:
            raise ValueError(f"{what} must be a non-empty string without NUL characters, not {path!r}")
        full = os.path.normpath(os.path.join(base, path))
        if not self.allow_absolute and not self.inside(full):
            raise PathNotAllowed(
                f"{what} {path!r} resolves to {full!r}, outside the worker's base directory {self.basedir!r}; "
                "valid: a path inside it (or start the worker with --allow-absolute-paths)")
        return full

    def inside(self, path: str) -> bool:
        """True if *path* (symbolic links resolved) is the base directory or below it."""
        real = os.path.realpath(path)
        return real == self._real_basedir or real.startswith(self._real_basedir.rstrip(os.sep) + os.sep)
