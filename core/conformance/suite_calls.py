"""Every Connection call, its result shape, and error translation."""

from __future__ import annotations

import os

import pytest
from pytest_twisted import ensureDeferred as async_test

from ..errors import (
    BuilderBusy,
    DuplicateCommandId,
    RemoteCallFailed,
    UnknownBuilder,
    UnknownCommand,
    UnsupportedValue,
)
from .harness import Harness, RecordingCommand, within

__all__ = ["CallTests"]

REQUIRED_INFO = {
    "version": str, "worker_commands": dict, "basedir": str, "system": str, "host": str,
    "admin": str, "environ": dict, "numcpus": int,
}


class CallTests:
    @async_test
    async def test_remote_print(self, harness: Harness) -> None:
        w = await harness.start_worker()
        assert await w.conn.remotePrint("hello 😀 from the master") is None
        assert w.bot.prints == ["hello 😀 from the master"]

    @async_test
    async def test_remote_get_worker_info_shape(self, harness: Harness) -> None:
        w = await harness.start_worker()
        info = await w.conn.remoteGetWorkerInfo()
        assert isinstance(info, dict)
        for key, kind in REQUIRED_INFO.items():
            assert isinstance(info.get(key), kind), f"info[{key!r}] should be a {kind.__name__}: {info.get(key)!r}"
        assert "access_uri" in info
        assert info["worker_commands"]["stream"] == "1.0"
        assert info["environ"]["WORKERWIRE"] == "1"

    @async_test
    async def test_set_builder_list_replaces_the_set(self, harness: Harness) -> None:
        w = await harness.start_worker(builders=[])
        assert sorted(await w.conn.remoteSetBuilderList([("a", "dir-a"), ("b", "dir-b")])) == ["a", "b"]
        assert os.path.isdir(os.path.join(w.bot.basedir, "dir-a"))
        assert sorted(await w.conn.remoteSetBuilderList([("b", "dir-b"), ("c", "dir-c")])) == ["b", "c"]
        assert sorted(w.bot.builders) == ["b", "c"]
        with pytest.raises(UnknownBuilder):
            await w.conn.remoteStartBuild("a")
        assert await w.conn.remoteSetBuilderList([]) == []

    @async_test
    async def test_set_builder_list_refuses_what_is_not_a_str(self, harness: Harness) -> None:
        w = await harness.start_worker(builders=["b1"])
        for bad in ([(None, "dir")], [("a", None)], [("a", 3)], [("a",)]):
            with pytest.raises(TypeError, match="builders"):
                await w.conn.remoteSetBuilderList(bad)  # type: ignore[arg-type]
        assert sorted(w.bot.builders) == ["b1"], "a refused list reaches no worker"
        assert "None" not in os.listdir(w.bot.basedir)

    @async_test
    async def test_start_build(self, harness: Harness) -> None:
        w = await harness.start_worker()
        assert await w.conn.remoteStartBuild("b1") is None
        assert w.bot.builds_started == ["b1"]

    @async_test
    async def test_start_build_unknown_builder(self, harness: Harness) -> None:
        w = await harness.start_worker()
        with pytest.raises(UnknownBuilder) as err:
            await w.conn.remoteStartBuild("no-such-builder")
        assert "no-such-builder" in str(err.value)

    @async_test
    async def test_start_command_fires_on_acceptance_not_completion(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = RecordingCommand()
        await w.conn.remoteStartCommand(rc, "b1", "c1", "wait", {})
        await within(rc.whenUpdated(lambda: len(rc.updates) >= 1), harness.reactor, what="the first update")
        assert rc.completions == []
        await w.conn.remoteInterruptCommand("b1", "c1", "test over")
        await within(rc.done, harness.reactor, what="completion")

    @async_test
    async def test_unknown_command_fails_the_start(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = RecordingCommand()
        with pytest.raises(UnknownCommand) as err:
            await w.conn.remoteStartCommand(rc, "b1", "c1", "no-such-command", {})
        assert "no-such-command" in str(err.value)
        await w.conn.remotePrint("a round trip after the refusal")
        assert rc.completions == [] and rc.updates == []
        # The builder is free again.
        ok = await harness.run(w, "emit", {"updates": [["rc", 0]]})
        assert ok.completions == [None]

    @async_test
    async def test_unknown_builder_fails_the_start(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = RecordingCommand()
        with pytest.raises(UnknownBuilder):
            await w.conn.remoteStartCommand(rc, "ghost", "c1", "emit", {})
        await w.conn.remotePrint("a round trip after the refusal")
        assert rc.completions == []

    @async_test
    async def test_one_command_per_builder(self, harness: Harness) -> None:
        w = await harness.start_worker(builders=["b1", "b2"])
        first = RecordingCommand()
        await w.conn.remoteStartCommand(first, "b1", "c1", "wait", {})
        with pytest.raises(BuilderBusy) as err:
            await w.conn.remoteStartCommand(RecordingCommand(), "b1", "c2", "emit", {})
        assert "b1" in str(err.value)
        with pytest.raises(DuplicateCommandId):
            await w.conn.remoteStartCommand(RecordingCommand(), "b2", "c1", "emit", {})
        other = await harness.run(w, "emit", {"updates": [["rc", 0]]}, builder="b2")
        assert other.completions == [None]
        await w.conn.remoteInterruptCommand("b1", "c1", "make room")
        await within(first.done, harness.reactor, what="the first command to end")
        again = await harness.run(w, "emit", {"updates": [["rc", 0]]}, builder="b1")
        assert again.completions == [None]

    @async_test
    async def test_worker_error_becomes_remote_call_failed(self, harness: Harness) -> None:
        w = await harness.start_worker()
        with pytest.raises(RemoteCallFailed) as err:
            await w.conn.remotePrint("raise:ValueError:the worker says no")
        assert err.value.type_name == "ValueError"
        assert err.value.remote_message == "the worker says no"
        assert err.value.remote_traceback is None, "tracebacks are not sent unless asked for"
        assert await w.conn.remotePrint("still fine") is None

    @async_test
    async def test_failed_command_completes_with_remote_call_failed(self, harness: Harness) -> None:
        w = await harness.start_worker()
        rc = await harness.run(w, "fail", {"message": "it broke ✗"})
        assert len(rc.completions) == 1
        failure = rc.completions[0]
        assert failure is not None and failure.check(RemoteCallFailed)
        error = failure.value
        assert isinstance(error, RemoteCallFailed)
        assert error.type_name == "ValueError" and error.remote_message == "it broke ✗"

    @async_test
    async def test_unsupported_values_are_refused_before_sending(self, harness: Harness) -> None:
        w = await harness.start_worker()
        for bad in ({"x": {1, 2}}, {"x": 2**70}, {"x": {1: "int key"}}, {"x": object()}, {"x": "\ud800"}):
            with pytest.raises(UnsupportedValue):
                await w.conn.remoteStartCommand(RecordingCommand(), "b1", "cx", "echo", bad)
        ok = await harness.run(w, "echo", {"fine": True})
        assert ok.values("echo") == [{"fine": True}]

    @async_test
    async def test_every_value_kind_round_trips(self, harness: Harness) -> None:
        w = await harness.start_worker()
        args = {
            "none": None, "true": True, "false": False, "zero": 0, "min": -(2**63), "max": 2**64 - 1,
            "float": 1.5, "neg": -0.25, "big": 1e300, "empty": "", "text": "ünïcødé 😀 𝄞 \x00 end",
            "bytes": bytes(range(256)), "list": [1, "two", [3.0, None]], "tuple": (1, 2),
            "dict": {"nested": {"deeper": {"deepest": ["x"]}}}, "emptylist": [], "emptydict": {},
        }
        rc = await harness.run(w, "echo", args)
        (echoed,) = rc.values("echo")
        expected = dict(args, tuple=[1, 2])
        assert echoed == expected
        assert type(echoed["true"]) is bool and type(echoed["zero"]) is int and type(echoed["float"]) is float
        assert type(echoed["bytes"]) is bytes and type(echoed["text"]) is str

    @async_test
    async def test_interrupt_of_unknown_or_finished_command_is_not_an_error(self, harness: Harness) -> None:
        w = await harness.start_worker()
        assert await w.conn.remoteInterruptCommand("b1", "never-started", "race") is None
        rc = await harness.run(w, "emit", {"updates": [["rc", 0]]}, commandId="done-1")
        assert rc.completions == [None]
        assert await w.conn.remoteInterruptCommand("b1", "done-1", "too late") is None
