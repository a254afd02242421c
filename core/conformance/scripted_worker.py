"""A deterministic worker implementation the conformance suite drives.

Its commands do exactly what their arguments say, so a test knows the precise
update sequence a backend must deliver:

``emit``     ``{"updates": [[key, value], ...], "fail": [type, message] | None}``
             sends the updates one by one (waiting on backpressure), then completes.
``stream``   ``{"count": N, "key": "stdout", "batch": B}`` sends N numbered lines
             (``"line 000001 ✓\\n"`` ...), B per update call, then ``rc`` 0.
``blob``     ``{"size": N}`` sends one ``stdout`` update of N characters.
``chunks``   ``{"count": N, "size": S}`` sends N ``stdout`` updates of S characters
             each; ``sent`` counts the updates handed to the channel.
``echo``     sends ``("echo", args)`` back, then completes.
``wait``     runs until interrupted; then sends a header naming why and ``rc`` -2.
``hang``     accepts and never reports (for disconnect tests).
``fail``     completes with ``ValueError(args["message"])``.
``upload``   ``{"writer": W, "data": bytes}`` or ``{"writer": W, "size": N, "seed": S}``
             (+ ``"block"`` bytes per write, ``"pipeline"`` writes in flight,
             ``"utime": [atime, mtime]``, ``"unpack": bool``, ``"stall_after": bytes``)
             writes the data (:func:`transfer_data` for size/seed), then utime,
             unpack and close as asked; updates ``("sha256", hex)``, ``("size", n)``.
``download`` ``{"reader": R, "block": B, "pipeline": K}`` reads to the end, closes;
             updates ``("sha256", hex)``, ``("size", n)``.

Every command's ``args`` are kept in ``args[commandId]`` (a transfer test takes
the worker's proxies from there); a transfer's outcome (``sha256``, ``size``,
``error``: the exception a call failed with, or None) in ``transfers[commandId]``,
also fired through :meth:`ScriptedWorker.whenTransferDone`.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import deque
from typing import Any, Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from ..errors import UnknownBuilder, UnknownCommand
from ..worker import CommandChannel, WorkerBot

__all__ = ["ScriptedWorker", "stream_line", "blob_text", "COMMANDS"]

COMMANDS = ("emit", "stream", "blob", "chunks", "echo", "wait", "hang", "fail", "upload", "download")


def transfer_data(size: int, seed: int, block: int = 256 * 1024) -> "Any":
    """The bytes ``upload`` sends for *size* and *seed*, as blocks (a generator,
    so 256 MiB are never in memory at once): pseudo-random, reproducible."""
    rng = random.Random(seed)
    sent = 0
    while sent < size:
        n = min(block, size - sent)
        yield rng.randbytes(n)
        sent += n


def stream_line(i: int) -> str:
    """The i-th line the ``stream`` command sends (non-ASCII on purpose)."""
    return f"line {i:06d} ✓\n"


def blob_text(size: int) -> str:
    """The text the ``blob`` command sends: deterministic, mixed-width Unicode."""
    unit = "0123456789abcdef" * 3 + "é€😀\n"  # 48 ASCII + 3 wide chars + newline
    return (unit * (size // len(unit) + 1))[:size]


class ScriptedWorker(WorkerBot):
    """Records every call; runs the scripted commands above.

    :ivar basedir: builder directories are created below it.
    :ivar on_shutdown: called after ``remote_shutdown`` was answered (the
        harness stops the connector there, as a real worker process exits).
    """

    def __init__(self, basedir: str, reactor: Any):
        self.basedir = basedir
        self.reactor = reactor
        self.prints: list[str] = []
        self.builders: dict[str, str] = {}
        self.builds_started: list[str] = []
        self.interrupts: list[tuple[str, str, str]] = []
        self.shutdowns = 0
        self.links_lost = 0
        self.links_established = 0
        self.channels: dict[str, CommandChannel] = {}
        self.hanging: list[Deferred[None]] = []
        self._waiting: dict[str, Deferred[str]] = {}
        self.on_shutdown: Callable[[], object] = lambda: None
        self.on_link_lost: Callable[[], object] = lambda: None
        self.errors: list[Failure] = []
        self.sent: dict[str, int] = {}
        self.args: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self._transfer_waiters: dict[str, list[Deferred[dict[str, Any]]]] = {}
        self.stalled: dict[str, Deferred[None]] = {}

    # -- calls from the master ------------------------------------------------

    def remote_print(self, message: str) -> Any:
        if message == "hang":  # a call the worker never answers
            d: Deferred[None] = Deferred()
            self.hanging.append(d)
            return d
        if message.startswith("raise:"):
            _, type_name, text = message.split(":", 2)
            raise {"ValueError": ValueError, "KeyError": KeyError, "RuntimeError": RuntimeError}.get(
                type_name, RuntimeError)(text)
        self.prints.append(message)
        return None

    def remote_getWorkerInfo(self) -> dict[str, Any]:
        return {
            "version": "conformance-1",
            "worker_commands": {name: "1.0" for name in COMMANDS},
            "basedir": self.basedir,
            "system": os.name,
            "host": "conformance host",
            "admin": "conformance admin <nobody@example.invalid>",
            "access_uri": None,
            "environ": {"PATH": "/usr/bin:/bin", "WORKERWIRE": "1"},
            "numcpus": os.cpu_count() or 1,
        }

    def remote_setBuilderList(self, builders: list[tuple[str, str]]) -> list[str]:
        wanted = {}
        for name, builddir in builders:
            path = os.path.join(self.basedir, builddir)
            os.makedirs(path, exist_ok=True)
            wanted[name] = path
        self.builders = wanted
        return sorted(wanted)

    def remote_startBuild(self, builderName: str) -> None:
        self._builder(builderName)
        self.builds_started.append(builderName)

    def remote_startCommand(
        self, channel: CommandChannel, builderName: str, commandId: str, commandName: str, args: dict[str, Any]
    ) -> None:
        self._builder(builderName)
        if commandName not in COMMANDS:
            raise UnknownCommand(f"no command {commandName!r}; this worker offers {', '.join(COMMANDS)}")
        self.channels[commandId] = channel
        self.args[commandId] = args
        run = getattr(self, "_cmd_" + commandName)
        # Run after the start was answered, as a real worker runs in the background.
        self.reactor.callLater(0, self._run, run, channel, commandId, args)

    def remote_interruptCommand(self, builderName: str, commandId: str, why: str) -> None:
        self.interrupts.append((builderName, commandId, why))
        waiter = self._waiting.pop(commandId, None)
        if waiter is not None:
            waiter.callback(why)

    def remote_shutdown(self) -> None:
        self.shutdowns += 1
        self.reactor.callLater(0.05, self.on_shutdown)

    def linkEstablished(self) -> None:
        self.links_established += 1

    def linkLost(self) -> None:
        self.links_lost += 1
        self.on_link_lost()

    # -- commands -------------------------------------------------------------

    def _builder(self, builderName: str) -> None:
        if builderName not in self.builders:
            raise UnknownBuilder(
                f"no builder {builderName!r} on this worker; builders: {', '.join(sorted(self.builders)) or 'none'}"
            )

    def _run(self, run: Callable[..., Any], channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        d = ensureDeferred(run(channel, commandId, args))
        d.addErrback(self.errors.append)

    async def _cmd_emit(self, channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        for key, value in args.get("updates", []):
            await channel.update([(key, value)])
        fail = args.get("fail")
        await channel.complete(None if not fail else _make_error(fail[0], fail[1]))

    async def _cmd_stream(self, channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        count, key, batch = int(args["count"]), str(args.get("key", "stdout")), int(args.get("batch", 1))
        for start in range(0, count, batch):
            await channel.update([(key, stream_line(i)) for i in range(start, min(count, start + batch))])
        await channel.update([("rc", 0)])
        await channel.complete(None)

    async def _cmd_blob(self, channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        await channel.update([("stdout", blob_text(int(args["size"])))])
        await channel.update([("rc", 0)])
        await channel.complete(None)

    async def _cmd_chunks(self, channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        count, size = int(args["count"]), int(args["size"])
        self.sent[commandId] = 0
        for i in range(count):
            await channel.update([("stdout", str(i % 10) * size)])
            self.sent[commandId] += 1
        await channel.update([("rc", 0)])
        await channel.complete(None)

    async def _cmd_echo(self, channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        await channel.update([("echo", args)])
        await channel.complete(None)

    async def _cmd_wait(self, channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        waiter: Deferred[str] = Deferred()
        self._waiting[commandId] = waiter
        await channel.update([("header", "waiting for an interrupt\n")])
        why = await waiter
        await channel.update([("header", f"interrupted: {why}\n"), ("rc", -2)])
        await channel.complete(None)

    async def _cmd_hang(self, channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        d: Deferred[None] = Deferred()
        self.hanging.append(d)
        await d

    async def _cmd_fail(self, channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        await channel.complete(ValueError(str(args.get("message", "command failed"))))


    # -- transfers ---------------------------------------------------------------

    def whenTransferDone(self, commandId: str) -> Deferred[dict[str, Any]]:
        """Fires with ``transfers[commandId]`` once that transfer ended."""
        d: Deferred[dict[str, Any]] = Deferred()
        if commandId in self.transfers:
            d.callback(self.transfers[commandId])
        else:
            self._transfer_waiters.setdefault(commandId, []).append(d)
        return d

    def whenStalled(self, commandId: str) -> Deferred[None]:
        """Fires once an ``upload`` with ``stall_after`` wrote that much and stalled."""
        return self.stalled.setdefault(commandId, Deferred())

    def _transfer_ended(self, commandId: str, outcome: dict[str, Any]) -> None:
        self.transfers[commandId] = outcome
        for d in self._transfer_waiters.pop(commandId, []):
            d.callback(outcome)

    async def _finish_transfer(self, channel: CommandChannel, commandId: str, digest: Any, size: int,
                               error: BaseException | None) -> None:
        outcome = {"sha256": digest.hexdigest(), "size": size, "error": error}
        self._transfer_ended(commandId, outcome)
        try:
            if error is None:
                await channel.update([("sha256", outcome["sha256"]), ("size", size), ("rc", 0)])
            await channel.complete(error)
        except Exception:
            pass  # the link is gone: the outcome above says why

    async def _cmd_upload(self, channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        writer = args["writer"]
        block = int(args.get("block", 256 * 1024))
        if "data" in args:
            data = args["data"]
            blocks: Any = (data[i:i + block] for i in range(0, len(data), block))
        else:
            blocks = transfer_data(int(args["size"]), int(args.get("seed", 0)), block)
        # "window": as many writes outstanding as the link's window has room
        # for (TransferProxy.whenRoom); a number: that many.
        fill_window = args.get("pipeline") == "window"
        pipeline = 0 if fill_window else int(args.get("pipeline", 8))
        stall_after = args.get("stall_after")
        digest, size = hashlib.sha256(), 0
        in_flight: deque[Deferred[Any]] = deque()
        try:
            for piece in blocks:
                digest.update(piece)
                size += len(piece)
                if fill_window:
                    while in_flight and in_flight[0].called:
                        await in_flight.popleft()  # raises a failed write's error now
                    await writer.whenRoom()
                in_flight.append(writer.callRemote("write", piece))
                del piece
                while not fill_window and len(in_flight) >= pipeline:
                    await in_flight.popleft()
                if stall_after is not None and size >= int(stall_after):
                    while in_flight:
                        await in_flight.popleft()
                    self.whenStalled(commandId).callback(None)
                    hang: Deferred[None] = Deferred()
                    self.hanging.append(hang)
                    await hang
            while in_flight:
                await in_flight.popleft()
            if args.get("utime") is not None:
                await writer.callRemote("utime", tuple(args["utime"]))
            if args.get("unpack"):
                await writer.callRemote("unpack")
            await writer.callRemote("close")
        except Exception as e:
            for d in in_flight:
                d.addErrback(lambda f: None)
            await self._finish_transfer(channel, commandId, digest, size, e)
            return
        await self._finish_transfer(channel, commandId, digest, size, None)

    async def _cmd_download(self, channel: CommandChannel, commandId: str, args: dict[str, Any]) -> None:
        reader = args["reader"]
        block = int(args.get("block", 256 * 1024))
        pipeline = int(args.get("pipeline", 4))
        digest, size = hashlib.sha256(), 0
        in_flight: deque[Deferred[Any]] = deque()
        try:
            at_end = False
            while not at_end:
                while len(in_flight) < pipeline:
                    in_flight.append(reader.callRemote("read", block))
                data = await in_flight.popleft()
                if not data:
                    at_end = True
                digest.update(data)
                size += len(data)
                del data
            while in_flight:
                rest = await in_flight.popleft()
                if rest:
                    raise AssertionError("the reader answered data after the end")
            await reader.callRemote("close")
        except Exception as e:
            for d in in_flight:
                d.addErrback(lambda f: None)
            await self._finish_transfer(channel, commandId, digest, size, e)
            return
        await self._finish_transfer(channel, commandId, digest, size, None)


def _make_error(type_name: str, message: str) -> BaseException:
    cls = {"ValueError": ValueError, "RuntimeError": RuntimeError, "OSError": OSError}.get(type_name, RuntimeError)
    return cls(message)
