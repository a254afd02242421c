"""The amqp master's login queue (``workerwire_amqp.login_queue``): what it
takes before anyone logged in is held to the pre-login rules.

These drive :class:`LoginQueue` with core's real :class:`LoginGuard` on a
``Clock`` (no broker: the queue's consumer hands it each AMQP message as
it came; the conformance suite's pre-login tests run the same paths through
a real broker and master).  What they pin down: whole requests pass on
untouched; anything else is refused to its reply queue with a logged
reason; requests in parts are bounded in size, time and number, where the
login queue used to join parts for any number of reply queues, up to
``max_message_size`` each, for ever.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from pytest_twisted import ensureDeferred as async_test
from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from workerwire import load_backend
from workerwire.backend import LinkOptions
from workerwire.conformance import Harness, within
from workerwire.errors import ProtocolError
from workerwire.login_guard import MAX_LOGIN_INPUT, LoginGuard
from workerwire_amqp import wire
from workerwire_amqp.broker import Message
from workerwire_amqp.login_queue import LoginQueue

REACTOR: Any = _reactor
LOGIN = msgpack.packb({"name": "w1", "password": "pw", "peer": "127.0.0.1:5", "version": 1})


class _Queue:
    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.guard = LoginGuard(LinkOptions(**options), self.clock, "amqp")
        self.requests: list[Message] = []
        self.refusals: list[tuple[str, str | None, Exception]] = []
        self.queue = LoginQueue(self.guard, self.requests.append,
                                lambda *refusal: self.refusals.append(refusal), "amqp master m of pool p")
        self.lines: list[str] = []

    def __enter__(self) -> "_Queue":
        globalLogPublisher.addObserver(self._observe)
        return self

    def __exit__(self, *exc: Any) -> None:
        globalLogPublisher.removeObserver(self._observe)

    def _observe(self, event: dict[str, Any]) -> None:
        if event.get("log_kind") == "amqp bad login request":
            from twisted.logger import formatEvent

            self.lines.append(formatEvent(event))

    def take(self, body: bytes, reply_to: str | None = "q1", kind: str = wire.LOGIN, more: bool = False) -> None:
        self.queue.take(Message(kind, reply_to, "c-" + str(reply_to), body, more))

    def refused_to(self, reply_to: str) -> str:
        [(to, cid, error)] = [r for r in self.refusals if r[0] == reply_to]
        assert isinstance(error, ProtocolError) and cid == f"c-{reply_to}"
        return str(error)


def test_a_whole_login_request_passes_on_untouched() -> None:
    with _Queue() as q:
        q.take(LOGIN)
    [msg] = q.requests
    assert msg.body == LOGIN and msg.reply_to == "q1" and not q.refusals and not q.lines
    assert q.guard.unauthenticated == 0


def test_another_kind_in_the_login_queue_is_refused_with_a_logged_reason() -> None:
    with _Queue() as q:
        q.take(msgpack.packb(["c1", [["stdout", "x"]]]), kind=wire.UPDATE)
    assert not q.requests
    assert "'update' message in the login queue" in q.refused_to("q1")
    assert len(q.lines) == 1 and "q1" in q.lines[0] and "update" in q.lines[0]


def test_a_whole_request_over_the_limit_is_refused() -> None:
    with _Queue() as q:
        q.take(b"\x84" + b"x" * MAX_LOGIN_INPUT)
    assert not q.requests
    assert f"{MAX_LOGIN_INPUT}-byte limit" in q.refused_to("q1") and len(q.lines) == 1


def test_a_message_without_a_reply_queue_is_logged_and_dropped() -> None:
    with _Queue() as q:
        q.take(LOGIN, reply_to=None)
    assert not q.requests and not q.refusals and len(q.lines) == 1


def test_a_request_in_parts_is_joined_under_a_ticket_of_the_guard() -> None:
    with _Queue() as q:
        q.take(LOGIN[:5], more=True)
        assert q.guard.unauthenticated == 1 and q.queue.in_parts == 1
        q.take(LOGIN[5:], more=False)
    [msg] = q.requests
    assert msg.body == LOGIN and msg.correlation_id == "c-q1" and not q.refusals
    assert q.guard.unauthenticated == 0 and q.queue.in_parts == 0


def test_parts_past_the_limit_are_refused_before_the_last_one() -> None:
    with _Queue() as q:
        q.take(b"\x84" + b"x" * (MAX_LOGIN_INPUT // 2), more=True)
        q.take(b"x" * (MAX_LOGIN_INPUT // 2 + 16), more=True)
    assert not q.requests and "limit" in q.refused_to("q1")
    assert q.queue.in_parts == 0 and q.guard.unauthenticated == 0


def test_a_request_in_parts_that_never_ends_is_refused_after_the_login_timeout() -> None:
    with _Queue(login_timeout=5.0) as q:
        q.take(b"\x84", more=True)
        q.clock.advance(4.9)
        assert not q.refusals and q.queue.in_parts == 1
        q.clock.advance(0.2)
    assert "without its last part within 5 s" in q.refused_to("q1")
    assert q.queue.in_parts == 0 and q.guard.unauthenticated == 0 and q.guard.stats["timed_out"] == 1


def test_requests_in_parts_are_capped_by_the_guard_as_one_host() -> None:
    with _Queue(max_unauthenticated=256, max_unauthenticated_per_host=4) as q:
        for n in range(100):
            q.take(b"\x84" + b"x" * 1000, reply_to=f"q{n}", more=True)
        q.take(LOGIN, reply_to="worker")
    assert q.queue.in_parts == 4, "the master held requests in parts beyond the guard's cap"
    assert len(q.refusals) == 96 and all(isinstance(e, ProtocolError) for _, _, e in q.refusals)
    assert [m.reply_to for m in q.requests] == ["worker"], "a whole login must pass while the cap is reached"
    q.queue.close()
    assert q.queue.in_parts == 0 and q.guard.unauthenticated == 0


def test_another_kind_from_a_reply_queue_with_a_request_under_way_ends_it() -> None:
    with _Queue() as q:
        q.take(b"\x84", more=True)
        q.take(msgpack.packb(["c1", None]), kind=wire.COMPLETE)
    assert not q.requests and "'complete' message" in q.refused_to("q1")
    assert q.queue.in_parts == 0 and q.guard.unauthenticated == 0


# -- through a real broker and master ---------------------------------------------


@pytest.fixture
def harness(amqp_broker_url: str, tmp_path: Any) -> Any:
    import pytest_twisted
    from twisted.internet.defer import ensureDeferred

    h = Harness(load_backend("amqp"), LinkOptions(keepalive_interval=None), REACTOR, str(tmp_path))
    yield h
    pytest_twisted.blockon(ensureDeferred(h.close()))


@async_test
async def test_a_login_request_in_parts_through_the_broker_logs_in(harness: Harness) -> None:
    """The conformance suite's raw client before the login starts a request in
    parts; its ``login`` kind ends it, and the master serves it as any login
    (this pins the hook's ``login`` down, which the suite only uses after the login)."""
    reg = await harness.register("w1", "pw")
    raw = await within(harness.backend.raw_connect(reg.getAddress(), REACTOR), REACTOR, what="a raw amqp client")
    try:
        raw.write(raw.login("w1", "pw"))
        conn = await within(harness.master.whenConnection("w1"), REACTOR, what="the login in parts to be served")
        assert conn.isConnected and not raw.closed.called
        assert harness.listener.login_guard.unauthenticated == 0
    finally:
        raw.link.close()


@async_test
async def test_a_wrong_password_in_parts_is_refused_as_any_wrong_password(harness: Harness) -> None:
    reg = await harness.register("w1", "pw")
    raw = await within(harness.backend.raw_connect(reg.getAddress(), REACTOR), REACTOR, what="a raw amqp client")
    raw.write(raw.login("w1", "hunter2-not-it"))
    await within(raw.closed, REACTOR, what="the refusal")
    assert b"LoginRefused" in raw.tail and b"hunter2" not in raw.tail
    assert harness.master.offers == [] and harness.listener.login_guard.stats["refused"] == 1
