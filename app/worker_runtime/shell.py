"""The ``shell`` command: run a process, stream its output, report its exit.

Arguments (Buildbot's names; others are ignored):

``command``
    an argv list (nested lists are flattened, numbers become strings) or a
    string, which runs through ``/bin/sh -c``.
``workdir``
    relative to the builder's directory (default: the builder's directory);
    created if missing; must stay inside the worker's base directory.
``env``
    variables to set; ``None`` removes one, a list is joined with
    ``os.pathsep``, and ``${NAME}`` is replaced by the worker's value of NAME.
``timeout``
    seconds without output before the process is killed
    (``failure_reason`` ``timeout_without_output``).
``maxTime``
    seconds in total before it is killed (``failure_reason`` ``timeout``).
``sigtermTime``
    seconds between the interrupt signal and SIGKILL (default 5).
``interruptSignal``
    the first signal of an interrupt, e.g. ``"TERM"`` (the default) or ``"INT"``.
``want_stdout``, ``want_stderr``, ``initial_stdin``, ``logEnviron``
    as in Buildbot; ``usePTY`` is not supported and says so in a header.

Updates, in this order: ``header`` lines describing the command, then
``stdout``/``stderr`` text as it arrives (decoded as UTF-8, batched up to
64 KiB or 0.1 s), and at the end ``rc`` (``-1`` if a signal killed it, as
Buildbot reports it), a ``header`` ``elapsedTime=...`` and ``elapsed``.

The process runs in its own process group; an interrupt or a timeout sends
the interrupt signal to the whole group, then SIGKILL after the grace period.
While the link has not accepted the previous batch and 64 KiB more are
waiting, the process's pipes are not read, so a process that writes faster
than the link carries blocks instead of filling the worker's memory.
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

from .base import Command, CommandContext, arg_number, header_line

__all__ = ["ShellCommand", "build_env", "BATCH_SIZE", "BATCH_TIME", "KILL_GRACE"]

_log = Logger()

#: Largest stdout/stderr batch, in characters, before it is sent at once.
BATCH_SIZE = 64 * 1024
#: Longest time output waits to be batched with more.
BATCH_TIME = 0.1
#: Default seconds between the interrupt signal and SIGKILL.
KILL_GRACE = 5.0
#: Seconds after SIGKILL before the worker stops waiting for the process.
GIVE_UP_AFTER = 5.0

# Runs in the child: become a process group leader (so an interrupt reaches
# everything the command starts), then become the command.
_LAUNCHER = (
    "import os,sys\n"
    "os.setpgid(0,0)\n"
    "try:\n"
    "    os.execvp(sys.argv[1],sys.argv[1:])\n"
    "except OSError as e:\n"
    "    sys.stderr.write('workerwire: cannot run %r: %s\\n'%(sys.argv[1],e.strerror))\n"
    "    sys.exit(127 if isinstance(e,FileNotFoundError) else 126)\n"
)

_SUBST = re.compile(r"\$\{([0-9a-zA-Z_]*)\}")


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
        env[key] = _SUBST.sub(lambda m: base.get(m.group(1), ""), value)
    return env


def _argv(command: Any) -> tuple[list[str], str]:
    if isinstance(command, str) and command:
        return ["/bin/sh", "-c", command], command
    if isinstance(command, (list, tuple)) and command:
        argv: list[str] = []

        def flatten(items: Any) -> None:
            for item in items:
                if isinstance(item, (list, tuple)):
                    flatten(item)
                elif isinstance(item, str):
                    argv.append(item)
                elif isinstance(item, (int, float)) and not isinstance(item, bool):
                    argv.append(str(item))
                else:
                    raise ValueError(f"argument 'command' holds {item!r}; argv items must be strings")

        flatten(command)
        if argv:
            return argv, shlex.join(argv)
    raise ValueError(f"argument 'command' must be a non-empty argv list or a shell string, not {command!r}")


def _signal_number(name: Any) -> int:
    if name is None:
        return signal.SIGTERM
    if isinstance(name, str):
        sig = getattr(signal, "SIG" + name.upper().removeprefix("SIG"), None)
        if isinstance(sig, signal.Signals):
            return int(sig)
    raise ValueError(f"argument 'interruptSignal' must be a signal name such as 'TERM' or 'INT', not {name!r}")


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
        self.argv, self.display = _argv(args.get("command"))
        self.workdir = ctx.paths.resolve(args.get("workdir") or ".", ctx.builder_dir, "workdir")
        self.env = build_env(os.environ, args.get("env"))
        self.env["PWD"] = self.workdir
        self.timeout = arg_number(args, "timeout")
        self.max_time = arg_number(args, "maxTime")
        self.kill_grace = arg_number(args, "sigtermTime") or KILL_GRACE
        self.interrupt_signal = _signal_number(args.get("interruptSignal"))
        self.want = {"stdout": bool(args.get("want_stdout", True)), "stderr": bool(args.get("want_stderr", True))}
        stdin = args.get("initial_stdin")
        if stdin is not None and not isinstance(stdin, (str, bytes)):
            raise ValueError(f"argument 'initial_stdin' must be str or bytes, not {type(stdin).__name__}")
        self.initial_stdin: bytes | None = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        self.log_environ = bool(args.get("logEnviron", False))
        self.use_pty = bool(args.get("usePTY", False))
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
        self._ended = False
        self._start_time = 0.0
        self.sender.on_idle.append(self._link_ready)

    # -- running ----------------------------------------------------------------

    def start(self) -> None:
        reactor = self.ctx.reactor
        self._start_time = reactor.seconds()
        self._add(header_line(self.display))
        limits = "".join([f" (timeout {self.timeout:g} secs)" if self.timeout else "",
                          f" (maxTime {self.max_time:g} secs)" if self.max_time else ""])
        self._add(header_line(f" in dir {self.workdir}{limits}"))
        self._add(header_line(f" argv: {self.argv!r}"))
        if self.log_environ:
            self._add(("header", " environment:\n" + "".join(f"  {k}={v}\n" for k, v in sorted(self.env.items()))))
        if self.use_pty:
            self._add(header_line("WARNING: usePTY is not supported by this worker; running without a PTY"))
        try:
            os.makedirs(self.workdir, exist_ok=True)
            self.process = reactor.spawnProcess(
                _Protocol(self), sys.executable, [sys.executable, "-I", "-S", "-c", _LAUNCHER, *self.argv],
                env=self.env, path=self.workdir)
        except Exception as e:
            self._ended = True
            self._add(header_line(f"cannot start the command: {e}"))
            self._send_pending()
            self.finish(e)
            return
        if self.timeout:
            self._silence_call = reactor.callLater(self.timeout, self._timed_out, "timeout_without_output",
                                                   f"command timed out: {self.timeout:g} seconds without output "
                                                   f"running {self.argv!r}")
        if self.max_time:
            self._max_call = reactor.callLater(self.max_time, self._timed_out, "timeout",
                                               f"command timed out: {self.max_time:g} seconds elapsed "
                                               f"running {self.argv!r}")
        self._flush_soon()

    def interrupt(self, why: str) -> None:
        """Stop the process group: the interrupt signal, then SIGKILL after the grace period."""
        super().interrupt(why)
        self._kill(why)

    # -- output -------------------------------------------------------------------

    def _output(self, key: str, data: bytes) -> None:
        if self._silence_call is not None and self._silence_call.active():
            self._silence_call.reset(self.timeout)
        text = self._decoders[key].decode(data)
        if text and self.want[key]:
            self._add((key, text))

    def _add(self, update: Update) -> None:
        if self.sender.lost:
            return
        self._pending.append(update)
        if update[0] in ("stdout", "stderr"):
            self._pending_size += len(update[1])
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
        self._killing = True
        self._cancel_timers()
        self._add(header_line(f"\n{why}, attempting to kill"))
        self._send_pending()
        self._signal(self.interrupt_signal)
        if self.interrupt_signal == signal.SIGKILL:
            self._kill_call = self.ctx.reactor.callLater(GIVE_UP_AFTER, self._give_up)
        else:
            self._kill_call = self.ctx.reactor.callLater(self.kill_grace, self._force_kill)

    def _force_kill(self) -> None:
        self._kill_call = None
        if self._ended:
            return
        self._add(header_line(f"process still running {self.kill_grace:g} s after "
                              f"{signal.Signals(self.interrupt_signal).name}; sending SIGKILL"))
        self._signal(signal.SIGKILL)
        self._kill_call = self.ctx.reactor.callLater(GIVE_UP_AFTER, self._give_up)

    def _give_up(self) -> None:
        self._kill_call = None
        if self._ended:
            return
        self._ended = True
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

    def _process_ended(self, reason: Failure) -> None:
        if self._ended:
            return
        self._ended = True
        self._cancel_timers()
        for key, decoder in self._decoders.items():
            rest = decoder.decode(b"", final=True)
            if rest and self.want[key]:
                self._add((key, rest))
        rc: int = 0
        value = reason.value
        if isinstance(value, ProcessTerminated):
            if value.signal is not None:
                self._add(header_line(f"process killed by signal {value.signal}"))
                rc = -1
            else:
                rc = value.exitCode if value.exitCode is not None else -1
        elapsed = self.ctx.reactor.seconds() - self._start_time
        self._add(("rc", rc))
        self._add(header_line(f"elapsedTime={elapsed:0.6f}"))
        self._add(("elapsed", elapsed))
        self._send_pending(force=True)
        self.finish(None)


def _merge(updates: list[Update]) -> list[Update]:
    """Join consecutive stdout (or stderr) pieces into one update each."""
    out: list[Update] = []
    parts: list[str] = []
    for key, value in updates:
        if out and key == out[-1][0] and key in ("stdout", "stderr") and parts:
            parts.append(value)
            continue
        if parts:
            out[-1] = (out[-1][0], "".join(parts))
            parts = []
        out.append((key, value))
        if key in ("stdout", "stderr"):
            parts = [value]
    if parts:
        out[-1] = (out[-1][0], "".join(parts))
    return out
