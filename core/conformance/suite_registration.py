"""Registration lifecycle, port sharing, and logins."""

from __future__ import annotations

import re
from typing import cast

import pytest
from pytest_twisted import ensureDeferred as async_test
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher

from ..errors import AddressError, DuplicateWorker, LoginRefused, WorkerwireError
from .harness import Harness, within

__all__ = ["RegistrationTests", "LoginTests"]


class RegistrationTests:
    @async_test
    async def test_registration_binds_a_real_port(self, harness: Harness) -> None:
        reg = await harness.register("w1", "pw")
        port = reg.getPort()
        assert port not in (0, "0", ""), "port 0 must be replaced by the bound port"
        if harness.backend.network:
            assert isinstance(port, int) and port > 0
        assert isinstance(reg.getAddress(), str) and reg.getAddress()
        assert harness.listener.getRegistration("w1") is reg

    @async_test
    async def test_unchanged_registration_is_the_same_object(self, harness: Harness) -> None:
        port = harness.port()
        first = await harness.listener.updateRegistration("w1", "pw", port)
        again = await harness.listener.updateRegistration("w1", "pw", port)
        assert again is first

    @async_test
    async def test_password_change_reregisters(self, harness: Harness) -> None:
        port = harness.port()
        first = await harness.listener.updateRegistration("w1", "old-pw", port)
        assert first is not None
        w = await harness.start_worker("w1", "old-pw", builders=[])
        second = await harness.listener.updateRegistration("w1", "new-pw", port)
        assert second is not None
        assert second is not first
        assert second.getPort() == first.getPort(), "a new password keeps the port open where it was"
        assert w.conn.isConnected, "changing credentials does not close existing connections"
        old, _ = harness.connector(second.getAddress(), "w1", "old-pw")
        with pytest.raises(LoginRefused):
            await within(old.probe(), harness.reactor, what="login with the old password")
        new, _ = harness.connector(second.getAddress(), "w1", "new-pw")
        await within(new.probe(), harness.reactor, what="login with the new password")

    @async_test
    async def test_port_change_moves_the_worker(self, harness: Harness) -> None:
        keep = await harness.register("keeper", "pw")  # keeps the first port open
        first = await harness.listener.updateRegistration("w1", "pw", harness.port())
        assert first is not None
        assert first.getPort() == keep.getPort()
        moved = await harness.listener.updateRegistration("w1", "pw", harness.second_port())
        assert moved is not None
        assert moved is not first and moved.getPort() != keep.getPort()
        at_old, _ = harness.connector(keep.getAddress(), "w1", "pw")
        with pytest.raises(LoginRefused):
            await within(at_old.probe(), harness.reactor, what="login on the old port")
        at_new, _ = harness.connector(moved.getAddress(), "w1", "pw")
        await within(at_new.probe(), harness.reactor, what="login on the new port")

    @async_test
    async def test_failed_port_move_keeps_the_old_registration(self, harness: Harness) -> None:
        blocker = await harness.register("blocker", "pw", harness.second_port())
        reg = await harness.register("w1", "pw")
        rival = harness.backend.create_listener(harness.master, harness.options, harness.reactor)
        harness.extra_listeners.append(rival)
        taken = harness.bound_port_string(blocker)
        with pytest.raises(AddressError):
            await rival.updateRegistration("w1", "pw", taken)
        own = harness.backend.create_listener(harness.master, harness.options, harness.reactor)
        harness.extra_listeners.append(own)
        mine = await own.updateRegistration("w1", "pw", harness.port())
        assert mine is not None
        with pytest.raises(AddressError):
            await own.updateRegistration("w1", "pw", taken)
        assert own.getRegistration("w1") is mine, "a failed move leaves the worker where it was"
        c, _ = harness.connector(mine.getAddress(), "w1", "pw")
        await within(c.probe(), harness.reactor, what="login where the worker still is")
        assert reg.getPort() != mine.getPort()

    @async_test
    async def test_none_port_or_empty_password_unregisters(self, harness: Harness) -> None:
        keep = await harness.register("keeper", "pw")
        await harness.register("w1", "pw")
        assert await harness.listener.updateRegistration("w1", "pw", None) is None
        assert harness.listener.getRegistration("w1") is None
        await harness.register("w2", "pw")
        assert await harness.listener.updateRegistration("w2", "", harness.port()) is None
        for name in ("w1", "w2"):
            c, _ = harness.connector(keep.getAddress(), name, "pw")
            with pytest.raises(LoginRefused):
                await within(c.probe(), harness.reactor, what=f"login of unregistered {name}")

    @async_test
    async def test_workers_share_one_port(self, harness: Harness) -> None:
        a = await harness.register("a", "pw-a")
        b = await harness.register("b", "pw-b")
        assert a.getPort() == b.getPort()
        wa = await harness.start_worker("a", "pw-a", builders=[])
        wb = await harness.start_worker("b", "pw-b", builders=[])
        assert wa.conn.workerName == "a" and wb.conn.workerName == "b"
        assert {c.workerName for c in harness.listener.connections()} == {"a", "b"}

    @async_test
    async def test_port_closes_with_its_last_registration(self, harness: Harness) -> None:
        a = await harness.register("a", "pw")
        await harness.register("b", "pw")
        address = a.getAddress()
        await harness.listener.updateRegistration("a", "pw", None)
        c, _ = harness.connector(address, "b", "pw")
        await within(c.probe(), harness.reactor, what="b to log in while the port is shared")
        await harness.listener.updateRegistration("b", "pw", None)
        c2, _ = harness.connector(address, "b", "pw")
        with pytest.raises(WorkerwireError) as err:
            await within(c2.probe(), harness.reactor, what="a refused connection")
        assert not isinstance(err.value, LoginRefused), "the port must be closed, not just refusing logins"

    @async_test
    async def test_unregister_method(self, harness: Harness) -> None:
        reg = await harness.register("w1", "pw")
        address = reg.getAddress()
        await reg.unregister()
        assert harness.listener.getRegistration("w1") is None
        c, _ = harness.connector(address, "w1", "pw")
        with pytest.raises(WorkerwireError):
            await within(c.probe(), harness.reactor, what="a refused connection")

    @async_test
    async def test_bad_port_string_is_an_address_error(self, harness: Harness) -> None:
        with pytest.raises(AddressError) as err:
            await harness.listener.updateRegistration("w1", "pw", "no-such-endpoint-kind:1234")
        assert "no-such-endpoint-kind" in str(err.value)
        assert harness.listener.getRegistration("w1") is None

    @async_test
    async def test_port_in_use_is_an_address_error(self, harness: Harness) -> None:
        reg = await harness.register("w1", "pw")
        rival = harness.backend.create_listener(harness.master, harness.options, harness.reactor)
        harness.extra_listeners.append(rival)
        with pytest.raises(AddressError):
            await rival.updateRegistration("w2", "pw", harness.bound_port_string(reg))
        # The first listener is unharmed.
        await harness.start_worker("w1", "pw", builders=[])


class LoginTests:
    @async_test
    async def test_login_offers_the_connection_then_attaches(self, harness: Harness) -> None:
        w = await harness.start_worker("w1", "pw")
        assert harness.master.offers == [("w1", w.conn)]
        assert w.conn.workerName == "w1" and w.conn.isConnected and w.connector.isConnected
        assert w.conn.backendName == harness.backend.name
        assert w.conn in harness.listener.connections()
        assert w.bot.links_established == 1
        peer = w.conn.get_peer()
        assert isinstance(peer, str) and peer
        if harness.backend.network:
            # One spelling on every backend: IPv4 host:port, [IPv6]:port, or unix:PATH.
            assert re.fullmatch(r"(\d{1,3}(\.\d{1,3}){3}|\[[0-9A-Fa-f:.%\w]+\]):\d+|unix:.+", peer), (
                f"get_peer() must be host:port ([v6]:port for IPv6, unix:PATH), not {peer!r}")

    @async_test
    async def test_wrong_password_is_refused(self, harness: Harness) -> None:
        reg = await harness.register("w1", "right-password")
        c, _ = harness.connector(reg.getAddress(), "w1", "wrong-password-x9")
        with pytest.raises(LoginRefused) as err:
            await within(c.probe(), harness.reactor, what="the refusal")
        assert "wrong-password-x9" not in str(err.value) and "right-password" not in str(err.value)
        assert harness.master.offers == []
        assert harness.listener.connections() == []

    @async_test
    async def test_unknown_worker_is_refused(self, harness: Harness) -> None:
        reg = await harness.register("w1", "pw")
        c, _ = harness.connector(reg.getAddress(), "nobody", "pw")
        with pytest.raises(LoginRefused):
            await within(c.probe(), harness.reactor, what="the refusal")
        assert harness.master.offers == []

    @async_test
    async def test_reconnecting_worker_learns_of_refusal(self, harness: Harness) -> None:
        reg = await harness.register("w1", "pw")
        c, _ = harness.connector(reg.getAddress(), "w1", "bad")
        c.start()
        with pytest.raises(LoginRefused):
            await within(c.whenConnected(), harness.reactor, what="the refusal")
        assert not c.isConnected

    @async_test
    async def test_no_password_in_any_log(self, harness: Harness) -> None:
        events: list[str] = []

        def observer(event: dict) -> None:
            events.append(formatEvent(event) + repr(event.get("log_failure", "")))

        globalLogPublisher.addObserver(cast(ILogObserver, observer))
        try:
            reg = await harness.register("w1", "Sesame-Right-77")
            c, _ = harness.connector(reg.getAddress(), "w1", "Sesame-Wrong-88")
            with pytest.raises(LoginRefused):
                await within(c.probe(), harness.reactor, what="the refusal")
            w = await harness.start_worker("w1", "Sesame-Right-77")
            w.conn.loseConnection()
        finally:
            globalLogPublisher.removeObserver(cast(ILogObserver, observer))
        leaks = [e for e in events if "Sesame-" in e]
        assert not leaks, f"password in log: {leaks[:3]}"

    @async_test
    async def test_master_refusal_reaches_the_worker(self, harness: Harness) -> None:
        reg = await harness.register("w1", "pw")
        harness.master.refuse = True
        c, _ = harness.connector(reg.getAddress(), "w1", "pw")
        with pytest.raises(DuplicateWorker) as err:
            await within(c.probe(), harness.reactor, what="the master's refusal")
        assert "already connected" in str(err.value)
        assert harness.listener.connections() == []

    @async_test
    async def test_worker_logs_in_again_after_a_disconnect(self, harness: Harness) -> None:
        w = await harness.start_worker("w1", "pw")
        first = w.conn
        again = harness.master.whenConnection("w1", newer_than=first)
        first.loseConnection()
        second = await within(again, harness.reactor, what="the worker to log in again")
        assert second is not first and second.isConnected and not first.isConnected
        assert len(harness.master.offers) == 2
        await within(w.connector.whenConnected(), harness.reactor, what="the worker's login answer")
        assert w.bot.links_established == 2 and w.bot.links_lost == 1
