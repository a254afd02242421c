"""Plumbing core took over from pb and msgpack (issue 13), each test pinning
what core now promises every backend: the rules of Buildbot's worker dialect
(:mod:`workerwire.buildbot_dialect`); Twisted failures mapped by
:func:`workerwire.errors.translate_native`; a network connector's address
parsed when it is made (``dials_address``); ``WorkerLink``'s ``settled``,
``drop`` and ``carried`` handles; ``BaseConnection.on_windowed_update``; and
``HandleTable.of_command`` for a dialect that names the command, not the
handle."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import error as net_error
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from workerwire import load_backend
from workerwire.base_connection import BaseConnection
from workerwire.base_worker import BaseCommandChannel, BaseWorkerConnector
from workerwire.buildbot_dialect import builder_of, worker_info
from workerwire.errors import (
    AddressError,
    ConnectionLost,
    LoginRefused,
    ProtocolError,
    UnknownBuilder,
    translate_native,
)
from workerwire.flow import ReceiveWindow
from workerwire.transfer import FileWriter, HandleTable
from workerwire.worker_link import WorkerLink


def test_worker_info_is_a_map_or_a_protocol_error_naming_what_came() -> None:
    info = {"version": "4.3.0", "basedir": "/w"}
    assert worker_info(info) is info
    for bad, name in (([1, 2], "list"), ("x", "str"), (None, "NoneType")):
        with pytest.raises(ProtocolError, match=f"getWorkerInfo must answer a dict, not a {name}"):
            worker_info(bad)


def test_builder_of_gives_what_the_builder_list_gave_or_names_the_valid_builders() -> None:
    builders = {"b2": "ref-2", "b1": "ref-1"}
    assert builder_of(builders, "b1", "w1") == "ref-1"
    with pytest.raises(UnknownBuilder, match=r"^no builder 'nope' on worker 'w1'; valid: b1, b2$"):
        builder_of(builders, "nope", "w1")
    with pytest.raises(UnknownBuilder, match=r"on this worker; valid: none \(call remoteSetBuilderList\)$"):
        builder_of({}, "b1")


def test_a_refused_login_and_a_failed_dial_map_to_core_errors_for_every_backend() -> None:
    refused = translate_native(Failure(UnauthorizedLogin("bad password")))
    assert refused.check(LoginRefused) and str(refused.value) == "bad password"
    lost = translate_native(Failure(net_error.ConnectionRefusedError()))
    assert lost.check(ConnectionLost) and str(lost.value).startswith("connection lost: Connection was refused")


class _Dialler(BaseWorkerConnector):
    backendName = "acme"
    dials_address = True

    def connect_once(self) -> Any:
        raise NotImplementedError("never dialled here")


def test_core_parses_a_network_connectors_address_when_it_is_made() -> None:
    bot: Any = object()  # never called: nothing is dialled here
    made = _Dialler(bot, "tcp:host=127.0.0.1:port=9", "w1", "pw", reactor=reactor)
    assert IStreamClientEndpoint.providedBy(made.endpoint)
    with pytest.raises(AddressError, match="no-such-endpoint-kind"):
        _Dialler(bot, "no-such-endpoint-kind:1", "w1", "pw", reactor=reactor)
    for name in ("pb", "msgpack"):
        with pytest.raises(AddressError, match="no-such-endpoint-kind"):
            load_backend(name).create_connector(bot, "no-such-endpoint-kind:1", "w1", "pw", reactor=reactor)


class _Link(WorkerLink):
    """A link without a wire; ``drop`` is core's (its ``close``)."""

    closed: list[bool]

    def build_factory(self) -> Any: ...
    def connected(self, protocol: Any) -> None: ...
    def keepalive(self) -> Any: ...
    def request_shutdown(self) -> Any: ...

    def close(self, abort: bool = False) -> None:
        self.closed = [*getattr(self, "closed", []), abort]


def test_a_worker_links_drop_closes_its_connection() -> None:
    link = _Link(_Dialler(object(), "tcp:host=127.0.0.1:port=9", "w1", "pw", reactor=Clock()))
    link.drop(abort=True)
    link.drop(abort=False)
    assert link.closed == [True, False]


def test_a_worker_links_settled_call_drops_the_result_and_translates_the_failure() -> None:
    connector = _Dialler(object(), "tcp:host=127.0.0.1:port=9", "w1", "pw", reactor=Clock())
    link = _Link(connector, translate=lambda failure: Failure(ConnectionLost(f"translated {failure.value}")))
    results: list[Any] = []
    link.settled(succeed("answer")).addCallback(results.append)
    assert results == [None]
    link.settled(fail(ValueError("native"))).addErrback(results.append)
    assert results[1].check(ConnectionLost) and str(results[1].value) == "translated native"
    untranslated = _Link(connector)
    untranslated.settled(fail(ProtocolError("core already"))).addErrback(results.append)
    assert results[2].check(ProtocolError)


class _Receiving:
    """What ``BaseConnection.on_windowed_update`` uses of a connection: its
    ``receive_window`` and ``on_update`` (the command's consumer's answer)."""

    on_windowed_update = BaseConnection.on_windowed_update

    def __init__(self) -> None:
        self.receive_window = ReceiveWindow(100)
        self.answer: Any = None
        self.delivered: list[Any] = []

    def on_update(self, commandId: str, updates: list[Any]) -> Any:
        self.delivered.append((commandId, updates))
        return self.answer


def test_a_windowed_update_is_admitted_delivered_and_counted_until_its_consumer_answers() -> None:
    conn = _Receiving()
    assert conn.on_windowed_update("c1", [("stdout", "a")], 60) is None  # answered at once: nothing held
    assert conn.receive_window.unacked == 0
    conn.answer = slow = Deferred()
    held = conn.on_windowed_update("c1", [("stdout", "b")], 60)
    assert isinstance(held, Deferred) and conn.receive_window.unacked == 60
    with pytest.raises(ProtocolError, match="exceeded the flow-control window"):
        conn.on_windowed_update("c1", [("stdout", "c")], 41)
    assert [u for _, u in conn.delivered] == [[("stdout", "a")], [("stdout", "b")]]
    results: list[Any] = []
    held.addCallback(results.append)
    slow.callback("the consumer's own result")
    assert results == [None] and conn.receive_window.unacked == 0


class _Channel(BaseCommandChannel):
    def send_update(self, updates: list[Any]) -> Any: ...
    def send_complete(self, failure: BaseException | None) -> Any: ...


def test_a_commands_carried_handles_go_with_its_channel() -> None:
    link = _Link(_Dialler(object(), "tcp:host=127.0.0.1:port=9", "w1", "pw", reactor=Clock()))
    writer, reader = object(), object()
    proxy = link.carried.proxy("c1", "writer", writer)
    other = link.carried.proxy("c2", "reader", reader)
    c1 = _Channel("b1", "c1")
    link.add_channel(c1)
    assert link.carried.carrier("c1", proxy.handle_id) is writer
    link.forget_channel(c1)  # completed, or refused by the bot
    with pytest.raises(ProtocolError, match=f"no transfer handle {proxy.handle_id} for command 'c1'"):
        link.carried.carrier("c1", proxy.handle_id)
    assert link.carried.carrier("c2", other.handle_id) is reader


class _Sink(FileWriter):
    def write(self, data: bytes) -> None: ...
    def utime(self, times: tuple[float, float]) -> None: ...
    def unpack(self) -> None: ...
    def close(self) -> None: ...
    def cancel(self) -> None: ...


def test_the_handle_table_finds_a_commands_handle_by_kind_until_the_command_ends() -> None:
    # Buildbot's msgpack dialect names the command in its transfer messages, not the handle.
    table = HandleTable(1024)
    ids = table.register("c1", {"writer": _Sink()})
    assert table.of_command("c1", "writer") == ids["writer"][0]
    assert table.of_command("c1", "reader") is None and table.of_command("c2", "writer") is None
    table.release_command("c1")
    assert table.of_command("c1", "writer") is None
