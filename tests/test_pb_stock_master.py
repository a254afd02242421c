"""workerwire's PB connector driven the way a Buildbot master drives
buildbot-worker, by a master built from stock ``twisted.spread.pb`` only (no
workerwire code on that side: default broker, jelly rules and portal).

Like Buildbot's master, the realm calls ``print``, ``getWorkerInfo`` and
``setBuilderList`` on the worker's bot before it answers the login, so the
connector must serve the bot while its login is pending.
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.spread import pb
from zope.interface import implementer

from workerwire import Backoff, LinkOptions, load_backend
from workerwire.conformance import ScriptedWorker, within
from workerwire.conformance.scripted_worker import blob_text
from workerwire.errors import LoginRefused, UnsupportedValue


class StockCommand(pb.Referenceable):
    """Buildbot's ``RemoteCommand`` as PB sees it: records the raw shapes."""

    def __init__(self) -> None:
        self.raw_updates: list[Any] = []
        self.completions: list[Any] = []
        self.done: Deferred[None] = Deferred()

    def remote_update(self, updates: Any) -> int:
        self.raw_updates.append(updates)
        return max(num for _, num in updates)

    def remote_complete(self, failure: Any = None) -> None:
        self.completions.append(failure)
        if not self.done.called:
            self.done.callback(None)


class StockAvatar(pb.Avatar):
    def __init__(self) -> None:
        self.keepalives = 0
        self.shutdowns = 0
        self.bot: pb.RemoteReference | None = None
        self.builders: dict[str, pb.RemoteReference] = {}
        self.attach_log: list[Any] = []

    def perspective_keepalive(self) -> None:
        self.keepalives += 1

    def perspective_shutdown(self) -> None:
        self.shutdowns += 1


@implementer(IRealm)
class StockRealm:
    """Attaches like Buildbot: calls the bot, then answers the login."""

    def __init__(self) -> None:
        self.avatars: list[StockAvatar] = []
        self.attached: Deferred[StockAvatar] = Deferred()

    def requestAvatar(self, avatarId: bytes, mind: Any, *interfaces: Any) -> Deferred[Any]:
        return ensureDeferred(self._attach(mind))

    async def _attach(self, mind: pb.RemoteReference) -> Any:
        avatar = StockAvatar()
        avatar.bot = mind
        avatar.attach_log.append(await mind.callRemote("print", message="attached"))
        avatar.attach_log.append(await mind.callRemote("getWorkerInfo"))
        avatar.builders = await mind.callRemote("setBuilderList", [("b1", "b1")])
        self.avatars.append(avatar)
        self.attached.callback(avatar)
        return (pb.IPerspective, avatar, lambda: None)


pytestmark = pytest.mark.usefixtures("no_errors_logged")


@pytest_twisted.async_yield_fixture
async def stock_master(reactor: Any) -> AsyncIterator[tuple[StockRealm, int]]:
    realm = StockRealm()
    portal = Portal(realm, [InMemoryUsernamePasswordDatabaseDontUse(w1=b"pw-1")])
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(pb.PBServerFactory(portal))
    try:
        yield realm, port.getHost().port
    finally:
        await port.stopListening()


def connector(reactor: Any, tmp_path: Any, port: int, password: str = "pw-1") -> tuple[Any, ScriptedWorker]:
    bot = ScriptedWorker(str(tmp_path), reactor)
    c = load_backend("pb").create_connector(
        bot, f"tcp:host=127.0.0.1:port={port}", "w1", password,
        LinkOptions(keepalive_interval=None), reactor, Backoff(initial=0.05, maximum=0.5),
    )
    return c, bot


@async_test
async def test_stock_master_attaches_and_runs_commands(stock_master: Any, reactor: Any, tmp_path: Any) -> None:
    realm, port = stock_master
    c, bot = connector(reactor, tmp_path, port)
    c.start()
    try:
        await within(c.whenConnected(), reactor, what="the login")
        avatar = await within(realm.attached, reactor, what="the attach")
        # Served while the login was pending, with Buildbot's shapes.
        assert bot.prints == ["attached"]
        assert avatar.attach_log[0] is None
        assert avatar.attach_log[1]["worker_commands"]["emit"] == "1.0"
        assert sorted(avatar.builders) == ["b1"] and isinstance(avatar.builders["b1"], pb.RemoteReference)
        assert os.path.isdir(os.path.join(str(tmp_path), "b1"))
        b1 = avatar.builders["b1"]

        assert await b1.callRemote("startBuild") is None
        assert bot.builds_started == ["b1"]

        cmd = StockCommand()
        updates = [["header", "start\n"], ["stdout", "out ✓\n"], ["log", ["build.log", "line\n"]], ["rc", 0]]
        assert await b1.callRemote("startCommand", cmd, "0", "emit", {"updates": updates}) is None
        await within(cmd.done, reactor, what="completion")
        flat = [entry for batch in cmd.raw_updates for entry in batch]
        assert flat == [[{k: v}, 0] for k, v in updates]
        assert cmd.completions == [None]

        failing = StockCommand()
        await b1.callRemote("startCommand", failing, "1", "fail", {"message": "boom"})
        await within(failing.done, reactor, what="the failed completion")
        (failure,) = failing.completions
        assert isinstance(failure, pb.CopiedFailure)
        assert failure.check(ValueError) and failure.getErrorMessage() == "boom"
        assert failure.traceback == "Traceback unavailable\n"

        with pytest.raises(pb.RemoteError) as err:
            await b1.callRemote("startCommand", StockCommand(), "2", "no-such", {})
        assert err.value.remoteType.endswith(b".UnknownCommand")

        waiter = StockCommand()
        await b1.callRemote("startCommand", waiter, "3", "wait", {})
        assert await b1.callRemote("interruptCommand", "3", "stop now") is None
        await within(waiter.done, reactor, what="the interrupted command")
        assert bot.interrupts == [("b1", "3", "stop now")]

        # A stock master cannot take one value over 640 KiB: the update fails
        # cleanly on the worker and the link stays usable.
        big = StockCommand()
        await b1.callRemote("startCommand", big, "4", "blob", {"size": 1024 * 1024})
        assert await avatar.bot.callRemote("print", message="still linked") is None  # type: ignore[union-attr]
        assert any(f.check(UnsupportedValue) for f in bot.errors)

        assert await c.sendKeepalive() is None
        assert avatar.keepalives == 1
        assert await c.requestShutdown() is None
        assert avatar.shutdowns == 1
    finally:
        await c.stop()


@async_test
async def test_stock_master_refuses_a_wrong_password(stock_master: Any, reactor: Any, tmp_path: Any,
                                                    no_errors_logged: list[str]) -> None:
    no_errors_logged.append("UnauthorizedLogin")  # stock PB logs every failure it sends
    realm, port = stock_master
    c, bot = connector(reactor, tmp_path, port, password="wrong")
    with pytest.raises(LoginRefused):
        await within(c.probe(), reactor, what="the refusal")
    assert realm.avatars == []


@async_test
async def test_large_values_between_workerwire_ends(reactor: Any, tmp_path: Any) -> None:
    """The chunking extension both ways, for arguments and for results."""
    from workerwire.conformance import Harness

    class BigInfoWorker(ScriptedWorker):
        def remote_getWorkerInfo(self) -> dict[str, Any]:
            info = super().remote_getWorkerInfo()
            info["environ"]["HUGE"] = blob_text(3 * 1024 * 1024)
            info["many"] = list(range(700_000))  # longer than one banana list
            return info

    h = Harness(load_backend("pb"), LinkOptions(keepalive_interval=None), reactor, str(tmp_path))
    try:
        h.bot = lambda name: BigInfoWorker(str(tmp_path), reactor)  # type: ignore[method-assign]
        w = await h.start_worker()
        info = await w.conn.remoteGetWorkerInfo()
        assert info["environ"]["HUGE"] == blob_text(3 * 1024 * 1024)
        assert info["many"] == list(range(700_000))
        message = "ü" * (2 * 1024 * 1024)
        assert await w.conn.remotePrint(message) is None
        assert w.bot.prints == [message]
        deep: Any = "bottom"
        for _ in range(200):
            deep = [deep]
        rc = await h.run(w, "echo", {"deep": deep, "blob": bytes(range(256)) * 8192})
        assert rc.values("echo") == [{"deep": deep, "blob": bytes(range(256)) * 8192}]
    finally:
        await h.close()
