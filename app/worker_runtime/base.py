"""What every worker command shares: its context, ordered update sending, completion."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire import CommandChannel, Update
from workerwire.errors import ConnectionLost

from .paths import PathPolicy

__all__ = ["Command", "CommandContext", "UpdateSender", "arg_str", "arg_number", "arg_seconds", "arg_flag",
           "errno_rc", "header_line"]

_log = Logger()


@dataclass(frozen=True)
class CommandContext:
    """Where a command runs.

    :ivar builder_dir: the builder's directory (``basedir/builddir``); relative
        paths in ``args`` are relative to it, as with ``buildbot-worker``.
    """

    reactor: Any
    paths: PathPolicy
    builder_dir: str
    builder_name: str


class UpdateSender:
    """Sends updates through a channel one batch at a time, in order.

    Batches queued while one is in flight are merged and sent together when
    it has been accepted, so a slow link makes batches bigger rather than
    queueing many small calls.  Once the link is lost, further updates are
    dropped (the master already failed the command with ConnectionLost).
    """

    def __init__(self, channel: CommandChannel):
        self.channel = channel
        self._queue: list[Update] = []
        self.in_flight = False
        self.lost = False
        self._idle_waiters: list[Deferred[None]] = []
        #: Called each time the sender becomes idle (for flow control).
        self.on_idle: list[Any] = []

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, updates: list[Update]) -> None:
        if self.lost or not updates:
            return
        self._queue.extend(updates)
        if not self.in_flight:
            self._send_next()

    def idle(self) -> Deferred[None]:
        """Fire when everything queued has been accepted (or the link was lost)."""
        d: Deferred[None] = Deferred()
        if not self.in_flight and not self._queue:
            d.callback(None)
        else:
            self._idle_waiters.append(d)
        return d

    def _send_next(self) -> None:
        batch, self._queue = self._queue, []
        self.in_flight = True
        try:
            d = self.channel.update(batch)
        except Exception as e:  # a channel should fail its Deferred, but be safe
            d = Deferred()
            d.errback(Failure(e))
        d.addBoth(self._sent)

    def _sent(self, result: object) -> None:
        self.in_flight = False
        if isinstance(result, Failure):
            if not result.check(ConnectionLost):
                _log.warn("sending updates of command {cid} failed: {why}", cid=self.channel.commandId,
                          why=result.getErrorMessage())
            self.lost = True
            self._queue = []
        if self._queue:
            self._send_next()
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for w in waiters:
            w.callback(None)
        for cb in list(self.on_idle):
            cb()


class Command(abc.ABC):
    """One running worker command (Buildbot's ``Command``).

    A subclass checks ``args`` in ``__init__`` (raising ``ValueError`` or
    ``TypeError`` refuses the start), does its work from :meth:`start`, and
    ends with :meth:`finish` exactly once.
    """

    #: The Buildbot command name.
    name: ClassVar[str]
    #: The version reported in ``worker_commands`` (Buildbot's numbering).
    version: ClassVar[str] = "3.3"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        self.ctx = ctx
        self.channel = channel
        self.args = args
        self.sender = UpdateSender(channel)
        self.finished: Deferred[None] = Deferred()
        self.interrupted = False
        #: when :meth:`start` was called (reactor seconds); ``elapsed`` is measured from it
        self.started_at = ctx.reactor.seconds()
        #: set once the command sent its own ``elapsed`` update (else :meth:`finish` sends one)
        self.elapsed_sent = False
        self._done = False

    @property
    def command_id(self) -> str:
        return self.channel.commandId

    @abc.abstractmethod
    def start(self) -> None:
        """Begin the work; call :meth:`finish` when it ends."""

    def interrupt(self, why: str) -> None:
        """Stop promptly; the default (for short commands) does nothing."""
        self.interrupted = True

    def send(self, updates: list[Update]) -> None:
        self.sender.send(updates)

    def finish(self, error: BaseException | None = None) -> None:
        """Complete the command once every update was accepted.

        Like ``buildbot-worker``, every command's last update is ``elapsed``
        (seconds since it started); it is added here unless the command sent it.
        """
        if self._done:
            return
        self._done = True
        if not self.elapsed_sent:
            self.send([("elapsed", self.ctx.reactor.seconds() - self.started_at)])

        def complete(_: object) -> None:
            if not self.sender.lost:
                d = self.channel.complete(error)
                d.addErrback(lambda f: None if f.check(ConnectionLost) else _log.warn(
                    "completing command {cid} failed: {why}", cid=self.command_id, why=f.getErrorMessage()))
            self.finished.callback(None)

        self.sender.idle().addCallback(complete)


def arg_str(args: dict[str, Any], key: str, default: str | None = None) -> str:
    value = args.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"argument {key!r} must be a non-empty string, not {value!r}")
    return value


def arg_number(args: dict[str, Any], key: str) -> float | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"argument {key!r} must be a positive number of seconds or None, not {value!r}")
    return float(value)


def arg_seconds(args: dict[str, Any], key: str, allow_zero: bool = False) -> float | int | None:
    """A duration in seconds, as given (an int stays an int, for Buildbot's header text), or None."""
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        valid = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        raise ValueError(f"argument {key!r} must be {valid} or None, not {value!r}")
    return value


def arg_flag(args: dict[str, Any], key: str, default: bool) -> bool:
    """A yes/no argument; Buildbot masters send bools, ``0``/``1`` or None (the default)."""
    value = args.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise ValueError(f"argument {key!r} must be true or false, not {value!r}")


def errno_rc(error: OSError) -> int:
    """The ``rc`` Buildbot's file commands report for an OSError: its errno."""
    return error.errno if error.errno else 1


def header_line(text: str) -> Update:
    return ("header", text if text.endswith("\n") else text + "\n")

