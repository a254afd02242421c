"""What a trial needs from one subject's master side."""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

__all__ = ["Link", "Child", "PRINT_MESSAGE", "chunk_bytes", "chunk_text", "python_argv", "spawn", "within", "remove_tree"]

#: The message of every round-trip call.
PRINT_MESSAGE = "bench ping"


class Link(Protocol):
    """One connected worker as the measuring master sees it."""

    #: The worker's process id (None when it lives in the master's process).
    worker_pid: int | None

    def call(self) -> Deferred[Any]:
        """One round trip: the master asks the worker to print a short message."""

    def stream(self, nbytes: int) -> Deferred[int]:
        """Have the worker send *nbytes* of output; fire with the count received
        once the worker said it is complete."""

    def close(self) -> Deferred[None]:
        """Drop the link and end the worker process."""


def chunk_bytes(size: int) -> bytes:
    """*size* bytes of printable lines (what a build prints)."""
    line = b"x" * 71 + b" bench output\n"  # 85 bytes
    return (line * (size // len(line) + 1))[:size]


def chunk_text(size: int) -> str:
    return chunk_bytes(size).decode("ascii")


def python_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child(ProcessProtocol):
    """A spawned worker-side process: its stdout lines, its exit, its end."""

    def __init__(self, name: str, log: Any = None) -> None:
        self.name = name
        self.lines: list[str] = []
        self._buf = b""
        self._line_waiters: list[tuple[str, Deferred[str]]] = []
        self.ended: Deferred[None] = Deferred()
        self.exit: object = None
        self.log = log if log is not None else sys.stderr

    def outReceived(self, data: bytes) -> None:
        self._buf += data
        while b"\n" in self._buf:
            raw, self._buf = self._buf.split(b"\n", 1)
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            for item in list(self._line_waiters):
                if line.startswith(item[0]):
                    self._line_waiters.remove(item)
                    item[1].callback(line[len(item[0]):].strip())

    def errReceived(self, data: bytes) -> None:
        self.log.write(f"[{self.name}] " + data.decode("utf-8", "replace"))
        self.log.flush()

    def whenLine(self, prefix: str) -> Deferred[str]:
        """Fire with the rest of the first (future or past) stdout line starting with *prefix*."""
        for line in self.lines:
            if line.startswith(prefix):
                d: Deferred[str] = Deferred()
                d.callback(line[len(prefix):].strip())
                return d
        d = Deferred()
        self._line_waiters.append((prefix, d))
        return d

    def processEnded(self, reason: Failure) -> None:
        self.exit = reason.value
        for _, d in self._line_waiters:
            d.errback(RuntimeError(f"{self.name} exited ({reason.value}) before saying that"))
        self._line_waiters = []
        self.ended.callback(None)

    @property
    def pid(self) -> int | None:
        return getattr(self.transport, "pid", None)

    def terminate(self) -> Deferred[None]:
        """Close stdin, then TERM, then KILL; fires when the process is gone."""
        from twisted.internet import reactor as _reactor

        reactor: Any = _reactor
        transport: Any = self.transport
        if self.ended.called:
            return self.ended
        try:
            transport.closeStdin()
        except Exception:
            pass

        def signal(sig: str) -> None:
            if not self.ended.called:
                try:
                    transport.signalProcess(sig)
                except Exception:
                    pass

        t1 = reactor.callLater(1.0, signal, "TERM")
        t2 = reactor.callLater(3.0, signal, "KILL")

        def cancel(_: object) -> None:
            for t in (t1, t2):
                if t.active():
                    t.cancel()

        self.ended.addBoth(cancel)
        d: Deferred[None] = Deferred()
        self.ended.addBoth(lambda _: d.callback(None))
        return d


def spawn(name: str, argv: list[str], cwd: str | None = None) -> Child:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    child = Child(name)
    reactor.spawnProcess(child, argv[0], argv, env=child_env(), path=cwd)
    return child


def remove_tree(path: str) -> "Deferred[None]":
    """Delete a temporary directory (a cleanup step)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return succeed(None)


async def within(d: "Deferred[Any]", reactor: Any, seconds: float, what: str) -> Any:
    """Wait for *d*, failing with a clear message after *seconds*."""
    from twisted.internet.defer import TimeoutError as DeferredTimeout

    d.addTimeout(seconds, reactor)
    try:
        return await d
    except DeferredTimeout:
        raise RuntimeError(f"timed out after {seconds:g} s waiting for {what}") from None
