"""The protocol-neutral send window (workerwire.flow): updates merged per turn,
the byte window, ordering, losses.  Backends' use of it is covered by the
conformance suite (a slow master slows the worker) and tests/test_amp_flow.py."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from workerwire.errors import ConnectionLost, ProtocolError
from workerwire.flow import ReceiveWindow, SendWindow, approx_size


class Wire:
    """Records the messages the window sends; the test answers them."""

    def __init__(self) -> None:
        self.messages: list[list[Any]] = []
        self.answers: list[Deferred[Any]] = []

    def send_many(self, payloads: list[Any]) -> Deferred[Any]:
        self.messages.append(list(payloads))
        d: Deferred[Any] = Deferred()
        self.answers.append(d)
        return d

    def send_one(self) -> Deferred[Any]:
        return self.send_many(["ordered"])

    def answer(self, result: Any = None) -> None:
        d = self.answers.pop(0)
        d.errback(result) if isinstance(result, Failure) else d.callback(result)


def test_updates_of_one_turn_leave_as_one_message() -> None:
    clock, wire = Clock(), Wire()
    w = SendWindow(1000, clock=clock, batch_limit=100)
    fired = [w.send_mergeable("c1", 30, i, wire.send_many) for i in range(5)]
    assert all(d.called for d in fired), "queued with room: the producer goes on at once"
    assert wire.messages == [], "nothing is sent in the producer's turn"
    clock.advance(0)
    assert wire.messages == [[0, 1, 2], [3, 4]], "merged in order, at most batch_limit bytes each"
    assert w.in_flight == 150 and w.in_flight_count == 5 and w.messages == 2
    wire.answer()
    wire.answer()
    assert w.in_flight == 0 and w.buffered == 0


def test_updates_of_different_keys_are_not_merged_and_keep_their_order() -> None:
    clock, wire = Clock(), Wire()
    w = SendWindow(1000, clock=clock)
    for key, payload in [("a", 1), ("a", 2), ("b", 3), ("a", 4)]:
        w.send_mergeable(key, 10, payload, wire.send_many)
    done = w.send_ordered(wire.send_one)
    assert wire.messages == [[1, 2], [3], [4], ["ordered"]], "an ordered message flushes what is queued first"
    for _ in range(3):
        wire.answer()
    assert not done.called
    wire.answer()
    assert done.called


def test_the_window_bounds_what_is_committed_and_sent() -> None:
    clock, wire = Clock(), Wire()
    w = SendWindow(100, clock=clock, batch_limit=1000)
    first = [w.send_mergeable("c", 40, i, wire.send_many) for i in range(3)]
    assert [d.called for d in first] == [True, True, False], "40, 80 fit; 120 does not"
    assert w.stalls == 1 and w.queued == 120
    clock.advance(0)
    assert wire.messages == [[0, 1]] and w.in_flight == 80 and w.queued == 40, "only what fits is sent"
    wire.answer()
    assert first[2].called and wire.messages[-1] == [2] and w.in_flight == 40
    assert w.peak_in_flight <= 100


def test_an_update_larger_than_the_window_goes_alone() -> None:
    clock, wire = Clock(), Wire()
    w = SendWindow(100, clock=clock)
    big = w.send_mergeable("c", 500, "big", wire.send_many)
    small = w.send_mergeable("c", 10, "small", wire.send_many)
    clock.advance(0)
    assert wire.messages == [["big"]] and not big.called and not small.called
    wire.answer()
    assert big.called and small.called and wire.messages[-1] == ["small"]


def test_a_producer_of_many_small_updates_neither_recurses_nor_spins() -> None:
    """A producer released by the window that queues again at once is served
    by a loop, not by recursion (thousands of updates per turn)."""
    clock, wire = Clock(), Wire()
    w = SendWindow(20_000, clock=clock, batch_limit=2_000)
    count = 50_000

    async def produce() -> None:
        for i in range(count):
            await w.send_mergeable("c", 2, i, wire.send_many)

    done = ensureDeferred(produce())
    while not done.called:
        clock.advance(0)
        while wire.answers:
            wire.answer()
    assert [p for m in wire.messages for p in m] == list(range(count))
    assert max(len(m) for m in wire.messages) == 1000 and w.peak_buffered <= 20_002


def test_a_refused_update_is_logged_once_the_producer_went_on() -> None:
    clock, wire = Clock(), Wire()
    logged: list[Failure] = []

    def translate(failure: Failure) -> Failure:
        logged.append(failure)
        return failure

    w = SendWindow(100, clock=clock, translate=translate)
    d = w.send_mergeable("c", 10, 1, wire.send_many)
    assert d.called
    clock.advance(0)
    wire.answer(Failure(ProtocolError("update for command 'c', which is not running")))
    assert len(logged) == 1 and w.in_flight == 0


def test_a_lost_link_fails_everything_waiting_and_later_sends() -> None:
    clock, wire = Clock(), Wire()
    w = SendWindow(100, clock=clock)
    sent = w.send_mergeable("c", 90, 1, wire.send_many)
    clock.advance(0)
    waiting = w.send_mergeable("c", 90, 2, wire.send_many)
    ordered = w.send_ordered(wire.send_one)
    w.lost("connection closed")
    assert sent.called and waiting.called and ordered.called
    for d in (waiting, ordered):
        assert isinstance(d.result, Failure) and d.result.check(ConnectionLost)
        d.addErrback(lambda f: None)
    late = w.send_mergeable("c", 1, 3, wire.send_many)
    assert isinstance(late.result, Failure) and late.result.check(ConnectionLost)
    late.addErrback(lambda f: None)
    clock.advance(0)
    assert len(wire.messages) == 1, "nothing is sent after the loss"


def test_sent_payloads_are_not_kept_while_waiting_for_the_answer() -> None:
    clock, wire = Clock(), Wire()
    w = SendWindow(1 << 20, clock=clock)

    class Payload:
        pass

    import weakref

    payload = Payload()
    ref = weakref.ref(payload)
    w.send_mergeable("c", 10, payload, lambda payloads: Deferred())
    del payload
    clock.advance(0)
    assert ref() is None, "the window keeps only the size of what it sent"


@pytest.mark.parametrize("value, size", [
    ("x" * 100, 105), (b"", 5), (None, 9), ([["stdout", "ab"]], 5 + 5 + 11 + 7), ({"k": 1}, 5 + 6 + 9),
])
def test_approx_size(value: Any, size: int) -> None:
    assert approx_size(value) == size


def test_a_refusal_after_the_update_fired_fails_the_next_update_and_the_completion() -> None:
    clock, wire = Clock(), Wire()
    w = SendWindow(1000, clock=clock)
    first = w.send_mergeable("c1", 10, "too big for the master", wire.send_many)
    assert first.called, "room in the window: the producer went on at once"
    clock.advance(0)
    wire.answer(Failure(ProtocolError("update of 70 MiB exceeds max_message_size")))
    other = w.send_mergeable("c2", 10, "another command", wire.send_many)
    refused: list[Failure] = []
    w.send_mergeable("c1", 10, "next", wire.send_many).addErrback(refused.append)
    assert [f.getErrorMessage() for f in refused] == ["update of 70 MiB exceeds max_message_size"]
    assert other.called and not isinstance(other.result, Failure), "another command is not affected"
    clock.advance(0)
    wire.answer()
    # The refusal is told once; a second late refusal is told by the completion,
    # which is still sent (the master must see the command end).
    w.send_mergeable("c1", 10, "last", wire.send_many)
    clock.advance(0)
    wire.answer(Failure(ProtocolError("refused again")))
    done = w.send_ordered(wire.send_one, key="c1")
    assert wire.messages[-1] == ["ordered"], "the completion is sent"
    assert not done.called
    wire.answer()
    done.addErrback(refused.append)
    assert [f.getErrorMessage() for f in refused][-1] == "refused again"


def test_the_receive_window_counts_held_updates_and_refuses_an_overrun() -> None:
    """The master's end (amp and msgpack use it): an update counts until its
    consumer's Deferred fired; one past the limit while others are held is a
    protocol error; alone, an update of any size is admitted."""
    window = ReceiveWindow(100, window=80)
    window.admit(500)  # nothing held: one update larger than the window goes alone
    assert window.hold(500, None) is None and window.unacked == 0
    slow: Deferred[str] = Deferred()
    held = window.hold(60, slow)
    assert held is slow and window.unacked == 60
    window.admit(40)
    with pytest.raises(ProtocolError, match="161 bytes of updates unacknowledged, window 80"):
        window.admit(101)
    results: list[str] = []
    held.addCallback(results.append)
    slow.callback("ack")
    assert results == ["ack"] and window.unacked == 0
    window.admit(101)
