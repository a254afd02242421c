"""A master-side command target that collects what a command reports.

:class:`RemoteCommand` is the app's :class:`~workerwire.master.CommandTarget`:
it passes every update batch to an optional callback as it arrives (for live
streaming), remembers ``rc`` and ``elapsed``, keeps a bounded tail of the
output, and fires :attr:`RemoteCommand.done` with a :class:`CommandResult`
when the worker completes the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from workerwire import Update
from workerwire.errors import RemoteCallFailed, WorkerwireError

__all__ = ["RemoteCommand", "CommandResult", "failure_dict"]


@dataclass
class CommandResult:
    """How a command ended.

    :ivar rc: the last ``rc`` update (``None`` if the worker sent none).
    :ivar failure: ``None`` on success, else the core error it ended with
        (e.g. :class:`~workerwire.errors.ConnectionLost`).
    :ivar output_tail: the last ``tail_size`` characters of stdout and stderr,
        interleaved as they arrived.
    """

    rc: int | None = None
    elapsed: float | None = None
    failure: WorkerwireError | None = None
    output_tail: str = ""
    updates: int = 0
    failure_reason: str | None = None
    keys: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.failure is None and self.rc == 0


def failure_dict(error: BaseException | None) -> dict[str, str] | None:
    """``{"type": ..., "message": ...}`` for an event log or JSON output."""
    if error is None:
        return None
    if isinstance(error, RemoteCallFailed):
        return {"type": error.type_name, "message": error.remote_message}
    return {"type": type(error).__name__, "message": str(error)}


class RemoteCommand:
    """Collects one command's updates; see the module docstring.

    :param on_update: called with each batch of updates, in order; what it
        returns is returned from ``remote_update`` (a Deferred there lets a
        backend with flow control hold the worker back until it fires).
    :param tail_size: characters of stdout/stderr kept for :attr:`CommandResult.output_tail`.
    :param keep: other update keys whose last value is kept in
        :attr:`CommandResult.keys` (e.g. ``"files"`` or ``"stat"``).
    """

    def __init__(self, on_update: Callable[[list[Update]], Any] | None = None, tail_size: int = 4096,
                 keep: tuple[str, ...] = ("files", "stat")):
        self._on_update = on_update
        self._tail_size = tail_size
        self._keep = keep
        self.result = CommandResult()
        self.done: Deferred[CommandResult] = Deferred()
        self._tail: list[str] = []
        self._tail_len = 0

    def remote_update(self, updates: list[Update]) -> Any:
        for key, value in updates:
            self.result.updates += 1
            if key in ("stdout", "stderr") and isinstance(value, (str, bytes)):
                self._add_tail(value if isinstance(value, str) else value.decode("utf-8", "replace"))
            elif key == "rc":
                self.result.rc = value
            elif key == "elapsed":
                self.result.elapsed = value
            elif key == "failure_reason":
                self.result.failure_reason = value
            elif key in self._keep:
                self.result.keys[key] = value
        if self._on_update is not None:
            return self._on_update(updates)
        return None

    def remote_complete(self, failure: Any = None) -> None:
        if self.done.called:
            return
        if isinstance(failure, Failure):
            failure = failure.value
        if failure is not None and not isinstance(failure, WorkerwireError):
            failure = RemoteCallFailed(type(failure).__name__, str(failure))
        self.result.failure = failure
        self.result.output_tail = "".join(self._tail)[-self._tail_size:]
        self.done.callback(self.result)

    def _add_tail(self, text: str) -> None:
        self._tail.append(text)
        self._tail_len += len(text)
        while self._tail_len - len(self._tail[0]) >= self._tail_size:
            self._tail_len -= len(self._tail.pop(0))
