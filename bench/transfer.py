"""``python -m bench.transfer``: file transfer throughput and memory, side by side.

For every installed backend: a master in this process gives a worker an
``upload`` command with a :class:`~workerwire.transfer.FileWriter` and a
``download`` command with a :class:`~workerwire.transfer.FileReader`, SIZE
bytes each (256 MiB by default); the worker is a child process for network
backends (in this process for ``null``).  Beside them, in the same run:

* ``raw-tcp``: the same bytes over one plain Twisted TCP connection (a child
  process writing with a streaming producer; this process counting), the
  floor any backend is compared with;
* ``bbw-pb``: an unmodified ``buildbot-worker`` (PyPI) running ``uploadFile``
  and ``downloadFile`` with Buildbot's arguments into / from the same pb master.

The master's handles keep nothing (they count bytes, and the reader serves one
block over and over), so the figures are those of the link, not of a disk.
Memory is the peak growth of each process's resident size while the transfer
runs (sampled every 20 ms).  ``python -m bench`` runs it as its ``transfer``
scenario (full mode only: it takes minutes; ``--scenarios transfer`` runs it
alone and updates only that section of docs/benchmarks.md); or run it alone::

    python -m bench.transfer --size-mib 256 --reps 2

With ``BENCH_PROFILE_DIR=DIR`` every process of it writes a cProfile of its
run into DIR (see :mod:`bench.profiling`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from typing import Any, Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from workerwire.backend import LinkOptions
from workerwire.backoff import Backoff
from workerwire.errors import UnknownBuilder, UnknownCommand
from workerwire.master import Connection, Update
from workerwire.registry import backend_names, load_backend
from workerwire.transfer import FileReader, FileWriter
from workerwire.worker import CommandChannel, WorkerBot

from .procfs import rss_kib
from .profiling import profiled
from .sides.base import Child, python_argv, remove_tree, spawn, within
from .sides.bbw import available as bbw_available, buildbot_worker_argv
from .sides.ww import PASSWORD, BenchMaster

__all__ = ["main", "TransferBot", "CountingWriter", "RepeatingReader"]

MiB = 1024 * 1024
BLOCK = 256 * 1024
TIMEOUT = 900.0


# -- the master's handles ----------------------------------------------------------------


class CountingWriter(FileWriter):
    """Keeps nothing: counts the bytes written."""

    def __init__(self) -> None:
        self.size = 0
        self.closed: Deferred[int] = Deferred()

    def write(self, data: bytes) -> None:
        self.size += len(data)

    def utime(self, times: tuple[float, float]) -> None:
        pass

    def close(self) -> None:
        if not self.closed.called:
            self.closed.callback(self.size)


class RepeatingReader(FileReader):
    """Serves *size* bytes: one block, over and over."""

    def __init__(self, size: int):
        self.left = size
        self.block = os.urandom(BLOCK)

    def read(self, max_length: int) -> bytes:
        n = min(max_length, self.left, len(self.block))
        self.left -= n
        return self.block if n == len(self.block) else self.block[:n]

    def close(self) -> None:
        pass


class _Target:
    """A CommandTarget that only waits for the end."""

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()
        self.values: dict[str, Any] = {}

    def remote_update(self, updates: list[Update]) -> None:
        self.values.update(dict(updates))

    def remote_complete(self, failure: Failure | None = None) -> None:
        if not self.done.called:
            if failure is not None:
                self.done.errback(failure)
            else:
                self.done.callback(None)


# -- the worker's behaviour ------------------------------------------------------------------


class TransferBot(WorkerBot):
    """``upload`` ``{"writer", "size", "block", "pipeline"}``: writes *size*
    bytes (one block repeated), then closes; ``download`` ``{"reader",
    "block", "pipeline"}``: reads to the end, counting."""

    def __init__(self, basedir: str, reactor: Any) -> None:
        self.basedir = basedir
        self.reactor = reactor
        self.builders: list[str] = []

    def remote_print(self, message: str) -> None:
        pass

    def remote_getWorkerInfo(self) -> dict[str, Any]:
        return {"version": "bench", "worker_commands": {"upload": "1", "download": "1"}, "basedir": self.basedir,
                "system": os.name, "host": "bench", "admin": "bench", "access_uri": None, "environ": {},
                "numcpus": os.cpu_count() or 1}

    def remote_setBuilderList(self, builders: list[tuple[str, str]]) -> list[str]:
        self.builders = sorted(name for name, _ in builders)
        return self.builders

    def remote_startBuild(self, builderName: str) -> None:
        pass

    def remote_startCommand(self, channel: CommandChannel, builderName: str, commandId: str, commandName: str,
                            args: dict[str, Any]) -> None:
        if builderName not in self.builders:
            raise UnknownBuilder(builderName)
        run = {"upload": self._upload, "download": self._download}.get(commandName)
        if run is None:
            raise UnknownCommand(commandName)
        self.reactor.callLater(0, lambda: ensureDeferred(self._run(run, channel, args)).addErrback(lambda f: None))

    def remote_interruptCommand(self, builderName: str, commandId: str, why: str) -> None:
        pass

    def remote_shutdown(self) -> None:
        pass

    async def _run(self, run: Callable[..., Any], channel: CommandChannel, args: dict[str, Any]) -> None:
        try:
            size = await run(args)
        except Exception as e:
            await channel.complete(e)
            return
        await channel.update([("size", size), ("rc", 0)])
        await channel.complete(None)

    async def _upload(self, args: dict[str, Any]) -> int:
        """Writes *size* bytes, as many calls outstanding as the link's
        transfer window has room for (``whenRoom``); the first failure ends it."""
        writer, size = args["writer"], int(args["size"])
        block = os.urandom(int(args.get("block", BLOCK)))
        view = memoryview(block)
        sent = 0
        pending = _Pending()
        while sent < size:
            pending.check()
            await writer.whenRoom()
            n = min(len(block), size - sent)
            pending.add(writer.callRemote("write", block if n == len(block) else bytes(view[:n])))
            sent += n
        await pending.drain()
        await writer.callRemote("close")
        return sent

    async def _download(self, args: dict[str, Any]) -> int:
        """Reads until ``b""``, as many reads outstanding as the window has
        room for; answers come in order."""
        reader = args["reader"]
        block = int(args.get("block", BLOCK))
        got = 0
        in_flight: deque[Deferred[Any]] = deque()
        at_end = False
        while not at_end:
            while reader.link.has_room or not in_flight:
                in_flight.append(reader.callRemote("read", block))
            data = await in_flight.popleft()
            at_end = not data
            got += len(data)
        while in_flight:
            await in_flight.popleft()
        await reader.callRemote("close")
        return got


class _Pending:
    """Outstanding calls whose answers are only checked for failure."""

    def __init__(self) -> None:
        self.count = 0
        self.failure: Failure | None = None
        self._idle: Deferred[None] | None = None

    def add(self, d: Deferred[Any]) -> None:
        self.count += 1

        def settled(result: object) -> None:
            self.count -= 1
            if isinstance(result, Failure) and self.failure is None:
                self.failure = result
            if self.count == 0 and self._idle is not None:
                idle, self._idle = self._idle, None
                idle.callback(None)

        d.addBoth(settled)

    def check(self) -> None:
        if self.failure is not None:
            self.failure.raiseException()

    async def drain(self) -> None:
        if self.count:
            self._idle = Deferred()
            await self._idle
        self.check()


# -- raw TCP floor -------------------------------------------------------------------------


@implementer(IPushProducer)
class _Sender(Protocol):
    """Writes *size* bytes as fast as the transport takes them, then closes."""

    def __init__(self, size: int):
        self.left = size
        self.block = os.urandom(BLOCK)
        self.paused = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left > 0:
            n = min(self.left, len(self.block))
            self.transport.write(self.block if n == len(self.block) else self.block[:n])  # type: ignore[union-attr]
            self.left -= n
        if self.left <= 0:
            self.transport.unregisterProducer()  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.left = 0


class _Counter(Protocol):
    def __init__(self) -> None:
        self.received = 0
        self.done: Deferred[int] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(self.received)


# -- measuring -------------------------------------------------------------------------------


class _Memory:
    """Peak RSS growth of this process and of *pid*, sampled every 20 ms."""

    def __init__(self, reactor: Any, pid: int | None):
        self.pid = pid
        self.base = (rss_kib() or 0, (rss_kib(pid) or 0) if pid else 0)
        self.peak = list(self.base)
        self.loop = LoopingCall(self.sample)
        self.loop.clock = reactor
        self.loop.start(0.02)

    def sample(self) -> None:
        self.peak[0] = max(self.peak[0], rss_kib() or 0)
        if self.pid:
            self.peak[1] = max(self.peak[1], rss_kib(self.pid) or 0)

    def stop(self) -> tuple[float, float | None]:
        self.sample()
        self.loop.stop()
        worker = (self.peak[1] - self.base[1]) / 1024 if self.pid else None
        return (self.peak[0] - self.base[0]) / 1024, worker


async def _timed(reactor: Any, pid: int | None, size: int, run: Callable[[], Deferred[Any]]) -> dict[str, Any]:
    memory = _Memory(reactor, pid)
    t0 = time.perf_counter()
    await within(run(), reactor, TIMEOUT, "a transfer")
    seconds = time.perf_counter() - t0
    master_mib, worker_mib = memory.stop()
    return {"mb_per_s": size / seconds / 1e6, "seconds": seconds, "master_rss_mib": master_mib,
            "worker_rss_mib": worker_mib}


async def _ww_subject(reactor: Any, name: str, size: int, reps: int) -> dict[str, list[dict[str, Any]]]:
    backend = load_backend(name)
    master = BenchMaster()
    listener = backend.create_listener(master, LinkOptions(keepalive_interval=None), reactor)
    reg = await listener.updateRegistration("bench", PASSWORD, backend.loopback_port())
    assert reg is not None
    cleanup: list[Any] = [listener.stopListening]
    pid: int | None = None
    try:
        if backend.network:
            child = spawn(f"{name} worker", python_argv("bench.transfer", "--worker", name, reg.getAddress()))
            cleanup.append(child.terminate)
            pid = child.pid
        else:
            tmp = tempfile.mkdtemp(prefix="workerwire-bench-transfer-")
            cleanup.append(lambda: remove_tree(tmp))
            connector = backend.create_connector(TransferBot(tmp, reactor), reg.getAddress(), "bench", PASSWORD,
                                                 LinkOptions(keepalive_interval=None), reactor,
                                                 Backoff(initial=0.05, maximum=1.0))
            connector.start()
            cleanup.append(connector.stop)
        conn: Connection = await within(master.whenConnection("bench"), reactor, 120, f"the {name} worker")
        await conn.remoteSetBuilderList([("b1", "b1")])
        return await _measure(reactor, conn, pid, size, reps, _ww_args)
    finally:
        for step in reversed(cleanup):
            await step()


#: Bytes per write / read of the workerwire worker (``--block-kib``).
WW_BLOCK = [BLOCK]


def _ww_args(kind: str, handle: Any, size: int) -> tuple[str, dict[str, Any]]:
    key = "writer" if kind == "upload" else "reader"
    return kind, {key: handle, "size": size, "block": WW_BLOCK[0]}


async def _measure(reactor: Any, conn: Connection, pid: int | None, size: int, reps: int,
                   args_for: Callable[[str, Any, int], tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"upload": [], "download": []}
    serial = 0
    for _ in range(reps):
        for kind in ("upload", "download"):
            serial += 1
            handle: Any = CountingWriter() if kind == "upload" else RepeatingReader(size)
            command, args = args_for(kind, handle, size)
            target = _Target()

            def run(command: str = command, args: dict[str, Any] = args, target: _Target = target) -> Deferred[Any]:
                started = conn.remoteStartCommand(target, "b1", f"t{serial}", command, args)
                started.addErrback(lambda f: None if target.done.called else target.done.errback(f))
                return target.done

            figures = await _timed(reactor, pid, size, run)
            if kind == "upload":
                assert handle.size == size, f"uploaded {handle.size} of {size} bytes"
            else:
                assert handle.left == 0, f"{handle.left} bytes not read"
            out[kind].append(figures)
    return out


async def _raw_subject(reactor: Any, size: int, reps: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"upload": [], "download": []}
    for _ in range(reps):
        for kind in ("upload", "download"):
            counter = _Counter()
            if kind == "upload":  # the child sends, this side counts
                factory = Factory.forProtocol(lambda: counter)
                port = reactor.listenTCP(0, factory, interface="127.0.0.1")
                child = spawn("raw sender", python_argv("bench.transfer", "--raw-send", str(port.getHost().port),
                                                        str(size)))
            else:  # this side sends, the child counts and reports
                factory = Factory.forProtocol(lambda: _Sender(size))
                port = reactor.listenTCP(0, factory, interface="127.0.0.1")
                child = spawn("raw receiver", python_argv("bench.transfer", "--raw-receive",
                                                          str(port.getHost().port)))
            await within(child.whenLine("ready"), reactor, 60, "the raw child")

            def run(kind: str = kind, child: Child = child, counter: _Counter = counter) -> Deferred[Any]:
                child.transport.write(b"go\n")  # type: ignore[union-attr]
                return counter.done if kind == "upload" else child.whenLine("received")

            figures = await _timed(reactor, child.pid, size, run)
            out[kind].append(figures)
            await child.terminate()
            await port.stopListening()
    return out


async def _bbw_subject(reactor: Any, size: int, reps: int, blocksize: int) -> dict[str, list[dict[str, Any]]]:
    backend = load_backend("pb")
    master = BenchMaster()
    listener = backend.create_listener(master, LinkOptions(keepalive_interval=None), reactor)
    reg = await listener.updateRegistration("bbw", PASSWORD, backend.loopback_port())
    assert reg is not None
    basedir = tempfile.mkdtemp(prefix="workerwire-bench-bbw-transfer-")
    cleanup: list[Any] = [listener.stopListening, lambda: remove_tree(basedir)]
    try:
        subprocess.run([*buildbot_worker_argv(), "create-worker", "--quiet", "--log-count=2", "--keepalive=600",
                        basedir, f"127.0.0.1:{reg.getPort()}", "bbw", PASSWORD],
                       check=True, timeout=120, stdout=subprocess.DEVNULL)
        source = os.path.join(basedir, "b1", "build", "big.bin")
        os.makedirs(os.path.dirname(source))
        with open(source, "wb") as f:
            for _ in range(0, size, MiB):
                f.write(os.urandom(MiB))
        child = spawn("buildbot-worker", [*buildbot_worker_argv(), "start", "--nodaemon", basedir], cwd=basedir)
        cleanup.append(child.terminate)
        conn: Connection = await within(master.whenConnection("bbw"), reactor, 120, "buildbot-worker")
        await conn.remoteSetBuilderList([("b1", "b1")])

        def args_for(kind: str, handle: Any, size: int) -> tuple[str, dict[str, Any]]:
            if kind == "upload":  # uploadFile as a Buildbot 4 master sends it over pb
                return "uploadFile", {"workdir": "build", "workersrc": "big.bin", "writer": handle,
                                      "maxsize": None, "blocksize": blocksize, "keepstamp": False}
            return "downloadFile", {"workdir": "build", "workerdest": "fetched.bin", "reader": handle,
                                    "maxsize": None, "blocksize": blocksize, "mode": None}

        return await _measure(reactor, conn, child.pid, size, reps, args_for)
    finally:
        for step in reversed(cleanup):
            await step()


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]], size: int, reps: int,
              blocksize: int) -> dict[str, Any]:
    """The figures :func:`bench.report.markdown` shows: per subject and
    direction the median MB/s, its ratios to raw TCP and to buildbot-worker
    (same run), and the median RSS growth of each end; plus the runs."""
    raw = {k: _median(results["raw-tcp"][k], "mb_per_s") for k in ("upload", "download")} if "raw-tcp" in results else {}
    bbw = {k: _median(results["bbw-pb"][k], "mb_per_s") for k in ("upload", "download")} if "bbw-pb" in results else {}
    subjects: dict[str, Any] = {}
    for sid, per in results.items():
        subjects[sid] = {}
        for kind in ("upload", "download"):
            mbs = _median(per[kind], "mb_per_s")
            r, b = raw.get(kind), bbw.get(kind)
            subjects[sid][kind] = {
                "mb_per_s": mbs,
                "mb_per_s_min": min((x["mb_per_s"] for x in per[kind]), default=None),
                "mb_per_s_max": max((x["mb_per_s"] for x in per[kind]), default=None),
                "x_raw": mbs / r if mbs is not None and r else None,
                "x_bbw": mbs / b if mbs is not None and b else None,
                "master_rss_mib": _median(per[kind], "master_rss_mib"),
                "worker_rss_mib": _median(per[kind], "worker_rss_mib"),
                "runs": per[kind],
            }
    return {"size_mib": size // MiB, "reps": reps, "ww_block_kib": WW_BLOCK[0] // 1024,
            "raw_block_kib": BLOCK // 1024, "bbw_blocksize_kib": blocksize // 1024, "subjects": subjects}


def _report(results: dict[str, dict[str, list[dict[str, Any]]]], size: int, reps: int, blocksize: int) -> str:
    lines = [f"transfer: {size // MiB} MiB each way, median of {reps}; workerwire calls of {WW_BLOCK[0] // 1024} KiB, "
             f"raw TCP writes of {BLOCK // 1024} KiB, buildbot-worker with blocksize {blocksize // 1024} KiB", ""]
    raw = {k: _median(results["raw-tcp"][k], "mb_per_s") for k in ("upload", "download")} if "raw-tcp" in results else {}
    bbw = {k: _median(results["bbw-pb"][k], "mb_per_s") for k in ("upload", "download")} if "bbw-pb" in results else {}
    head = (f"{'subject':<10} {'dir':<9} {'MB/s':>8} {'×raw':>6} {'×bbw':>6} {'master ΔRSS':>12} "
            f"{'worker ΔRSS':>12}")
    lines += [head, "-" * len(head)]
    for sid, per in results.items():
        for kind in ("upload", "download"):
            mbs = _median(per[kind], "mb_per_s") or 0.0
            r = raw.get(kind)
            b = bbw.get(kind)
            worker = _median(per[kind], "worker_rss_mib")
            lines.append(
                f"{sid:<10} {kind:<9} {mbs:8.1f} {(mbs / r if r else 0):6.2f} {(mbs / b if b else 0):6.1f} "
                f"{_median(per[kind], 'master_rss_mib') or 0:9.1f} MiB "
                f"{'in-process' if worker is None else f'{worker:9.1f} MiB':>12}")
    return "\n".join(lines)


async def _run(reactor: Any, args: argparse.Namespace) -> int:
    size = args.size_mib * MiB
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    wanted = args.subjects.split(",") if args.subjects else None
    subjects = ["raw-tcp"] + [f"ww-{n}" for n in backend_names()] + (["bbw-pb"] if bbw_available() else [])
    subjects = [sid for sid in subjects if not wanted or sid in wanted]
    # Repetitions are interleaved across subjects (one of each, then again):
    # the load of a shared machine changes over minutes, and the ratios
    # compare subjects measured under the same load.
    for rep in range(args.reps):
        for sid in subjects:
            sys.stderr.write(f"bench.transfer: rep {rep + 1}/{args.reps} {sid} ...\n")
            if sid == "raw-tcp":
                one = await _raw_subject(reactor, size, 1)
            elif sid == "bbw-pb":
                one = await _bbw_subject(reactor, size, 1, args.bbw_blocksize_kib * 1024)
            else:
                one = await _ww_subject(reactor, sid[3:], size, 1)
            for kind, runs in one.items():
                results.setdefault(sid, {"upload": [], "download": []})[kind] += runs
    print(_report(results, size, args.reps, args.bbw_blocksize_kib * 1024))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summarize(results, size, args.reps, args.bbw_blocksize_kib * 1024), f, indent=1)
    return 0


def _child_main(args: argparse.Namespace) -> None:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    if args.worker:
        name, address = args.worker
        backend = load_backend(name)
        tmp = tempfile.mkdtemp(prefix="workerwire-bench-transfer-worker-")
        connector = backend.create_connector(TransferBot(tmp, reactor), address, "bench", PASSWORD,
                                             LinkOptions(keepalive_interval=None), reactor,
                                             Backoff(initial=0.05, maximum=1.0))
        connector.start()
    elif args.raw_send:
        port, size = args.raw_send

        class _Go(Protocol):
            def dataReceived(self, data: bytes) -> None:
                f = ClientFactory.forProtocol(lambda: _Sender(size))
                reactor.connectTCP("127.0.0.1", port, f)

        _stdin(reactor, _Go())
    elif args.raw_receive:
        counter = _Counter()
        counter.done.addCallback(lambda n: print(f"received {n}", flush=True))

        class _GoReceive(Protocol):
            def dataReceived(self, data: bytes) -> None:
                reactor.connectTCP("127.0.0.1", args.raw_receive, ClientFactory.forProtocol(lambda: counter))

        _stdin(reactor, _GoReceive())
    print("ready", flush=True)
    role = f"transfer-worker-{args.worker[0]}" if args.worker else "transfer-raw"
    profiled(role, reactor.run)


def _stdin(reactor: Any, proto: Protocol) -> None:
    from twisted.internet.stdio import StandardIO

    StandardIO(proto, reactor=reactor)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.transfer", description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256, help="bytes each way, in MiB (default 256)")
    p.add_argument("--reps", type=int, default=2, help="repetitions (default 2)")
    p.add_argument("--subjects", help="comma-separated: raw-tcp, ww-<backend>, bbw-pb (default all)")
    p.add_argument("--bbw-blocksize-kib", type=int, default=256,
                   help="blocksize buildbot-worker is given (Buildbot's FileUpload default: 256)")
    p.add_argument("--block-kib", type=int, default=BLOCK // 1024,
                   help="bytes per write/read call of the workerwire worker, in KiB (default 256)")
    p.add_argument("--json", help="also write the figures (bench.transfer.summarize) into this file")
    p.add_argument("--worker", nargs=2, metavar=("BACKEND", "ADDRESS"), help=argparse.SUPPRESS)
    p.add_argument("--raw-send", nargs=2, type=int, metavar=("PORT", "SIZE"), help=argparse.SUPPRESS)
    p.add_argument("--raw-receive", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    WW_BLOCK[0] = args.block_kib * 1024
    if args.worker or args.raw_send or args.raw_receive:
        _child_main(args)
        return 0
    from twisted.internet.task import react

    code: list[int] = []

    async def go(reactor: Any) -> None:
        code.append(await _run(reactor, args))

    try:
        profiled("transfer-master", lambda: react(lambda reactor: ensureDeferred(go(reactor))))
    except SystemExit:  # react() ends the process this way
        pass
    return code[0] if code else 1


if __name__ == "__main__":
    sys.exit(main())
