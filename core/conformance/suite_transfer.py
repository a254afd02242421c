"""File transfer: writer and reader handles in ``startCommand`` args (see
:mod:`workerwire.transfer`), carried by every backend the same way."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import os
import tarfile
from typing import Any, Callable, cast

import pytest
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from ..base_connection import BaseConnection
from ..errors import ConnectionLost, ProtocolError, RemoteCallFailed, UnsupportedValue
from ..transfer import DirectoryWriter, FileWriter, LocalFileReader, LocalFileWriter, TransferLink, TransferProxy
from .harness import Harness, RecordingCommand, within

__all__ = ["TransferTests", "TransferWindowTests", "RecordingWriter"]

MiB = 1024 * 1024

#: The big transfer: 256 MiB each way, once per backend.
BIG = 256 * MiB
#: How much the process's resident memory may grow while BIG bytes go each way
#: (both ends run in this process): generous against allocator noise, and far
#: below BIG, so a transfer that buffered its data would fail.
RSS_BOUND = 96 * MiB


class RecordingWriter(FileWriter):
    """A master-side writer that keeps every call, in memory (small transfers only).

    :param fail_on: a method name whose call raises ``OSError("disk full")``.
    """

    def __init__(self, fail_on: str | None = None):
        self.calls: list[tuple[str, Any]] = []
        self.fail_on = fail_on
        self.cancelled = False

    def _record(self, method: str, arg: Any = None) -> None:
        if method == self.fail_on:
            raise OSError(f"disk full (test writer refused {method})")
        self.calls.append((method, arg))

    def write(self, data: bytes) -> object:
        self._record("write", data)
        return None

    def utime(self, times: tuple[float, float]) -> None:
        self._record("utime", times)

    def unpack(self) -> None:
        self._record("unpack")

    def close(self) -> None:
        self._record("close")

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def data(self) -> bytes:
        return b"".join(arg for method, arg in self.calls if method == "write")


class _SlowWriter(RecordingWriter):
    """Holds each write's answer until :meth:`release`."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred[None]] = []

    def write(self, data: bytes) -> Deferred[None]:
        self._record("write", data)
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            d.callback(None)


class _StallingWriter(LocalFileWriter):
    """Writes normally until *after* bytes arrived, then never answers (a
    master stuck mid-transfer); ``stalled`` fires then."""

    def __init__(self, path: str, after: int):
        super().__init__(path)
        self.after = after
        self.stalled: Deferred[None] = Deferred()
        self.cancelled = False

    def write(self, data: bytes) -> Any:
        if self.size >= self.after:
            if not self.stalled.called:
                self.stalled.callback(None)
            return Deferred()
        return super().write(data)

    def cancel(self) -> None:
        self.cancelled = True
        super().cancel()


def _rss() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Samples the resident size every 20 ms while a transfer runs."""

    def __init__(self, reactor: Any):
        self.base = _rss()
        self.peak = self.base
        self._loop = LoopingCall(self._sample)
        self._loop.clock = reactor
        self._loop.start(0.02)

    def _sample(self) -> None:
        self.peak = max(self.peak, _rss())

    def stop(self) -> int:
        self._sample()
        self._loop.stop()
        return self.peak - self.base


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def _tar(members: dict[str, bytes], compression: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    compressors: dict[str, Callable[[bytes], bytes]] = {"gz": gzip.compress, "bz2": bz2.compress, "": bytes}
    return compressors[compression](data)


class TransferTests:
    @async_test
    async def test_transfer_256_mib_up_and_down_intact_with_flat_memory(self, harness: Harness) -> None:
        # Memory is measured as the resident size of this process (both ends
        # run in it), sampled every 20 ms: it may grow by RSS_BOUND at most
        # while 256 MiB go each way.
        w = await harness.start_worker()
        target = os.path.join(harness.basedir, "master-side", "big.bin")
        writer = LocalFileWriter(target)
        rc = RecordingCommand()
        meter = _PeakRSS(harness.reactor)
        await w.conn.remoteStartCommand(rc, "b1", "up-big", "upload",
                                        {"writer": writer, "size": BIG, "seed": 7, "block": 256 * 1024})
        await within(rc.done, harness.reactor, seconds=600, what="a 256 MiB upload")
        up_growth = meter.stop()
        assert rc.completions == [None], rc.completions
        (sent_hash,) = rc.values("sha256")
        assert rc.values("size") == [BIG]
        assert os.path.getsize(target) == BIG
        assert _sha256_file(target) == sent_hash
        assert up_growth < RSS_BOUND, f"resident memory grew by {up_growth / MiB:.0f} MiB during the upload"

        reader = LocalFileReader(target)
        rc2 = RecordingCommand()
        meter = _PeakRSS(harness.reactor)
        await w.conn.remoteStartCommand(rc2, "b1", "down-big", "download", {"reader": reader, "block": 256 * 1024})
        await within(rc2.done, harness.reactor, seconds=600, what="a 256 MiB download")
        down_growth = meter.stop()
        assert rc2.completions == [None], rc2.completions
        assert rc2.values("size") == [BIG]
        assert rc2.values("sha256") == [sent_hash]
        assert down_growth < RSS_BOUND, f"resident memory grew by {down_growth / MiB:.0f} MiB during the download"
        assert len(cast(BaseConnection, w.conn).transfer_handles) == 0
        os.unlink(target)

    @async_test
    async def test_transfer_writes_filling_the_window_arrive_in_order(self, harness: Harness) -> None:
        # The worker sends each write when the window has room
        # (TransferProxy.whenRoom), without waiting for the previous answers:
        # the bytes arrive whole and in order, several writes are outstanding
        # at once, and neither end ever has more than the window unanswered.
        w = await harness.start_worker()
        window = harness.options.output_window
        block = 64 * 1024
        size = 4 * window + 12345
        target = os.path.join(harness.basedir, "master-side", "piped.bin")
        writer = LocalFileWriter(target)
        rc = RecordingCommand()
        await w.conn.remoteStartCommand(rc, "b1", "up-piped", "upload",
                                        {"writer": writer, "size": size, "seed": 3, "block": block,
                                         "pipeline": "window"})
        await within(rc.done, harness.reactor, seconds=300, what="an upload filling the window")
        assert rc.completions == [None], rc.completions
        assert rc.values("size") == [size]
        (sent_hash,) = rc.values("sha256")
        assert _sha256_file(target) == sent_hash
        link = w.bot.args["up-piped"]["writer"].link
        assert block < link.peak_in_flight <= window, link.peak_in_flight
        assert cast(BaseConnection, w.conn).transfer_handles.peak_in_flight <= window
        os.unlink(target)

    @async_test
    async def test_transfer_utime_sets_the_destination_times(self, harness: Harness) -> None:
        w = await harness.start_worker()
        target = os.path.join(harness.basedir, "master-side", "stamped.txt")
        rc = await harness.run(w, "upload", {"writer": LocalFileWriter(target), "data": b"stamped\n",
                                             "utime": [1_000_000_000.5, 1_200_000_000.25]})
        assert rc.completions == [None], rc.completions
        st = os.stat(target)  # before reading it (reading may update atime)
        assert st.st_atime == pytest.approx(1_000_000_000.5, abs=0.01)
        assert st.st_mtime == pytest.approx(1_200_000_000.25, abs=0.01)
        with open(target, "rb") as f:
            assert f.read() == b"stamped\n"

    @pytest.mark.parametrize("compression", ["gz", "bz2", ""])
    @async_test
    async def test_transfer_unpack_of_a_tar(self, harness: Harness, compression: str) -> None:
        w = await harness.start_worker()
        members = {"top.txt": b"top\n", "sub/deeper.bin": bytes(range(256)) * 100, "sub/empty": b""}
        directory = os.path.join(harness.basedir, "master-side", f"unpacked-{compression or 'plain'}")
        rc = await harness.run(w, "upload", {"writer": DirectoryWriter(directory),
                                             "data": _tar(members, compression), "unpack": True, "block": 4096})
        assert rc.completions == [None], rc.completions
        found = {}
        for root, _, files in os.walk(directory):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    found[os.path.relpath(path, directory)] = f.read()
        assert found == members

    @async_test
    async def test_transfer_writer_that_raises_fails_the_worker_call(self, harness: Harness) -> None:
        w = await harness.start_worker()
        writer = RecordingWriter(fail_on="write")
        rc = await harness.run(w, "upload", {"writer": writer, "data": b"x" * 1000}, commandId="up-fails")
        outcome = w.bot.transfers["up-fails"]
        error = outcome["error"]
        assert isinstance(error, RemoteCallFailed), repr(error)
        assert error.type_name == "OSError" and "disk full" in error.remote_message
        # The worker failed its command with that error: the master sees it too.
        (failure,) = rc.completions
        assert failure is not None and failure.check(RemoteCallFailed)
        assert isinstance(failure.value, RemoteCallFailed) and failure.value.type_name == "OSError"
        assert writer.cancelled, "a writer released before close is cancelled"
        assert len(cast(BaseConnection, w.conn).transfer_handles) == 0

    @async_test
    async def test_transfer_link_lost_mid_transfer_fails_both_ends(self, harness: Harness) -> None:
        w = await harness.start_worker()
        target = os.path.join(harness.basedir, "master-side", "half.bin")
        writer = _StallingWriter(target, after=MiB)
        rc = RecordingCommand()
        await w.conn.remoteStartCommand(rc, "b1", "up-cut", "upload",
                                        {"writer": writer, "size": 8 * MiB, "seed": 3, "block": 64 * 1024})
        await within(writer.stalled, harness.reactor, what="the upload to reach 1 MiB")
        w.conn.loseConnection(abort=True)
        await within(rc.done, harness.reactor, what="the master's command to fail")
        (failure,) = rc.completions
        assert failure is not None and failure.check(ConnectionLost), failure
        outcome = await within(w.bot.whenTransferDone("up-cut"), harness.reactor, what="the worker's call to fail")
        assert isinstance(outcome["error"], ConnectionLost), repr(outcome["error"])
        assert writer.cancelled
        assert not os.path.exists(target), "a half-written upload must not look complete"
        assert os.listdir(os.path.dirname(target)) == [], "the temporary file is removed"
        assert len(cast(BaseConnection, w.conn).transfer_handles) == 0

    @async_test
    async def test_transfer_foreign_closed_and_released_handles_are_refused(self, harness: Harness) -> None:
        w1 = await harness.start_worker(builders=["b1", "b2"])
        w2 = await harness.start_worker()
        writers = {name: RecordingWriter() for name in ("A", "B", "C")}
        commands = {name: RecordingCommand() for name in writers}
        await w1.conn.remoteStartCommand(commands["A"], "b1", "A", "wait", {"writer": writers["A"]})
        await w1.conn.remoteStartCommand(commands["B"], "b2", "B", "wait", {"writer": writers["B"]})
        await w2.conn.remoteStartCommand(commands["C"], "b1", "C", "wait", {"writer": writers["C"]})
        proxy_a: TransferProxy = w1.bot.args["A"]["writer"]
        proxy_b: TransferProxy = w1.bot.args["B"]["writer"]
        proxy_c: TransferProxy = w2.bot.args["C"]["writer"]
        assert isinstance(proxy_a, TransferProxy) and proxy_a.kind == "writer"

        async def refused(proxy: TransferProxy, method: str = "write", *args: Any) -> ProtocolError:
            d = proxy.callRemote(method, *(args or (b"forged",)))
            try:
                await within(d, harness.reactor, what=f"{method} on {proxy!r} to be refused")
            except ProtocolError as e:
                return e
            raise AssertionError(f"{method} on {proxy!r} was accepted")

        # A's handle, named from command B: another command's handle.
        await refused(TransferProxy(proxy_a.link, "B", proxy_a.handle_id, "writer"))
        # A's handle, sent over worker 2's connection: another connection's handle.
        await refused(TransferProxy(proxy_c.link, "C", proxy_a.handle_id, "writer"))
        # A reader method on a writer.
        with pytest.raises(ProtocolError):
            await proxy_a.callRemote("read", 10)
        # A closed handle.
        await within(proxy_b.callRemote("close"), harness.reactor, what="close")
        await refused(proxy_b)
        # A released handle (its command is over).
        await w2.conn.remoteInterruptCommand("b1", "C", "test over")
        await within(commands["C"].done, harness.reactor, what="command C to end")
        await refused(proxy_c)
        assert writers["A"].calls == [] and writers["C"].calls == []
        assert writers["B"].calls == [("close", None)]
        # A's own handle still works.
        await within(proxy_a.callRemote("write", b"mine"), harness.reactor, what="A's write")
        assert writers["A"].data == b"mine"
        for name in ("A", "B"):
            await w1.conn.remoteInterruptCommand("b1" if name == "A" else "b2", name, "test over")
            await within(commands[name].done, harness.reactor, what=f"command {name} to end")
        assert len(cast(BaseConnection, w1.conn).transfer_handles) == 0
        assert len(cast(BaseConnection, w2.conn).transfer_handles) == 0
        assert writers["C"].cancelled and not writers["B"].cancelled

    @async_test
    async def test_transfer_handles_only_where_buildbot_puts_them(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = RecordingCommand()
        for args in ({"nested": {"writer": RecordingWriter()}}, {"reader": RecordingWriter()},
                     {"files": [RecordingWriter()]}, {"writer": LocalFileReader(__file__)}):
            with pytest.raises(UnsupportedValue):
                await w.conn.remoteStartCommand(rc, "b1", "bad-args", "upload", args)
        assert len(cast(BaseConnection, w.conn).transfer_handles) == 0
        # The builder is free again: the refused starts left nothing running.
        rc = await harness.run(w, "upload", {"writer": RecordingWriter(), "data": b"ok"})
        assert rc.completions == [None]

    @async_test
    async def test_transfer_no_leak_over_a_thousand_transfers(self, harness: Harness) -> None:
        w = await harness.start_worker()
        for i in range(1000):
            writer = RecordingWriter()
            command = "upload" if i % 2 == 0 else "download"
            if command == "upload":
                args: dict[str, Any] = {"writer": writer, "data": b"%d" % i}
            else:
                args = {"reader": _BytesReader(b"payload %d" % i)}
            rc = await harness.run(w, command, args)
            assert rc.completions == [None], (i, rc.completions)
            if command == "upload":
                assert writer.data == b"%d" % i and writer.calls[-1] == ("close", None)
            else:
                assert rc.values("size") == [len(b"payload %d" % i)]
        assert len(cast(BaseConnection, w.conn).transfer_handles) == 0


class _BytesReader(LocalFileReader):
    """A reader over bytes in memory."""

    def __init__(self, data: bytes):
        super().__init__("<memory>")
        self._file = io.BytesIO(data)


class TransferWindowTests:
    @async_test
    async def test_transfer_a_worker_ignoring_the_window_is_refused(self, harness: Harness) -> None:
        w = await harness.start_worker()
        writer = _SlowWriter()
        rc = RecordingCommand()
        await w.conn.remoteStartCommand(rc, "b1", "greedy", "wait", {"writer": writer})
        proxy: TransferProxy = w.bot.args["greedy"]["writer"]
        window = harness.options.output_window
        # A worker that sends past the window: its own link allows ten windows.
        greedy = TransferLink(proxy.link._send, 10 * window)
        block = b"w" * (window // 2 + 1)
        calls = [greedy.call("greedy", proxy.handle_id, "write", [block], len(block)) for _ in range(3)]
        # The first write is taken (held by the slow writer); the second would
        # put the master over the window: refused, as is the third.
        for d in calls[1:]:
            with pytest.raises(ProtocolError):
                await within(d, harness.reactor, what="a write beyond the window to be refused")
        assert writer.pending and not calls[0].called
        writer.release()
        await within(calls[0], harness.reactor, what="the first write")
        assert writer.data == block, "only the write within the window reached the writer"
        await w.conn.remoteInterruptCommand("b1", "greedy", "test over")
        await within(rc.done, harness.reactor, what="the command to end")
