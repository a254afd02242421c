"""amqp's answers to requests (``workerwire_amqp.wire.settle``) against core's
request table: what a malformed answer does to the request it answers."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.python.failure import Failure

from workerwire.errors import ConnectionLost, ProtocolError, RemoteCallFailed
from workerwire.pending import PendingRequests
from workerwire_amqp import wire


def test_an_answer_fires_its_request_with_the_value_or_the_error() -> None:
    requests: PendingRequests[str] = PendingRequests(str, first=1)
    ok, failed = requests.wait(requests.new_tag()), requests.wait(requests.new_tag())
    results: list[Any] = []
    ok.addCallback(results.append)
    failed.addErrback(results.append)
    wire.settle(requests, "1", [True, {"v": 1}], "answer")
    wire.settle(requests, "2", [False, ["ValueError", "no"]], "answer")
    assert results[0] == {"v": 1}
    assert isinstance(results[1], Failure) and results[1].check(RemoteCallFailed)
    with pytest.raises(ProtocolError, match="answer '1', which is not waiting"):
        wire.settle(requests, "1", [True, None], "answer")


def test_a_malformed_answer_fails_its_request_instead_of_leaving_it_waiting() -> None:
    # Before: settle took the request out of the table, then decode_result raised;
    # the link closed on the protocol error, but the lost link's fail_all no
    # longer found that request: the caller's Deferred never fired.
    requests: PendingRequests[str] = PendingRequests(str, first=1)
    d = requests.wait(requests.new_tag())
    outcome: list[Failure] = []
    d.addErrback(outcome.append)
    with pytest.raises(ProtocolError, match=r"a result must be \[ok, value\]"):
        wire.settle(requests, "1", "not a result", "answer")
    requests.fail_all(ConnectionLost("the link closed on the protocol error"))
    assert len(outcome) == 1 and outcome[0].check(ProtocolError), "the request is answered by its error"
