"""``workerwire status|run|disconnect|shutdown``: talking to a running master.

Each opens the master's control socket (``[master] control_socket`` of the
config given with ``-c``; see :mod:`workerwire_app.control` for the
protocol), sends one request and prints the answer.  ``run`` streams the
command's output as ``workerwire exec`` does and exits with the same rules
(:mod:`workerwire_app.command_output`).  A master that is not running (no
socket, nobody listening) is exit status 3 with a message saying so; a
refused request (unknown worker, not connected, ...) is exit status 2.
"""

from __future__ import annotations

import base64
import functools
import json
import signal
import sys
import time
from typing import IO, Any, Callable

from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from .command_output import CommandPrinter, ending, exit_status
from .control import MAX_LINE
from .daemon import on_signal

__all__ = ["request", "status_command", "run_command", "worker_command", "NOT_RUNNING", "REFUSED"]

#: Exit status when no master answers on the control socket.
NOT_RUNNING = 3
#: Exit status when the master refused the request.
REFUSED = 2


class MasterNotRunning(Exception):
    """Nobody listens on the control socket."""


class _Client(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 64 * MAX_LINE

    def __init__(self, on_line: Callable[[dict[str, Any]], None]):
        self.on_line = on_line
        self.closed: Deferred[None] = Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.on_line(json.loads(line.decode("utf-8")))

    def send(self, obj: dict[str, Any]) -> None:
        if self.transport is None:
            raise RuntimeError("not connected to the master's control socket yet")
        self.transport.write(json.dumps(obj).encode("utf-8") + b"\n")

    def connectionLost(self, reason: Any = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)


async def _connect(reactor: Any, path: str, on_line: Callable[[dict[str, Any]], None]) -> _Client:
    endpoint = endpoints.UNIXClientEndpoint(reactor, path, timeout=10)
    try:
        return await endpoints.connectProtocol(endpoint, _Client(on_line))
    except Exception as e:
        raise MasterNotRunning(f"no master answers on its control socket {path} ({e}); is it running with this "
                               "config?") from None


async def request(reactor: Any, path: str, req: dict[str, Any]) -> list[dict[str, Any]]:
    """Send *req*; every answer line until the master closes the connection."""
    answers: list[dict[str, Any]] = []
    client = await _connect(reactor, path, answers.append)
    client.send(req)
    await client.closed
    return answers


def _answer(answers: list[dict[str, Any]], prog: str, err: IO[str]) -> dict[str, Any] | None:
    if not answers:
        print(f"{prog}: the master closed the control connection without an answer", file=err)
        return None
    answer = answers[-1]
    if not answer.get("ok"):
        print(f"{prog}: {answer.get('error', 'refused')}", file=err)
        return None
    return answer


async def status_command(reactor: Any, path: str, as_json: bool, out: IO[str] = sys.stdout,
                         err: IO[str] = sys.stderr) -> int:
    try:
        answer = _answer(await request(reactor, path, {"request": "status"}), "workerwire status", err)
    except MasterNotRunning as e:
        print(f"workerwire status: {e}", file=err)
        return NOT_RUNNING
    if answer is None:
        return REFUSED
    status = answer["status"]
    if as_json:
        print(json.dumps(status, indent=2), file=out)
        return 0
    print(_status_table(status), file=out)
    return 0


def _status_table(status: dict[str, Any]) -> str:
    rows = [("WORKER", "STATE", "BACKEND", "PEER", "TLS", "SINCE", "RTT", "RUNNING")]
    now = time.time()
    for w in status["workers"]:
        if not w["connected"]:
            rows.append((w["name"], "offline", "-", "-", "-", "-", "-", "-"))
            continue
        since = w.get("connected_since")
        rtt = w.get("keepalive_rtt")
        running = ", ".join(f"{c['command_id']}@{c['builder']}" for c in w["running"]) or "-"
        rows.append((w["name"], "attached" if w.get("attached") else "connected", w["backend"], w["peer"],
                     "yes" if w.get("tls") else "no", _ago(now - since) if since else "?",
                     f"{rtt * 1000:.1f} ms" if rtt is not None else "-", running))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    ports = ", ".join(f"{name} {where['port']}" for name, where in sorted(status["protocols"].items()))
    return "\n".join(lines) + f"\n(protocols: {ports or 'none'})"


def _ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


async def worker_command(reactor: Any, path: str, what: str, worker: str, out: IO[str] = sys.stdout,
                         err: IO[str] = sys.stderr) -> int:
    """``disconnect`` or ``shutdown`` *worker*."""
    try:
        answer = _answer(await request(reactor, path, {"request": what, "worker": worker}), f"workerwire {what}",
                         err)
    except MasterNotRunning as e:
        print(f"workerwire {what}: {e}", file=err)
        return NOT_RUNNING
    if answer is None:
        return REFUSED
    print(answer.get("message", "ok"), file=out)
    return 0


async def run_command(reactor: Any, path: str, req: dict[str, Any], as_json: bool,
                      stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None) -> int:
    """Run a command on a connected worker through the master; the exit status (see the module docstring)."""
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr.buffer
    printer = CommandPrinter(reactor, as_json, stdout, stderr)
    lines: list[dict[str, Any]] = []
    started: list[dict[str, Any]] = []

    def on_line(obj: dict[str, Any]) -> None:
        if "update" in obj:
            value = base64.b64decode(obj["b64"]) if "b64" in obj else obj.get("value")
            printer([(obj["update"], value)])
        elif "started" in obj:
            started.append(obj["started"])
        else:
            lines.append(obj)

    def message(text: str) -> None:
        stderr.write(f"workerwire run: {text}\n".encode("utf-8", "replace"))
        stderr.flush()

    try:
        client = await _connect(reactor, path, on_line)
    except MasterNotRunning as e:
        printer.finish({"complete": False, "failure": {"type": "MasterNotRunning", "message": str(e)}})
        message(str(e))
        return NOT_RUNNING
    interrupted = printer.ending.interrupted_by

    def interrupt(signum: int) -> None:
        if interrupted or client.transport is None:
            return
        interrupted.append(signum)
        client.send({"request": "interrupt", "why": f"interrupted by {signal.Signals(signum).name} "
                                                    "(workerwire run)"})

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        on_signal(reactor, signum, functools.partial(interrupt, signum))
    printer.on_broken = lambda: interrupt(signal.SIGPIPE)
    client.send(req)
    await client.closed
    final = lines[-1] if lines else None
    if final is None or not final.get("complete"):
        error = (final or {}).get("error") or "the master closed the control connection before the command ended"
        printer.finish({"complete": False, "failure": {"type": "ControlError", "message": error}})
        message(error)
        return REFUSED if final is not None and not started else 255
    failure = final.get("failure")
    failure_exc = RuntimeError(f"{failure['type']}: {failure['message']}") if failure else None
    rc = final.get("rc")
    status = exit_status(rc, failure_exc, printer.ending)
    why = ending(rc, failure_exc, printer.ending)
    printer.finish({"complete": True, "rc": rc, "exit_status": status, "failure": failure,
                    "killed_by_signal": printer.ending.killed_by, "reason": why,
                    **({"command_id": started[0]["command_id"]} if started else {})})
    if why is not None:
        message(why)
    return status
