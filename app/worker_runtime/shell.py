"""The ``shell`` command: run a process, stream its output, report its exit.

It behaves as ``buildbot-worker`` 4.3's ``shell`` (``runprocess.py``) does,
so a Buildbot master sees the same updates.  Arguments (Buildbot's names;
others are ignored):

``command``
    an argv list (nested lists are flattened, numbers become strings,
    ``('obfuscated', real, fake)`` items run *real* and show *fake*) or a
    string, which runs through ``/bin/sh -c``.
``workdir``
    relative to the builder's directory (default: the builder's directory);
    created if missing; must stay inside the worker's base directory.
``env``
    variables to set; ``None`` removes one, a list is joined with
    ``os.pathsep``, ``${NAME}`` is replaced by the worker's value of NAME, and
    a ``PYTHONPATH`` is prepended to the worker's own.
``timeout``
    seconds without output before the process is killed
    (``failure_reason`` ``timeout_without_output``).
``maxTime``
    seconds in total before it is killed (``failure_reason`` ``timeout``).
``max_lines``
    lines of stdout+stderr after which it is killed
    (``failure_reason`` ``max_lines_failure``).
``sigtermTime``, ``interruptSignal``
    how a kill (interrupt or timeout) goes: without ``sigtermTime`` the
    process group gets ``interruptSignal`` (default ``KILL``) at once; with
    it, SIGTERM first, then ``interruptSignal`` if the process still runs
    ``sigtermTime`` seconds later.  A process that outlives an interrupt
    signal other than KILL gets SIGKILL 5 s later (``buildbot-worker`` would
    abandon it still running).
``logfiles``
    ``{name: filename}`` or ``{name: {'filename': F, 'follow': bool}}``,
    relative to ``workdir``: each file is polled every 2 s while the process
    runs (and once after it ends) and what it gains is sent as ``log``
    updates ``(name, text)``; with ``follow`` only what is written after the
    command started.
``usePTY``
    run on a pseudo-terminal (stdout and stderr then arrive together on
    ``stdout``); disabled, with a warning header, when ``initial_stdin`` is set.
``want_stdout``, ``want_stderr``, ``initial_stdin``, ``logEnviron`` (default true)
    as in Buildbot.
``raw_output`` (workerwire extension, never sent by Buildbot)
    ``stdout``/``stderr`` updates are ``bytes`` exactly as the process wrote
    them, instead of text decoded as UTF-8.

Updates, in this order: ``header`` lines describing the command (the command,
`` in dir ...``, `` watching logfiles {...}``, `` argv: ...``, the environment,
`` writing N bytes to stdin``, `` using PTY: ...``), then ``stdout``/``stderr``
/``log`` as they arrive (batched up to 64 KiB or 0.1 s), and at the end
``rc`` (``-1`` if a signal killed it, with a header naming the signal), a
``header`` ``elapsedTime=...`` and ``elapsed``.

The process runs in its own process group (its own session on a PTY), so a
kill reaches everything it started.  While the link has not accepted the
previous batch and 64 KiB more are waiting, the process's output is not read,
so a process that writes faster than the link carries blocks instead of
filling the worker's memory.
"""

from __future__ import annotations

import codecs
import os
import re
import shlex
import signal
import sys
from typing import Any, Mapping

from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from workerwire import CommandChannel, Update

from .base import Command, CommandContext, arg_flag, arg_seconds, header_line
from .logfiles import LogfileWatcher, parse_logfiles

__all__ = ["ShellCommand", "build_env", "BATCH_SIZE", "BATCH_TIME", "KILL_GRACE"]

_log = Logger()

#: Largest stdout/stderr batch, in characters (bytes with ``raw_output``), before it is sent at once.
BATCH_SIZE = 64 * 1024
#: Longest time output waits to be batched with more.
BATCH_TIME = 0.1
#: Seconds a process has to die after an interrupt signal other than KILL before it gets SIGKILL
#: (``buildbot-worker``'s ``BACKUP_TIMEOUT``).
KILL_GRACE = 5.0
#: Seconds after SIGKILL before the worker stops waiting for the process.
GIVE_UP_AFTER = 5.0

# Runs in the child: become a process group leader (so an interrupt reaches
# everything the command starts; on a PTY it already leads its own session),
# then become the command.
_LAUNCHER = (
    "import os,sys\n"
    "try:\n"
    "    os.setpgid(0,0)\n"
    "except OSError:\n"
    "    pass\n"
    "try:\n"
    "    os.execvp(sys.argv[1],sys.argv[1:])\n"
    "except OSError as e:\n"
    "    sys.stderr.write('workerwire: cannot run %r: %s\\n'%(sys.argv[1],e.strerror))\n"
    "    sys.exit(127 if isinstance(e,FileNotFoundError) else 126)\n"
)

_SUBST = re.compile(r"\$\{([0-9a-zA-Z_]*)\}")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_NEWLINES_BYTES = re.compile(rb"\r\n|\r|\n")


def build_env(base: Mapping[str, str], changes: Any) -> dict[str, str]:
    """The process environment: *base* with Buildbot-style *changes* applied.

    :raises ValueError: *changes* is not a dict of str, list of str or None.
    """
    if changes is None:
        changes = {}
    if not isinstance(changes, dict):
        raise ValueError(f"argument 'env' must be a dict, not {type(changes).__name__}")
    env = dict(base)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = os.pathsep.join(value)
        if not isinstance(value, str):
            raise ValueError(f"env[{key!r}] must be a str, a list of str or None, not {value!r}")
        if key == "PYTHONPATH":  # buildbot-worker keeps the worker's own PYTHONPATH after the master's
            value += os.pathsep + "${PYTHONPATH}"
        env[key] = _SUBST.sub(lambda m: base.get(m.group(1), ""), value)
    return env


def _argv(command: Any) -> tuple[list[str], Any]:
    """The argv to run and what to show of it (obfuscated items shown by their fake text)."""
    if isinstance(command, str) and command:
        return ["/bin/sh", "-c", command], command
    if isinstance(command, (list, tuple)) and command:
        argv: list[str] = []
        shown: list[str] = []

        def flatten(items: Any) -> None:
            for item in items:
                if isinstance(item, (list, tuple)) and len(item) == 3 and item[0] == "obfuscated" \
                        and all(isinstance(x, str) for x in item):
                    argv.append(item[1])
                    shown.append(item[2])
                elif isinstance(item, (list, tuple)):
                    flatten(item)
                elif isinstance(item, str):
                    argv.append(item)
                    shown.append(item)
                elif isinstance(item, (int, float)) and not isinstance(item, bool):
                    argv.append(str(item))
                    shown.append(str(item))
                else:
                    raise ValueError(f"argument 'command' holds {item!r}; argv items must be strings")

        flatten(command)
        if argv:
            return argv, shown
    raise ValueError(f"argument 'command' must be a non-empty argv list or a shell string, not {command!r}")


def _display(shown: Any) -> str:
    """The first header line: the command as a shell would read it (``buildbot-worker``'s ``shell_quote``)."""
    if isinstance(shown, str):
        return shown
    return " ".join(shlex.quote(a) if a else '""' for a in shown)


def _argv_header(shown: Any) -> str:
    """`` argv: ...`` as ``buildbot-worker`` 4.3 writes it (the repr of the command encoded as UTF-8)."""
    if isinstance(shown, str):
        return repr(shown.encode("utf-8"))
    return repr([a.encode("utf-8") for a in shown])


def _signal_number(name: Any) -> int:
    """A signal given by name (``"KILL"``, ``"TERM"``, ``"SIGINT"``); None means KILL, as in Buildbot."""
    if name is None:
        return signal.SIGKILL
    if isinstance(name, str):
        sig = getattr(signal, "SIG" + name.upper().removeprefix("SIG"), None)
        if isinstance(sig, signal.Signals):
            return int(sig)
    raise ValueError(f"argument 'interruptSignal' must be a signal name such as 'KILL', 'TERM' or 'INT', "
                     f"not {name!r}")


def _limit(value: float | int | None, what: str) -> str:
    if not value:
        return ""
    return f" ({what} {value} {'sec' if value == 1 else 'secs'})"


class _Protocol(ProcessProtocol):
    def __init__(self, command: "ShellCommand"):
        self.command = command

    def connectionMade(self) -> None:
        stdin = self.command.initial_stdin
        if stdin:
            self.transport.write(stdin)  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.command._output("stdout", data)

    def errReceived(self, data: bytes) -> None:
        self.command._output("stderr", data)

    def processEnded(self, reason: Failure) -> None:
        self.command._process_ended(reason)


class ShellCommand(Command):
    """See the module docstring."""

    name = "shell"

    def __init__(self, ctx: CommandContext, channel: CommandChannel, args: dict[str, Any]):
        super().__init__(ctx, channel, args)
        self.argv, self.shown = _argv(args.get("command"))
        self.display = _display(self.shown)
        self.workdir = ctx.paths.resolve(args.get("workdir") or ".", ctx.builder_dir, "workdir")
        self.env = build_env(os.environ, args.get("env"))
        self.env["PWD"] = self.workdir
        self.timeout = arg_seconds(args, "timeout")
        self.max_time = arg_seconds(args, "maxTime")
        self.sigterm_time = arg_seconds(args, "sigtermTime", allow_zero=True)
        self.interrupt_signal = _signal_number(args.get("interruptSignal"))
        max_lines = args.get("max_lines")
        if max_lines is not None and (isinstance(max_lines, bool) or not isinstance(max_lines, int)
                                      or max_lines < 0):
            raise ValueError(f"argument 'max_lines' must be a number of lines >= 0 or None, not {max_lines!r}")
        self.max_lines: int | None = max_lines
        self.want = {"stdout": arg_flag(args, "want_stdout", True), "stderr": arg_flag(args, "want_stderr", True)}
        stdin = args.get("initial_stdin")
        if stdin is not None and not isinstance(stdin, (str, bytes)):
            raise ValueError(f"argument 'initial_stdin' must be str or bytes, not {type(stdin).__name__}")
        self.initial_stdin: bytes | None = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        self.log_environ = arg_flag(args, "logEnviron", True)
        self.use_pty = arg_flag(args, "usePTY", False)
        self.pty_disabled = self.use_pty and self.initial_stdin is not None
        if self.pty_disabled:  # as buildbot-worker: a PTY cannot close stdin
            self.use_pty = False
        self.raw_output = arg_flag(args, "raw_output", False)
        self.logfiles_arg = args.get("logfiles") or {}
        self.watchers = [LogfileWatcher(ctx.reactor, name, path, follow, self._log_text)
                         for name, path, follow in parse_logfiles(self.logfiles_arg, ctx.paths, self.workdir)]
        self.process: Any = None
        self.paused = False
        self._decoders = {k: codecs.getincrementaldecoder("utf-8")(errors="replace") for k in ("stdout", "stderr")}
        self._pending: list[Update] = []
        self._pending_size = 0
        self._flush_call: IDelayedCall | None = None
        self._flush_due = False
        self._silence_call: IDelayedCall | None = None
        self._max_call: IDelayedCall | None = None
        self._kill_call: IDelayedCall | None = None
        self._killing = False
        self._killed = False
        self._line_count = 0
        self._ended = False
        self._start_time = 0.0
        self.sender.on_idle.append(self._link_ready)

    # -- running ----------------------------------------------------------------

    def start(self) -> None:
        reactor = self.ctx.reactor
        self._start_time = reactor.seconds()
        if self.pty_disabled:
            self._add(header_line("WARNING: disabling usePTY for this command"))
        self._add(header_line(self.display))
        self._add(header_line(f" in dir {self.workdir}{_limit(self.timeout, 'timeout')}"
                              f"{_limit(self.max_time, 'maxTime')}"))
        self._add(header_line(f" watching logfiles {self.logfiles_arg}"))
        self._add(header_line(f" argv: {_argv_header(self.shown)}"))
        if self.log_environ:
            self._add(("header", " environment:\n" + "".join(f"  {k}={v}\n" for k, v in sorted(self.env.items()))))
        if self.initial_stdin:
            self._add(header_line(f" writing {len(self.initial_stdin)} bytes to stdin"))
        self._add(header_line(f" using PTY: {self.use_pty}"))
        try:
            os.makedirs(self.workdir, exist_ok=True)
            self.process = reactor.spawnProcess(
                _Protocol(self), sys.executable, [sys.executable, "-I", "-S", "-c", _LAUNCHER, *self.argv],
                env=self.env, path=self.workdir, usePTY=self.use_pty)
        except Exception as e:
            self._ended = True
            self._add(header_line(f"cannot start the command: {e}"))
            self._send_pending()
            self.finish(e)
            return
        if self.timeout:
            self._silence_call = reactor.callLater(self.timeout, self._timed_out, "timeout_without_output",
                                                   f"command timed out: {self.timeout} seconds without output "
                                                   f"running {_argv_header(self.shown)}")
        if self.max_time:
            self._max_call = reactor.callLater(self.max_time, self._timed_out, "timeout",
                                               f"command timed out: {self.max_time} seconds elapsed "
                                               f"running {_argv_header(self.shown)}")
        for watcher in self.watchers:
            watcher.start()
        self._flush_soon()

    def interrupt(self, why: str) -> None:
        """Kill the process group (see ``sigtermTime`` / ``interruptSignal`` in the module docstring)."""
        super().interrupt(why)
        self._kill(why)

    # -- output -------------------------------------------------------------------

    def _output(self, key: str, data: bytes) -> None:
        self._saw_output()
        if not self.want[key]:
            return
        value: str | bytes = data if self.raw_output else self._decoders[key].decode(data)
        if not value:
            return
        self._count_lines(value)
        self._add((key, value))

    def _log_text(self, name: str, text: str) -> None:
        self._saw_output()
        self._add(("log", (name, text)))

    def _saw_output(self) -> None:
        # the silence timer exists only for a command with a timeout
        if self._silence_call is not None and self._silence_call.active() and self.timeout:
            self._silence_call.reset(self.timeout)

    def _count_lines(self, value: str | bytes) -> None:
        if self.max_lines is None or self._killing:
            return
        pattern = _NEWLINES_BYTES if isinstance(value, bytes) else _NEWLINES
        self._line_count += len(pattern.findall(value))  # type: ignore[arg-type]
        if self._line_count > self.max_lines:
            close = getattr(self.process, "closeStdout", None)
            if close is not None:
                close()
            self._add(("failure_reason", "max_lines_failure"))
            self._kill(f"command exceeds max lines: {self._line_count}/{self.max_lines} written/allowed "
                       f"running {_argv_header(self.shown)}")

    def _add(self, update: Update) -> None:
        if self.sender.lost:
            return
        self._pending.append(update)
        if update[0] in ("stdout", "stderr"):
            self._pending_size += len(update[1])
        elif update[0] == "log":
            self._pending_size += len(update[1][1])
        if self._pending_size >= BATCH_SIZE:
            self._send_pending()
        else:
            self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flush_call is None and self._pending:
            self._flush_call = self.ctx.reactor.callLater(BATCH_TIME, self._flush_timer)

    def _flush_timer(self) -> None:
        self._flush_call = None
        self._send_pending()

    def _send_pending(self, force: bool = False) -> None:
        """Hand what is pending to the sender, unless a batch is in flight
        (then it goes when that one is accepted: :meth:`_link_ready`)."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if not self._pending:
            return
        if self.sender.in_flight and not force:
            self._flush_due = True
            if self._pending_size >= BATCH_SIZE and not self.paused and self.process is not None \
                    and not self._ended:
                self.paused = True
                self.process.pauseProducing()
            return
        self._flush_due = False
        batch, self._pending, self._pending_size = _merge(self._pending), [], 0
        self.sender.send(batch)

    def _link_ready(self) -> None:
        """The link accepted the last batch: send what is due, read the process again."""
        if self.sender.lost:
            self._pending, self._pending_size = [], 0
        if self.paused:
            self.paused = False
            if not self._ended:
                self.process.resumeProducing()
        if self._pending and (self._flush_due or self._pending_size >= BATCH_SIZE):
            self._send_pending()
        else:
            self._flush_soon()

    # -- ending -------------------------------------------------------------------

    def _timed_out(self, reason: str, message: str) -> None:
        self._add(("failure_reason", reason))
        self._kill(message)

    def _kill(self, why: str) -> None:
        if self._ended or self._killing or self.process is None:
            return
        self._killing = self._killed = True
        self._cancel_timers()
        self._add(header_line(f"\n{why}, attempting to kill"))
        self._send_pending()
        if self.sigterm_time is not None:
            self._signal(signal.SIGTERM)
            self._kill_call = self.ctx.reactor.callLater(self.sigterm_time, self._after_sigterm)
        else:
            self._send_interrupt_signal()

    def _after_sigterm(self) -> None:
        self._kill_call = None
        if not self._ended:
            self._send_interrupt_signal()

    def _send_interrupt_signal(self) -> None:
        self._signal(self.interrupt_signal)
        if self.interrupt_signal == signal.SIGKILL:
            self._kill_call = self.ctx.reactor.callLater(GIVE_UP_AFTER, self._give_up)
        else:
            self._kill_call = self.ctx.reactor.callLater(KILL_GRACE, self._force_kill)

    def _force_kill(self) -> None:
        self._kill_call = None
        if self._ended:
            return
        self._add(header_line(f"process still running {KILL_GRACE:g} s after "
                              f"{signal.Signals(self.interrupt_signal).name}; sending SIGKILL"))
        self._signal(signal.SIGKILL)
        self._kill_call = self.ctx.reactor.callLater(GIVE_UP_AFTER, self._give_up)

    def _give_up(self) -> None:
        self._kill_call = None
        if self._ended:
            return
        self._ended = True
        self._stop_watchers()
        self._add(header_line("SIGKILL failed to kill process"))
        self._add(header_line("using fake rc=-1"))
        self._add(("rc", -1))
        self._send_pending(force=True)
        self.finish(RuntimeError("SIGKILL failed to kill the process"))

    def _signal(self, sig: int) -> None:
        pid = self.process.pid
        if pid is None:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:  # not yet its own group leader, or already gone
            try:
                self.process.signalProcess(sig)
            except (ProcessExitedAlready, OSError):
                pass
        except OSError as e:
            _log.warn("signalling process group {pid} failed: {why}", pid=pid, why=e)

    def _cancel_timers(self) -> None:
        for call in (self._silence_call, self._max_call, self._kill_call):
            if call is not None and call.active():
                call.cancel()
        self._silence_call = self._max_call = self._kill_call = None

    def _stop_watchers(self) -> None:
        for watcher in self.watchers:
            watcher.stop()  # reads what the file gained since the last poll

    def _process_ended(self, reason: Failure) -> None:
        if self._ended:
            return
        self._ended = True
        self._cancel_timers()
        if not self.raw_output:
            for key, decoder in self._decoders.items():
                rest = decoder.decode(b"", final=True)
                if rest and self.want[key]:
                    self._add((key, rest))
        self._stop_watchers()
        rc: int = 0
        value = reason.value
        if isinstance(value, ProcessTerminated):
            if value.signal is not None:
                self._add(header_line(f"process killed by signal {value.signal}"))
                rc = -1
            else:
                rc = value.exitCode if value.exitCode is not None else -1
        if self._killed and rc == 0:  # buildbot-worker: a killed process never counts as a success
            rc = -1
        elapsed = self.ctx.reactor.seconds() - self._start_time
        self._add(("rc", rc))
        self._add(header_line(f"elapsedTime={elapsed:0.6f}"))
        self._add(("elapsed", elapsed))
        self.elapsed_sent = True
        self._send_pending(force=True)
        self.finish(None)


def _merge(updates: list[Update]) -> list[Update]:
    """Join consecutive stdout (or stderr) pieces into one update each."""
    out: list[Update] = []
    parts: list[Any] = []
    for key, value in updates:
        if out and key == out[-1][0] and key in ("stdout", "stderr") and parts \
                and type(value) is type(parts[0]):
            parts.append(value)
            continue
        if parts:
            out[-1] = (out[-1][0], parts[0][:0].join(parts))
            parts = []
        out.append((key, value))
        if key in ("stdout", "stderr"):
            parts = [value]
    if parts:
        out[-1] = (out[-1][0], parts[0][:0].join(parts))
    return out
