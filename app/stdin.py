"""This process's stdin as a command's ``initial_stdin`` (``workerwire exec`` and ``run``).

Both commands give the command on the worker what was piped into them,
Buildbot's ``initial_stdin``: all of it at once, so it is read to its end
first, up to a limit.  A terminal is never read (a command run by hand must
not wait for input nobody is going to type), nor is stdin when the user said
``--no-stdin`` / ``-n``.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.internet import threads

__all__ = ["StdinTooLong", "should_read", "read_stdin"]


class StdinTooLong(ValueError):
    """More than the limit was piped in; the message says what to do instead."""


def should_read(no_stdin: bool, stream: IO[bytes] | IO[str] | None = None) -> bool:
    """Read stdin? Not with ``--no-stdin``, not when there is none, and not from a terminal."""
    stream = sys.stdin if stream is None else stream
    if no_stdin or stream is None:
        return False
    try:
        return not stream.isatty()
    except ValueError:  # closed
        return False


async def read_stdin(prog: str, limit: int, stream: IO[bytes] | None = None) -> bytes:
    """All of *stream* (default: this process's stdin), read in a thread (a slow
    writer must not stop the reactor).

    :raises StdinTooLong: more than *limit* bytes; the message names *prog*,
        the limit, and the ways round it.
    """
    source: Any = sys.stdin.buffer if stream is None else stream
    data: bytes = await threads.deferToThread(source.read, limit + 1)
    if len(data) > limit:
        raise StdinTooLong(f"{prog}: stdin is longer than {limit} bytes ({_mib(limit)}), the most it passes to the "
                           "command; give the command a file instead (or --no-stdin to not read stdin)")
    return data


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"
