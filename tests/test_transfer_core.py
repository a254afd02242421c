"""workerwire.transfer on its own: the handle table's order, lifetime and
window, the worker side's window, and the ready-made handles.  No link is
involved (the conformance suite's TransferTests drive the same code through
every backend); the handle table is called the way a backend calls it."""

from __future__ import annotations

import io
import os
import tarfile
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from workerwire.errors import ConnectionLost, ProtocolError, UnsupportedValue
from workerwire.transfer import (
    BuildbotReaderAdapter,
    BuildbotWriterAdapter,
    DirectoryWriter,
    FileWriter,
    HandleTable,
    LocalFileReader,
    LocalFileWriter,
    TransferLink,
    TransferProxy,
    split_handles,
)


class _HeldWriter(FileWriter):
    """Each call is recorded at once and answered only when the test says."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers: list[Deferred[None]] = []
        self.cancelled = 0

    def _held(self, method: str, arg: Any = None) -> Deferred[None]:
        self.calls.append((method, arg))
        d: Deferred[None] = Deferred()
        self.answers.append(d)
        return d

    def write(self, data: bytes) -> Deferred[None]:
        return self._held("write", data)

    def close(self) -> Deferred[None]:
        return self._held("close")

    def cancel(self) -> None:
        self.cancelled += 1


def _result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


def test_calls_on_one_handle_run_one_after_another_in_order() -> None:
    table = HandleTable(window=1000)
    writer = _HeldWriter()
    ((handle_id, kind),) = table.register("c1", {"writer": writer}).values()
    assert kind == "writer"
    first = table.call("c1", handle_id, "write", [b"one"])
    second = table.call("c1", handle_id, "write", [b"two"])
    closing = table.call("c1", handle_id, "close", [])
    assert writer.calls == [("write", b"one")], "the second call waits for the first one's Deferred"
    writer.answers[0].callback(None)
    assert writer.calls == [("write", b"one"), ("write", b"two")]
    writer.answers[1].callback(None)
    writer.answers[2].callback(None)
    assert [_result(d) for d in (first, second, closing)] == [None, None, None]
    table.release_command("c1")
    assert len(table) == 0 and writer.cancelled == 0, "a closed writer is not cancelled"


def test_a_write_past_the_window_is_refused_and_reaches_nothing() -> None:
    table = HandleTable(window=10)
    writer = _HeldWriter()
    ((handle_id, _),) = table.register("c1", {"writer": writer}).values()
    table.call("c1", handle_id, "write", [b"123456"])
    refused = _result(table.call("c1", handle_id, "write", [b"1234567"]))
    assert refused.check(ProtocolError) and "window" in str(refused.value)
    writer.answers[0].callback(None)
    assert writer.calls == [("write", b"123456")]
    # Nothing in flight: one write larger than the window still goes, alone.
    big = table.call("c1", handle_id, "write", [b"x" * 50])
    writer.answers[1].callback(None)
    assert _result(big) is None and table.peak_in_flight == 50


def test_released_handles_are_cancelled_and_refused() -> None:
    table = HandleTable(window=1000)
    writer = _HeldWriter()
    released: list[list[int]] = []
    table.on_release = released.append
    ((handle_id, _),) = table.register("c1", {"writer": writer}).values()
    table.release_all()
    assert writer.cancelled == 1 and released == [[handle_id]] and len(table) == 0
    assert _result(table.call("c1", handle_id, "write", [b"late"])).check(ProtocolError)
    assert writer.calls == []


def test_a_queued_call_fails_when_its_handle_is_released() -> None:
    table = HandleTable(window=1000)
    writer = _HeldWriter()
    ((handle_id, _),) = table.register("c1", {"writer": writer}).values()
    table.call("c1", handle_id, "write", [b"a"])
    queued = table.call("c1", handle_id, "write", [b"b"])
    table.release_command("c1")
    writer.answers[0].callback(None)
    assert _result(queued).check(ConnectionLost)
    assert writer.calls == [("write", b"a")]


@pytest.mark.parametrize("method, args", [
    ("read", [10]), ("write", ["text"]), ("write", []), ("utime", [[1, "x"]]), ("close", [1]), ("nope", []),
])
def test_malformed_calls_are_protocol_errors(method: str, args: list[Any]) -> None:
    table = HandleTable(window=1000)
    writer = _HeldWriter()
    ((handle_id, _),) = table.register("c1", {"writer": writer}).values()
    assert _result(table.call("c1", handle_id, method, args)).check(ProtocolError)
    assert writer.calls == []


def test_reads_are_capped_at_the_window() -> None:
    table = HandleTable(window=8)
    reader = BuildbotReaderAdapter(_BuildbotReader(b"0123456789abcdef"))
    ((handle_id, kind),) = table.register("c1", {"reader": reader}).values()
    assert kind == "reader"
    assert _result(table.call("c1", handle_id, "read", [100])) == b"01234567"
    assert _result(table.call(None, handle_id, "read", [100])) == b"89abcdef"
    assert _result(table.call("c1", handle_id, "read", [100])) == b""


class _BuildbotWriter:
    """The shape of Buildbot's FileWriterImpl (remote_* methods)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.times: Any = None
        self.closed = False

    def remote_write(self, data: bytes) -> None:
        self.buf.write(data)

    def remote_utime(self, times: Any) -> None:
        self.times = times

    def remote_unpack(self) -> None:
        raise AssertionError("not an archive")

    def remote_close(self) -> None:
        self.closed = True


class _BuildbotReader:
    def __init__(self, data: bytes):
        self.buf = io.BytesIO(data)

    def remote_read(self, max_length: int) -> bytes:
        return self.buf.read(max_length)

    def remote_close(self) -> None:
        pass


def test_buildbot_style_objects_are_adapted_and_misplaced_handles_refused() -> None:
    impl = _BuildbotWriter()
    plain, handles = split_handles({"writer": impl, "path": "x"})
    assert plain == {"path": "x"} and isinstance(handles["writer"], BuildbotWriterAdapter)
    table = HandleTable(window=100)
    ((handle_id, _),) = table.register("c", handles).values()
    for method, args in (("write", [b"hi"]), ("close", []), ("utime", [[1.5, 2.5]])):
        assert _result(table.call("c", handle_id, method, args)) is None
    assert impl.buf.getvalue() == b"hi" and impl.closed and impl.times == (1.5, 2.5)
    with pytest.raises(UnsupportedValue):
        split_handles({"reader": _BuildbotWriter()})
    with pytest.raises(UnsupportedValue):
        split_handles({"source": _BuildbotReader(b"")})


def test_worker_link_keeps_calls_within_its_window() -> None:
    answers: list[Deferred[Any]] = []
    sent: list[tuple[str, list[Any]]] = []

    def send(command_id: str, handle_id: int, method: str, args: list[Any]) -> Deferred[Any]:
        sent.append((method, args))
        d: Deferred[Any] = Deferred()
        answers.append(d)
        return d

    link = TransferLink(send, window=10)
    proxy = TransferProxy(link, "c1", 1, "writer")
    results = [proxy.callRemote("write", b"x" * 6) for _ in range(3)]
    assert len(sent) == 1, "the second write waits until the first is answered"
    answers[0].callback(None)
    assert len(sent) == 2 and link.in_flight == 6
    link.lost("test")
    assert _result(results[2]).check(ConnectionLost)
    assert _result(proxy.callRemote("close")).check(ConnectionLost)
    assert _result(proxy.callRemote("read", 1)).check(ProtocolError), "a writer has no read"
    assert _result(results[0]) is None


def test_local_file_writer_appears_only_at_close(tmp_path: Any) -> None:
    target = tmp_path / "out" / "file.bin"
    unused = LocalFileWriter(str(tmp_path / "unused" / "never.bin"))
    unused.cancel()
    assert not (tmp_path / "unused").exists(), "an unused writer makes nothing"
    writer = LocalFileWriter(str(target), mode=0o600)
    writer.write(b"part one, ")
    assert not target.exists()
    writer.write(b"part two")
    writer.close()
    writer.utime((1_000_000_000.0, 1_000_000_100.0))
    assert target.read_bytes() == b"part one, part two"
    assert os.stat(target).st_mode & 0o777 == 0o600 and os.stat(target).st_mtime == 1_000_000_100.0
    assert sorted(os.listdir(target.parent)) == ["file.bin"]
    limited = LocalFileWriter(str(tmp_path / "out" / "small.bin"), maxsize=4)
    with pytest.raises(OSError, match="maximum size"):
        limited.write(b"12345")
    assert sorted(os.listdir(target.parent)) == ["file.bin"], "the refused upload left nothing"


def test_directory_writer_refuses_an_archive_escaping_its_directory(tmp_path: Any) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in ("fine.txt", "../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    writer = DirectoryWriter(str(tmp_path / "dest"))
    writer.write(raw.getvalue())
    with pytest.raises(tarfile.FilterError):
        writer.unpack()
    writer.cancel()
    assert not (tmp_path / "escaped.txt").exists()
    assert os.listdir(tmp_path / "dest") == [], "nothing is unpacked from a bad archive"
    assert sorted(os.listdir(tmp_path)) == ["dest"], "the archive's temporary file is gone"


def test_local_file_reader_reads_in_pieces(tmp_path: Any) -> None:
    path = tmp_path / "src.bin"
    path.write_bytes(b"abcdefgh")
    reader = LocalFileReader(str(path))
    assert [reader.read(3), reader.read(3), reader.read(3), reader.read(3)] == [b"abc", b"def", b"gh", b""]
    reader.close()
    with pytest.raises(ValueError):
        reader.read(1)


def test_unpack_ends_an_upload_as_buildbot_worker_sends_it(tmp_path: Any) -> None:
    # buildbot-worker's uploadDirectory: write..., unpack, and no close.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("inside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    table = HandleTable(window=1 << 20)
    writer = DirectoryWriter(str(tmp_path / "dest"))
    ((handle_id, _),) = table.register("c1", {"writer": writer}).values()
    assert _result(table.call("c1", handle_id, "write", [raw.getvalue()])) is None
    assert _result(table.call("c1", handle_id, "unpack", [])) is None
    assert _result(table.call("c1", handle_id, "write", [b"late"])).check(ProtocolError)
    assert _result(table.call("c1", handle_id, "close", [])) is None, "a close after unpack is harmless"
    table.release_command("c1")
    assert (tmp_path / "dest" / "inside.txt").read_bytes() == b"abc"
    assert sorted(os.listdir(tmp_path)) == ["dest"], "the archive is gone"
