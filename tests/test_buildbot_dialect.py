"""What pb and msgpack share of Buildbot's worker dialect, now in core
(:mod:`workerwire.buildbot_dialect`), and the Twisted failures core maps for
every backend (:func:`workerwire.errors.translate_native`) that pb mapped alone
before (issue 13)."""

from __future__ import annotations

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import error as net_error
from twisted.python.failure import Failure

from workerwire.buildbot_dialect import builder_of, worker_info
from workerwire.errors import ConnectionLost, LoginRefused, ProtocolError, UnknownBuilder, translate_native


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
