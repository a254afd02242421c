"""The msgpack backend's master against the real thing: an unmodified
``buildbot-worker`` 4.x from PyPI created with ``--protocol
msgpack_experimental_v7``, run in the foreground as a subprocess and driven
only through the ``Connection`` contract.

A stock worker does not speak the workerwire extension, so the master does
what Buildbot's own msgpack master does (``docs/protocols/msgpack.md``):
worker settings, the builder list as ``listdir``/``mkdir`` commands, absolute
paths, output as Buildbot's line info.
"""

from __future__ import annotations

import os
import sys
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher

from test_pb_buildbot_worker import START_TIMEOUT, TIMEOUT, StockWorker, shell_args
from workerwire import LinkOptions, load_backend
from workerwire.conformance import RecordingCommand, RecordingMaster, within
from workerwire.errors import UnknownBuilder, UnknownCommand
from workerwire.master import Connection

buildbot_worker = pytest.importorskip("buildbot_worker", reason="buildbot-worker is a test dependency (setup.cfg)")

PROTOCOL = "--protocol=msgpack_experimental_v7"


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture
async def setup(reactor: Any, tmp_path: Any) -> AsyncIterator[tuple[RecordingMaster, Any, Any, StockWorker]]:
    master = RecordingMaster(reactor)
    listener = load_backend("msgpack").create_listener(master, LinkOptions(keepalive_interval=None), reactor)
    registration = await listener.updateRegistration("w1", "pw-right-1", "tcp:port=0:interface=127.0.0.1")
    worker = StockWorker(reactor, str(tmp_path / "worker"))
    try:
        yield master, listener, registration, worker
    finally:
        await worker.stop()
        await listener.stopListening()
    for bad in ("Traceback", "Unhandled", "does not exist"):
        assert bad not in worker.log(), f"the worker logged {bad!r}:\n{worker.log()}"


async def connected(setup: tuple[RecordingMaster, Any, Any, StockWorker], *options: str) -> Connection:
    master, listener, registration, worker = setup
    await worker.create(registration.getPort(), "w1", "pw-right-1", PROTOCOL, *options)
    waiting = master.whenConnection("w1")
    worker.start()
    conn: Connection = await within(waiting, worker.reactor, START_TIMEOUT, what="buildbot-worker to log in")
    return conn


@async_test
async def test_worker_info_builders_print_and_keepalive(setup: Any) -> None:
    conn = await connected(setup)
    worker: StockWorker = setup[3]
    assert conn.backendName == "msgpack" and conn.workerName == "w1"
    host, _, port = conn.get_peer().rpartition(":")
    assert host == "127.0.0.1" and port.isdigit()

    info = await conn.remoteGetWorkerInfo()
    assert info["version"] == buildbot_worker.version
    assert info["basedir"] == worker.basedir
    assert info["system"] == os.name and isinstance(info["numcpus"], int)
    assert info["host"] == "workerwire interop test host\n"
    assert isinstance(info["environ"], dict) and info["environ"]
    for command in ("shell", "upload_file", "download_file", "mkdir", "rmdir", "stat", "glob", "listdir"):
        assert command in info["worker_commands"], command

    assert sorted(await conn.remoteSetBuilderList([("b1", "b1-dir"), ("b2", "b2-dir")])) == ["b1", "b2"]
    assert os.path.isdir(os.path.join(worker.basedir, "b1-dir"))
    assert os.path.isdir(os.path.join(worker.basedir, "b2-dir"))
    assert await conn.remoteSetBuilderList([("b2", "b2-dir")]) == ["b2"]
    with pytest.raises(UnknownBuilder):
        await conn.remoteStartBuild("b1")
    assert await conn.remoteStartBuild("b2") is None

    assert await conn.remotePrint("hello from a workerwire master ✓") is None
    await worker.wait_for_log("hello from a workerwire master ✓")
    assert await conn.doKeepalive() is None
    await worker.wait_for_log("Connection keepalive confirmed.")


@async_test
async def test_shell_command_streams_output_in_order_with_its_rc(setup: Any) -> None:
    conn = await connected(setup)
    worker: StockWorker = setup[3]
    await conn.remoteSetBuilderList([("b1", "b1")])
    lines = 200_000  # 9 bytes each: 1.8 MB of stdout, many update messages
    script = (
        "import sys\n"
        f"for i in range({lines}):\n"
        "    sys.stdout.write('%08d\\n' % i)\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('done ✓\\n')\n"
        "sys.exit(3)\n"
    )
    rc = RecordingCommand()
    await conn.remoteStartCommand(rc, "b1", "0", "shell", shell_args([sys.executable, "-c", script]))
    await within(rc.done, worker.reactor, 90, what="the shell command to complete")
    assert rc.completions == [None]
    assert rc.text("stdout") == "".join("%08d\n" % i for i in range(lines)), "stdout incomplete or out of order"
    assert rc.text("stderr") == "done ✓\n"
    assert rc.values("rc") == [3]
    # The command ran in the builder's directory, made absolute by the master.
    assert os.path.join(worker.basedir, "b1", "wd") in rc.text("header")


@async_test
async def test_interrupt_a_long_running_command(setup: Any) -> None:
    conn = await connected(setup)
    await conn.remoteSetBuilderList([("b1", "b1")])
    script = "import sys, time; sys.stdout.write(('x' * 99 + '\\n') * 5000); sys.stdout.flush(); time.sleep(120)"
    rc = RecordingCommand()
    await conn.remoteStartCommand(rc, "b1", "7", "shell", shell_args([sys.executable, "-c", script]))
    await within(rc.whenUpdated(lambda: bool(rc.values("stdout"))), setup[3].reactor, TIMEOUT, what="first output")
    assert rc.completions == []
    assert await conn.remoteInterruptCommand("b1", "7", "the test pressed stop") is None
    await within(rc.done, setup[3].reactor, TIMEOUT, what="the interrupted command to end")
    assert rc.completions == [None]
    (code,) = rc.values("rc")
    assert code != 0
    assert "command interrupted" in rc.text("header")


@async_test
async def test_unknown_command_fails_the_start(setup: Any) -> None:
    conn = await connected(setup)
    await conn.remoteSetBuilderList([("b1", "b1")])
    rc = RecordingCommand()
    with pytest.raises(UnknownCommand) as err:
        await conn.remoteStartCommand(rc, "b1", "1", "no-such-command", {})
    assert "no-such-command" in str(err.value)
    assert rc.completions == []


@async_test
async def test_remote_shutdown_stops_the_process(setup: Any) -> None:
    conn = await connected(setup)
    worker: StockWorker = setup[3]
    gone: Deferred[None] = Deferred()
    conn.notifyOnDisconnect(lambda: gone.callback(None))
    assert await conn.remoteShutdown() is None
    await within(gone, worker.reactor, TIMEOUT, what="the link to close")
    assert worker.process is not None
    await within(worker.process.ended, worker.reactor, TIMEOUT, what="the buildbot-worker process to exit")
    assert "worker shutting down on command from master" in worker.log()


@async_test
async def test_wrong_password_is_refused_on_both_ends(setup: Any) -> None:
    master, listener, registration, worker = setup
    events: list[str] = []
    refused: Deferred[None] = Deferred()

    def observer(event: dict[str, Any]) -> None:
        text = formatEvent(event) + repr(event.get("log_failure", ""))
        events.append(text)
        if "wrong password for worker 'w1'" in text and not refused.called:
            refused.callback(None)

    globalLogPublisher.addObserver(observer)
    try:
        await worker.create(registration.getPort(), "w1", "pw-wrong-2", PROTOCOL)
        worker.start()
        await within(refused, worker.reactor, START_TIMEOUT, what="the master to log the refusal")
        await worker.wait_for_log("WebSocket connection upgrade failed [401]")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert master.offers == [] and listener.connections() == []
    assert not [e for e in events if "pw-wrong-2" in e or "pw-right-1" in e], "a password reached the log"
    assert "pw-wrong-2" not in worker.log()
