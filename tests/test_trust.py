"""The master trusts a worker only with what it sent it (issue 7, item 5).

A rogue worker -- a real logged-in worker of the backend whose link the test
drives by hand through the backend's own connector internals (pb, amp) or
raw boxes (amp) -- tries to:

* send updates and completions for a command another worker runs, for one of
  its own that already finished, and for one that never existed;
* call master-side objects it was never given (pb: object ids never sent;
  amp: commands outside what a logged-in worker may send).

Each attempt is answered with a ProtocolError, and nothing reaches any
command: the victim's command sees exactly its own updates, once.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred

from workerwire import LinkOptions, load_backend
from workerwire.conformance import Harness, RecordingCommand, WorkerHandle, within
from workerwire.errors import ProtocolError, WorkerwireError


def _harness(name: str, reactor: Any, tmp_path: Any) -> Harness:
    pytest.importorskip(f"workerwire_{name}")
    return Harness(load_backend(name), LinkOptions(keepalive_interval=None), reactor, str(tmp_path))


@pytest_twisted.async_yield_fixture
async def pb_harness(reactor: Any, tmp_path: Any) -> AsyncIterator[Harness]:
    h = _harness("pb", reactor, tmp_path)
    try:
        yield h
    finally:
        await h.close()


@pytest_twisted.async_yield_fixture
async def amp_harness(reactor: Any, tmp_path: Any) -> AsyncIterator[Harness]:
    h = _harness("amp", reactor, tmp_path)
    try:
        yield h
    finally:
        await h.close()


async def refused(d: Deferred[Any], reactor: Any, translate: Any = None) -> WorkerwireError:
    """Wait for *d* to fail; return its core error."""
    try:
        await within(d, reactor, what="the master's answer")
    except Exception as e:
        error = translate(e) if translate is not None else e
        assert isinstance(error, WorkerwireError), repr(e)
        return error
    raise AssertionError("the master accepted it")


async def victim_running(h: Harness) -> tuple[WorkerHandle, RecordingCommand, str]:
    """A worker with a command that runs until interrupted (its first update received)."""
    victim = await h.start_worker("victim", "pw-victim")
    target = RecordingCommand()
    await victim.conn.remoteStartCommand(target, "b1", "victim-cmd", "wait", {})
    await within(target.whenUpdated(lambda: bool(target.updates)), h.reactor, what="the victim's first update")
    return victim, target, "victim-cmd"


async def victim_finishes_untouched(h: Harness, victim: WorkerHandle, target: RecordingCommand) -> None:
    await victim.conn.remoteInterruptCommand("b1", "victim-cmd", "test over")
    await within(target.done, h.reactor, what="the victim's command to end")
    assert target.updates == [("header", "waiting for an interrupt\n"), ("header", "interrupted: test over\n"),
                              ("rc", -2)], target.updates
    assert target.completions == [None]
    assert victim.conn.isConnected


# -- pb ------------------------------------------------------------------------


@async_test
async def test_pb_worker_reaches_only_its_own_running_commands(pb_harness: Harness) -> None:
    from twisted.spread import pb

    from workerwire_pb.errors import core_error

    h = pb_harness
    victim, target, _ = await victim_running(h)
    rogue = await h.start_worker("rogue", "pw-rogue")
    rogue_broker = rogue.connector._session.broker  # type: ignore[attr-defined]
    victim_ref = victim.bot.channels["victim-cmd"]._ref  # type: ignore[attr-defined]

    def call(luid: Any, method: str, *args: Any) -> Deferred[Any]:
        return rogue_broker.call(pb.RemoteReference(None, rogue_broker, luid, 0), method, *args)

    def translate(e: Exception) -> WorkerwireError:
        return core_error(e)

    # The id of the victim's command reference means nothing on the rogue's link
    # (ids are per link), nor does one that was never handed out.
    for luid in (victim_ref.luid, 987654, b"no-such-name"):
        for method, args in (("update", ([[{"stdout": "forged\n"}, 0]],)), ("complete", (None,))):
            error = await refused(call(luid, method, *args), h.reactor, translate)
            assert isinstance(error, ProtocolError) and "never given" in str(error), error
    # Its own command, once finished, no longer takes updates or a second completion.
    own = await h.run(rogue, "emit", {"updates": [["stdout", "mine\n"]]})
    own_ref = rogue.bot.channels[list(rogue.bot.channels)[-1]]._ref  # type: ignore[attr-defined]
    for method, args in (("update", ([[{"stdout": "late\n"}, 0]],)), ("complete", (None,))):
        error = await refused(rogue_broker.call(own_ref, method, *args), h.reactor, translate)
        assert isinstance(error, ProtocolError), error
    assert own.updates == [("stdout", "mine\n")] and own.completions == [None]
    # What the master did give it cannot be abused either: a second login is refused.
    error = await refused(call(b"root", "login", b"victim"), h.reactor, translate)
    assert isinstance(error, ProtocolError), error
    assert rogue.conn.isConnected  # answered, not dropped: such races are the worker's bug, not an attack
    await victim_finishes_untouched(h, victim, target)


# -- amp -----------------------------------------------------------------------


@async_test
async def test_amp_worker_reaches_only_its_own_running_commands(amp_harness: Harness) -> None:
    from workerwire_amp.commands import Complete, Update
    from workerwire_amp.errors import translate_failure

    h = amp_harness
    victim, target, cid = await victim_running(h)
    rogue = await h.start_worker("rogue", "pw-rogue")
    proto = rogue.connector.session.proto  # type: ignore[attr-defined]

    def translate(e: Exception) -> WorkerwireError:
        from twisted.python.failure import Failure

        value = translate_failure(Failure(e)).value
        assert isinstance(value, WorkerwireError)
        return value

    for command_id in (cid, "never-started"):
        error = await refused(proto.call(Update, command_id=command_id, updates=[["stdout", "forged\n"]]),
                              h.reactor, translate)
        assert isinstance(error, ProtocolError) and "not running" in str(error), error
        error = await refused(proto.call(Complete, command_id=command_id, error=None), h.reactor, translate)
        assert isinstance(error, ProtocolError) and "not running" in str(error), error
    own = await h.run(rogue, "emit", {"updates": [["stdout", "mine\n"]]}, commandId="rogue-cmd")
    for call in (lambda: proto.call(Update, command_id="rogue-cmd", updates=[["stdout", "late\n"]]),
                 lambda: proto.call(Complete, command_id="rogue-cmd", error=None)):
        error = await refused(call(), h.reactor, translate)
        assert isinstance(error, ProtocolError), error
    assert own.updates == [("stdout", "mine\n")] and own.completions == [None]
    assert rogue.conn.isConnected
    await victim_finishes_untouched(h, victim, target)


@pytest.mark.parametrize("command", ["StartCommand", "Print", "Ping", "Shutdown", "GetWorkerInfo", "Hello", "Login"])
@async_test
async def test_amp_commands_a_worker_may_not_send_are_refused_after_login(amp_harness: Harness,
                                                                          command: str) -> None:
    """Only Chunk, Update, Complete, Keepalive and ShutdownRequest reach a logged-in
    master; anything else is a protocol error that closes only that link."""
    from test_amp_support import box, raw_login

    h = amp_harness
    victim, target, _ = await victim_running(h)
    reg = await h.register("rogue", "pw-rogue")
    peer = await raw_login(h.reactor, reg.getPort(), "rogue", "pw-rogue")
    peer.send(box(_command=command, _ask="7"))
    answer = await peer.wait_answer("7", h.reactor)
    assert answer[b"_error_code"] == b"ProtocolError", answer
    await within(peer.closed, h.reactor, what="the master to close the rogue link")
    await victim_finishes_untouched(h, victim, target)
