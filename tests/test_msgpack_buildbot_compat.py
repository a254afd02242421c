"""What the msgpack backend does for stock Buildbot peers, unit by unit: the
paths and names a stock buildbot-worker needs (as Buildbot's own msgpack
master makes them), output as Buildbot's line info both ways, and the
WebSocket URL of a worker's address."""

from __future__ import annotations

import pytest

from workerwire.errors import ProtocolError, UnknownBuilder
from workerwire_msgpack.buildbot import StockWorkerPaths, updates_for_stock_master, updates_from_stock_worker
from workerwire_msgpack.worker import websocket_url


def paths(system: str = "posix") -> StockWorkerPaths:
    p = StockWorkerPaths()
    p.info = {"basedir": "/srv/w1" if system == "posix" else "C:\\w1", "system": system}
    p.builder_dirs = {"b1": p.basedir.joinpath("b1-dir")}
    return p


def test_builder_relative_paths_become_absolute_and_transfers_are_renamed() -> None:
    p = paths()
    assert p.translate("b1", "shell", {"workdir": "build", "want_stdout": 1, "want_stderr": 0}) == (
        "shell", {"workdir": "/srv/w1/b1-dir/build", "want_stdout": True, "want_stderr": False})
    assert p.translate("b1", "mkdir", {"dir": ["a", "b"]}) == (
        "mkdir", {"paths": ["/srv/w1/b1-dir/a", "/srv/w1/b1-dir/b"]})
    assert p.translate("b1", "rmdir", {"dir": "build"}) == ("rmdir", {"paths": ["/srv/w1/b1-dir/build"]})
    assert p.translate("b1", "stat", {"file": "x.txt", "workdir": "build"}) == (
        "stat", {"workdir": "build", "path": "/srv/w1/b1-dir/build/x.txt"})
    assert p.translate("b1", "uploadFile", {"workdir": "build", "workersrc": "out.bin"})[0] == "upload_file"
    assert p.translate("b1", "uploadFile", {"workdir": "build", "workersrc": "out.bin"})[1]["path"] == (
        "/srv/w1/b1-dir/build/out.bin")
    assert p.translate("b1", "downloadFile", {"workdir": "build", "workerdest": "in.bin"}) == (
        "download_file", {"workdir": "build", "workerdest": "in.bin", "path": "/srv/w1/b1-dir/build/in.bin"})
    assert p.translate("b1", "cpdir", {"fromdir": "a", "todir": "b"}) == (
        "cpdir", {"from_path": "/srv/w1/b1-dir/a", "to_path": "/srv/w1/b1-dir/b"})


def test_a_windows_worker_gets_windows_paths() -> None:
    assert paths("nt").translate("b1", "shell", {"workdir": "build"})[1]["workdir"] == "C:\\w1\\b1-dir\\build"


def test_an_unknown_builder_is_the_core_error() -> None:
    with pytest.raises(UnknownBuilder) as err:
        paths().translate("b9", "shell", {"workdir": "build"})
    assert "b1" in str(err.value)


def test_line_info_from_a_stock_worker_becomes_text() -> None:
    args = [["stdout", ["a\nb\n", [1, 3], [1.0, 1.0]]], ["log", ["build.log", ["x\n", [1], [2.0]]]],
            ["rc", 0], ["header", ["h\n", [1], [0.5]]]]
    assert updates_from_stock_worker(args) == [
        ("stdout", "a\nb\n"), ("log", ["build.log", "x\n"]), ("rc", 0), ("header", "h\n")]
    for bad in ({"stdout": "x"}, [["stdout"]], [[1, "x"]]):
        with pytest.raises(ProtocolError):
            updates_from_stock_worker(bad)


def test_text_to_a_stock_master_becomes_line_info() -> None:
    (stdout, log, rc, raw) = updates_for_stock_master(
        [("stdout", "a\nbc\n"), ("log", ("build.log", "x\n")), ("rc", 0), ("stderr", b"\xffz\n")])
    assert stdout[0] == "stdout" and stdout[1][:2] == ["a\nbc\n", [1, 4]] and len(stdout[1][2]) == 2
    assert log == ["log", ["build.log", ["x\n", [1], log[1][1][2]]]]
    assert rc == ["rc", 0]
    assert raw[1][0] == "\ufffdz\n"  # Buildbot's master takes text
    # ... and whole lines only: a partial last line is ended, as buildbot-worker does.
    assert updates_for_stock_master([("stdout", "no newline")])[0][1][:2] == ["no newline\n", [10]]


def test_websocket_url_of_a_worker_address() -> None:
    assert websocket_url("tcp:host=ci.example:port=9989") == "ws://ci.example:9989/"
    assert websocket_url("tls:host=ci.example:port=443:caCertsFile=/x") == "wss://ci.example:443/"
    assert websocket_url("tcp:host=\\:\\:1:port=9989") == "ws://[::1]:9989/"
