"""What ``workerwire exec`` and ``workerwire run`` print, and the exit status they give.

:class:`CommandPrinter` streams a command's updates to this process's stdout
and stderr, byte for byte (a ``bytes`` update, as a worker sends with the
``raw_output`` arg, is written as is; a ``str`` update as UTF-8), or with
``--json`` as one line per update in the order they arrived:
``{"update": KEY, "value": V}``, where stdout/stderr that is not valid UTF-8
is ``{"update": KEY, "b64": BASE64}`` instead, so nothing is lost.

:func:`exit_status` is the rule both commands follow:

* the command's exit code when it exited (0-255);
* ``128 + N`` when this command was stopped by signal N (SIGINT, SIGTERM,
  SIGHUP; the command on the worker is interrupted, and killed by the
  worker's interrupt signal);
* ``128 + N`` when signal N killed the command (also after a ``--timeout``);
* ``255`` when workerwire itself failed (the link dropped, the worker refused
  the command), as ``ssh`` does.

:func:`ending` says in one line why the status is what it is, when it is not
simply the command's exit code (printed on stderr; in ``--json`` it is the
final record's ``reason``).
"""

from __future__ import annotations

import base64
import json
import re
import signal
from dataclasses import dataclass, field
from typing import IO, Any

from twisted.internet.defer import Deferred

from workerwire import Update

from .output import OutputWriter

__all__ = ["CommandPrinter", "Ending", "exit_status", "ending", "SIGTERM_GRACE"]

#: Seconds a command of ``exec``/``run`` has between SIGTERM and SIGKILL when
#: it is interrupted or times out (the ``shell`` command's ``sigtermTime``).
SIGTERM_GRACE = 5.0

_KILLED = re.compile(r"process killed by signal (\d+)")
_TIMED_OUT = re.compile(r"command timed out: (.+?)(?: running |, attempting|\n|$)")


@dataclass
class Ending:
    """What the updates said about how the command ended."""

    killed_by: int | None = None
    timed_out: str | None = None
    interrupted_by: list[int] = field(default_factory=list)


class CommandPrinter:
    """Streams updates (see the module docstring); call it with each batch."""

    def __init__(self, reactor: Any, as_json: bool, stdout: IO[bytes], stderr: IO[bytes]):
        self.as_json = as_json
        self.stdout = stdout
        self.stderr = stderr
        self.writer = OutputWriter(reactor)
        self.ending = Ending()
        #: Called once if stdout or stderr stops taking output (e.g. ``| head`` exited).
        self.on_broken: Any = None

    def __call__(self, updates: list[Update]) -> Deferred[None]:
        """Queue the output; the result fires when the terminal has caught up."""
        for key, value in updates:
            if key == "header" and isinstance(value, str):
                m = _KILLED.search(value)
                if m:
                    self.ending.killed_by = int(m.group(1))
                t = _TIMED_OUT.search(value)
                if t:
                    self.ending.timed_out = t.group(1).strip()
            if self.as_json:
                self.writer.write(self.stdout, _json_line(key, value))
            elif key in ("stdout", "stderr") and isinstance(value, (str, bytes)):
                data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
                self.writer.write(self.stdout if key == "stdout" else self.stderr, data)
        if self.writer.broken is not None and self.on_broken is not None:
            on_broken, self.on_broken = self.on_broken, None
            on_broken()
        return self.writer.room()

    def finish(self, record: dict[str, Any]) -> None:
        if self.as_json:
            self.writer.write(self.stdout, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self.writer.close()


def _json_line(key: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return (json.dumps({"update": key, "b64": base64.b64encode(value).decode("ascii")}) + "\n").encode()
    return (json.dumps({"update": key, "value": _jsonable(value)}, ensure_ascii=False) + "\n").encode("utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def exit_status(rc: int | None, failure: BaseException | None, end: Ending) -> int:
    """The exit status (see the module docstring)."""
    if failure is not None or rc is None:
        return 255
    if end.interrupted_by:
        return 128 + end.interrupted_by[0] if rc < 0 or rc >= 128 or end.killed_by else _plain(rc)
    if rc == -1 and end.killed_by is not None:
        return 128 + end.killed_by
    return _plain(rc)


def _plain(rc: int) -> int:
    return rc if 0 <= rc <= 255 else 255


def ending(rc: int | None, failure: BaseException | None, end: Ending) -> str | None:
    """Why the exit status is what it is, in one line; None for a plain exit."""
    status = exit_status(rc, failure, end)
    if failure is not None:
        return f"the command failed: {failure} (exit status 255)"
    if rc is None:
        return "the worker reported no exit code (exit status 255)"
    killed = f"; the command was killed by {_signame(end.killed_by)}" if end.killed_by else ""
    if end.interrupted_by and status == 128 + end.interrupted_by[0]:
        return f"interrupted by {_signame(end.interrupted_by[0])}{killed} (exit status {status} = 128 + " \
               f"{end.interrupted_by[0]})"
    if end.timed_out is not None:
        return f"the command timed out ({end.timed_out}){killed} (exit status {status})"
    if end.killed_by is not None and rc == -1:
        return f"the command was killed by {_signame(end.killed_by)} (exit status {status} = 128 + {end.killed_by})"
    return None


def _signame(signum: int | None) -> str:
    try:
        return f"{signal.Signals(signum).name} ({signum})"  # type: ignore[arg-type]
    except ValueError:
        return f"signal {signum}"
