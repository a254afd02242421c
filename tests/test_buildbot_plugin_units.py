"""The Buildbot plugin's parts, in one process: keyword checks, the command
target adapter and the connection adapter over a real workerwire link (null
backend, real worker runtime running real shell commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from buildbot.process.remotecommand import RemoteException
from pytest_twisted import ensureDeferred as async_test
from twisted.internet import error as internet_error
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from workerwire import Backoff, LinkOptions, backend_names, load_backend
from workerwire import errors as ww_errors
from workerwire_app.worker_runtime import WorkerRuntime
from workerwire_buildbot.connection import BuildbotConnection, CommandTargetAdapter
from workerwire_buildbot.options import BUILDBOT_WORKER_KEYWORDS, SettingsError, parse_settings

from test_app_support import REACTOR


def test_settings_normalise_an_int_port_and_split_link_options_from_worker_keywords() -> None:
    s = parse_settings("w", "amp", 9990, {"max_builds": 2, "keepalive_interval": 7, "login_timeout": 5})
    assert s.key == ("amp", "tcp:9990")
    assert s.options == LinkOptions(keepalive_interval=7, login_timeout=5)
    assert dict(s.buildbot_kwargs) == {"max_builds": 2, "keepalive_interval": 7}   # Buildbot sees its keyword too


def test_settings_name_the_installed_backends_and_what_is_wrong() -> None:
    with pytest.raises(SettingsError, match=r"^WorkerwireWorker 'w': backend= is required, one of the installed "
                                            rf"workerwire backends: {', '.join(backend_names())}$"):
        parse_settings("w", None, "tcp:1", {})
    with pytest.raises(SettingsError, match=r"no workerwire backend named 'amq'; installed: .*amp"):
        parse_settings("w", "amq", "tcp:1", {})
    with pytest.raises(SettingsError, match=r"port= is required \(a listening port string such as 'tcp:port=0"):
        parse_settings("w", "amp", None, {})
    with pytest.raises(SettingsError, match=r"port 'udp:53' is not valid for backend 'amp'"):
        parse_settings("w", "amp", "udp:53", {})
    with pytest.raises(SettingsError) as info:
        parse_settings("w", "amp", "tcp:1", {"max_bulids": 1})
    assert "unknown keyword max_bulids" in str(info.value)
    assert all(k in str(info.value) for k in BUILDBOT_WORKER_KEYWORDS + ("keepalive_timeout", "output_window"))
    with pytest.raises(SettingsError, match=r"link options \{'output_window': 10\}: output_window must be at least"):
        parse_settings("w", "amp", "tcp:1", {"output_window": 10})


class Recorder:
    """Stands in for Buildbot's RemoteCommand (which needs a running build; the
    real one is exercised by test_buildbot_plugin.py): records what it is given."""

    def __init__(self) -> None:
        self.updates: list[Any] = []
        self.completions: list[Any] = []
        self.done: Deferred[None] = Deferred()

    def remote_update(self, updates: list[Any]) -> int:
        self.updates.extend(updates)
        return 0

    def remote_complete(self, failure: Any = None) -> None:
        self.completions.append(failure)
        self.done.callback(None)


def test_updates_reach_buildbot_in_pb_shape_numbered_in_order() -> None:
    rec = Recorder()
    target = CommandTargetAdapter(rec)
    target.remote_update([("stdout", "a\n"), ("header", "h")])
    target.remote_update([("log", ["l", "x"]), ("rc", 0)])
    assert rec.updates == [({"stdout": "a\n"}, 0), ({"header": "h"}, 1), ({"log": ["l", "x"]}, 2), ({"rc": 0}, 3)]


def test_a_lost_link_completes_as_twisted_connection_lost_and_a_worker_error_as_remote_exception() -> None:
    rec = Recorder()
    CommandTargetAdapter(rec).remote_complete(Failure(ww_errors.ConnectionLost("gone")))
    lost = rec.completions[0]
    assert lost.check(internet_error.ConnectionLost) and lost.check(ww_errors.ConnectionLost)
    rec = Recorder()
    CommandTargetAdapter(rec).remote_complete(Failure(ww_errors.RemoteCallFailed("OSError", "no such file")))
    assert rec.completions[0].check(RemoteException)
    assert str(rec.completions[0].value) == "OSError: no such file"


def test_buildbot_file_handles_become_core_transfer_handles(tmp_path: Path) -> None:
    from buildbot.process.remotetransfer import FileReader, FileWriter

    from workerwire import transfer
    from workerwire_buildbot.connection import map_transfer_args

    writer = FileWriter(str(tmp_path / "dest"), 1024, None)
    (tmp_path / "src").write_bytes(b"x")
    reader = FileReader(open(tmp_path / "src", "rb"))
    try:
        up = map_transfer_args({"writer": writer, "workersrc": "a", "maxsize": None})
        assert isinstance(up["writer"], transfer.FileWriter) and up["writer"].impl is writer
        assert {k: v for k, v in up.items() if k != "writer"} == {"workersrc": "a", "maxsize": None}
        down = map_transfer_args({"reader": reader, "workerdest": "b"})
        assert isinstance(down["reader"], transfer.FileReader) and down["reader"].impl is reader
        plain = {"command": ["true"], "workdir": "build"}
        assert map_transfer_args(plain) is plain
    finally:
        writer.cancel()
        reader.remote_close()


class Hooks:
    def __init__(self) -> None:
        self.connected: Deferred[Any] = Deferred()

    def newConnection(self, conn: Any, workerName: str) -> None:
        REACTOR.callLater(0, self.connected.callback, conn)

    def workerShutdownRequested(self, conn: Any) -> None:
        pass


class FakeWorker:
    """Only the name: the adapter reads ``workername`` (Buildbot's Worker is tested end to end elsewhere)."""

    workername = "w1"


@async_test
async def test_the_adapter_runs_a_command_and_a_dropped_link_looks_lost_to_buildbot(tmp_path: Path) -> None:
    backend = load_backend("null")
    hooks = Hooks()
    listener = backend.create_listener(hooks, LinkOptions(keepalive_interval=None), REACTOR)
    reg = await listener.updateRegistration("w1", "pw", backend.loopback_port())
    runtime = WorkerRuntime(str(tmp_path / "w1"), REACTOR)
    connector = backend.create_connector(runtime, reg.getAddress(), "w1", "pw", LinkOptions(keepalive_interval=None),
                                         REACTOR, Backoff(initial=0.05, maximum=0.2, jitter=0.1))
    connector.start()
    try:
        link = await hooks.connected
        conn = BuildbotConnection(None, FakeWorker(), link)
        disconnected: Deferred[None] = Deferred()
        conn.notifyOnDisconnect(lambda: disconnected.callback(None))
        assert await conn.remoteSetBuilderList([("b1", "b1")]) == ["b1"]
        info = await conn.remoteGetWorkerInfo()
        assert "shell" in info["worker_commands"]

        rec = Recorder()
        await conn.remoteStartCommand(rec, "b1", "1", "shell", {"command": ["echo", "hi"], "workdir": "build"})
        await rec.done
        assert rec.completions == [None]
        assert "".join(u["stdout"] for u, _ in rec.updates if "stdout" in u) == "hi\n"
        assert [u["rc"] for u, _ in rec.updates if "rc" in u] == [0]
        assert [n for _, n in rec.updates] == list(range(len(rec.updates)))

        with pytest.raises(WorkerCallFailedOrUnknown):
            await conn.remoteStartCommand(Recorder(), "b1", "2", "no-such-command", {})

        running = Recorder()
        await conn.remoteStartCommand(running, "b1", "3", "shell", {"command": ["sleep", "60"], "workdir": "build"})
        conn.loseConnection()
        await running.done
        assert running.completions[0].check(internet_error.ConnectionLost)
        await disconnected
        with pytest.raises(internet_error.ConnectionLost):
            await conn.remotePrint("after the loss")
    finally:
        await connector.stop()
        await runtime.interrupt_all("test over", timeout=5)
        await listener.stopListening()


#: An unknown command keeps workerwire's core type (Buildbot treats any start failure as EXCEPTION).
WorkerCallFailedOrUnknown = (ww_errors.UnknownCommand, RemoteException)
