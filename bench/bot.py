"""The bench worker's behaviour: a WorkerBot with two output commands.

``produce`` ``{"size": N, "chunk": C}``
    sends N characters of ASCII lines as ``stdout`` updates of C characters,
    waiting on each ``CommandChannel.update`` Deferred (the link's
    backpressure), then ``rc`` 0.
``shell`` ``{"command": [argv...]}``
    runs a child process and forwards its stdout in updates of about 64 KiB
    (or what arrived within 50 ms); it stops reading the child's pipe while an
    update is waiting on backpressure and 64 KiB more are buffered.
"""

from __future__ import annotations

import codecs
import os
import sys
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from workerwire.errors import ConnectionLost, UnknownBuilder, UnknownCommand
from workerwire.worker import CommandChannel, WorkerBot

from .sides.base import chunk_text

__all__ = ["BenchBot", "FORWARD_CHUNK"]

FORWARD_CHUNK = 64 * 1024
FLUSH_AFTER = 0.05
COMMANDS = ("produce", "shell")


class BenchBot(WorkerBot):
    def __init__(self, basedir: str, reactor: Any) -> None:
        self.basedir = basedir
        self.reactor = reactor
        self.builders: dict[str, str] = {}
        self.prints = 0
        self.errors: list[Failure] = []

    def remote_print(self, message: str) -> None:
        self.prints += 1

    def remote_getWorkerInfo(self) -> dict[str, Any]:
        return {
            "version": "bench", "worker_commands": {c: "1.0" for c in COMMANDS}, "basedir": self.basedir,
            "system": os.name, "host": "bench", "admin": "bench", "access_uri": None,
            "environ": {}, "numcpus": os.cpu_count() or 1,
        }

    def remote_setBuilderList(self, builders: list[tuple[str, str]]) -> list[str]:
        self.builders = {}
        for name, builddir in builders:
            path = os.path.join(self.basedir, builddir)
            os.makedirs(path, exist_ok=True)
            self.builders[name] = path
        return sorted(self.builders)

    def remote_startBuild(self, builderName: str) -> None:
        if builderName not in self.builders:
            raise UnknownBuilder(builderName)

    def remote_startCommand(self, channel: CommandChannel, builderName: str, commandId: str,
                            commandName: str, args: dict[str, Any]) -> None:
        if builderName not in self.builders:
            raise UnknownBuilder(builderName)
        if commandName == "produce":
            run = ensureDeferred(self._produce(channel, int(args["size"]), int(args["chunk"])))
        elif commandName == "shell":
            run = _Forwarder(channel, self.reactor).start(list(args["command"]), self.builders[builderName])
        else:
            raise UnknownCommand(commandName)
        run.addErrback(self._failed)

    def _failed(self, f: Failure) -> None:
        self.errors.append(f)
        if f.check(ConnectionLost):  # the master closed the link as the trial ended
            return
        sys.stderr.write(f"bench bot: command failed: {f.getErrorMessage()}\n")

    async def _produce(self, channel: CommandChannel, size: int, chunk: int) -> None:
        await _turn(self.reactor)  # answer the start first, as a real worker does
        text = chunk_text(chunk)
        remaining = size
        while remaining > 0:
            piece = text if remaining >= chunk else text[:remaining]
            remaining -= len(piece)
            await channel.update([("stdout", piece)])
        await channel.update([("rc", 0)])
        await channel.complete(None)

    def remote_interruptCommand(self, builderName: str, commandId: str, why: str) -> None:
        return None

    def remote_shutdown(self) -> None:
        return None


def _turn(reactor: Any) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(0, d.callback, None)
    return d


class _Forwarder(ProcessProtocol):
    """Forwards a child's stdout through a channel with bounded buffering."""

    def __init__(self, channel: CommandChannel, reactor: Any) -> None:
        self.channel = channel
        self.reactor = reactor
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending: list[str] = []
        self.pending_size = 0
        self.in_flight = False
        self.paused = False
        self.rc: int | None = None
        self.timer: Any = None
        self.flush_due = False
        self.done: Deferred[None] = Deferred()

    def start(self, argv: list[str], cwd: str) -> Deferred[None]:
        self.reactor.spawnProcess(self, argv[0], argv, env=dict(os.environ), path=cwd)
        return self.done

    def outReceived(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        if text:
            self.pending.append(text)
            self.pending_size += len(text)
        self._pump()

    def errReceived(self, data: bytes) -> None:
        sys.stderr.write(data.decode("utf-8", "replace"))

    def _pump(self) -> None:
        if self.in_flight:
            if self.pending_size >= FORWARD_CHUNK and not self.paused:
                self.paused = True
                self.transport.pauseProducing()  # type: ignore[union-attr]
            return
        if self.pending:
            if self.pending_size < FORWARD_CHUNK and self.rc is None and not self.flush_due:
                if self.timer is None:
                    self.timer = self.reactor.callLater(FLUSH_AFTER, self._flush)
                return
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            self.timer, self.flush_due = None, False
            text = "".join(self.pending)
            self.pending, self.pending_size = [], 0
            self.in_flight = True
            d = self.channel.update([("stdout", text)])
            d.addCallbacks(self._sent, self.done.errback)
            if self.paused:
                self.paused = False
                self.transport.resumeProducing()  # type: ignore[union-attr]
        elif self.rc is not None:
            rc, self.rc = self.rc, None
            self.in_flight = True
            d = self.channel.update([("rc", rc)])
            d.addCallback(lambda _: self.channel.complete(None))
            d.chainDeferred(self.done)

    def _flush(self) -> None:
        self.timer, self.flush_due = None, True
        self._pump()

    def _sent(self, _: object) -> None:
        self.in_flight = False
        self._pump()

    def processEnded(self, reason: Failure) -> None:
        tail = self.decoder.decode(b"", final=True)
        if tail:
            self.pending.append(tail)
            self.pending_size += len(tail)
        code = getattr(reason.value, "exitCode", None)
        self.rc = int(code) if code is not None else -1
        self._pump()
