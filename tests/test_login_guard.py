"""workerwire.login_guard on a fake clock: caps, the login timer, the input
limit, growing and capped refusal delays per host, throttling, bounded
memory of hosts, and logs that stay short whatever the flood."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from workerwire import LinkOptions
from workerwire import login_guard as lg
from workerwire.login_guard import LoginGuard, RateLimitedLog, host_key


def addr(host: str, port: int = 40000) -> Any:
    return IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)


class Closer:
    def __init__(self) -> None:
        self.closed = 0

    def __call__(self) -> None:
        self.closed += 1


@pytest.fixture
def events() -> Any:
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def make(**options: Any) -> tuple[LoginGuard, Clock]:
    clock = Clock()
    return LoginGuard(LinkOptions(**options), clock, "test"), clock


def test_host_keys() -> None:
    assert host_key(addr("10.1.2.3")) == "10.1.2.3"
    assert host_key(addr("2001:db8:1:2:aaaa::1")) == host_key(addr("2001:db8:1:2:bbbb::9")) == "2001:db8:1:2::/64"
    assert host_key(addr("2001:db8:1:3::1")) != host_key(addr("2001:db8:1:2::1"))
    assert host_key(addr("::ffff:10.1.2.3")) == "10.1.2.3"
    assert host_key(UNIXAddress(b"/tmp/sock")) == "local"


def test_options_are_validated() -> None:
    for bad in ({"max_unauthenticated": 0}, {"max_unauthenticated_per_host": 0}, {"failed_login_grace": -1},
                {"failed_login_delay": 0}, {"failed_login_delay": 2, "failed_login_max_delay": 1}):
        with pytest.raises(ValueError):
            LinkOptions(**bad)


def test_the_listener_cap_and_the_host_cap_close_new_connections_and_log_once_per_burst(events: Any) -> None:
    guard, clock = make(max_unauthenticated=10, max_unauthenticated_per_host=4)
    tickets = [guard.admit(addr("10.0.0.1"), Closer()) for _ in range(6)]
    assert [t is not None for t in tickets] == [True] * 4 + [False] * 2  # the host's cap
    others = [guard.admit(addr(f"10.0.1.{i}"), Closer()) for i in range(20)]
    assert sum(t is not None for t in others) == 6  # the listener's cap: 10 in all
    assert guard.unauthenticated == 10 and guard.stats["closed_at_cap"] == 16
    cap_lines = [e for e in events if e.get("cap_reached") is True]
    assert len(cap_lines) == 2, [formatEvent(e) for e in cap_lines]  # one per burst: the host's, the listener's
    # Draining below three quarters of the caps ends both bursts (one line each).
    for t in [*tickets[:4], *others][:5]:
        assert t is not None
        t.done()
    ended = [formatEvent(e) for e in events if e.get("cap_reached") is False]
    assert len(ended) == 2 and any("for 10.0.0.1" in line for line in ended), ended
    assert guard.admit(addr("10.0.0.1"), Closer()) is not None


def test_the_login_timer_closes_and_done_cancels_it(events: Any) -> None:
    guard, clock = make(login_timeout=5)
    slow, quick = Closer(), Closer()
    t1 = guard.admit(addr("10.0.0.1"), slow)
    t2 = guard.admit(addr("10.0.0.1"), quick)
    assert t1 is not None and t2 is not None
    t2.verified()
    assert guard.unauthenticated == 1  # verified is no longer unauthenticated...
    clock.advance(5)
    assert slow.closed == 1 and quick.closed == 1  # ...but the login must still finish in time
    t3 = guard.admit(addr("10.0.0.1"), Closer())
    assert t3 is not None
    t3.done()
    clock.advance(10)
    assert guard.unauthenticated == 0 and not clock.getDelayedCalls()
    assert len([e for e in events if e.get("login_timeout")]) == 2


def test_input_before_the_login_is_limited() -> None:
    guard, _ = make()
    t = guard.admit(addr("10.0.0.1"), Closer())
    assert t is not None
    assert t.take(lg.MAX_LOGIN_INPUT)
    assert not t.take(1)
    t2 = guard.admit(addr("10.0.0.1"), Closer())
    assert t2 is not None
    t2.verified()
    assert t2.take(10 * lg.MAX_LOGIN_INPUT)


def test_refusals_are_delayed_growing_and_capped_per_host(events: Any) -> None:
    guard, clock = make(failed_login_grace=2, failed_login_delay=1.0, failed_login_max_delay=8.0)
    assert [guard.delay_for(n) for n in range(1, 9)] == [0, 0, 1, 2, 4, 8, 8, 8]
    answered: list[int] = []
    for i in range(6):
        t = guard.admit(addr("10.0.0.1"), Closer())
        assert t is not None and t.may_check()
        t.refused(b"w1", "wrong password for worker 'w1'").addCallback(lambda _, i=i: answered.append(i))
    assert answered == [0, 1]
    clock.advance(1)
    assert answered == [0, 1, 2]
    clock.advance(7)
    assert answered == [0, 1, 2, 3, 4, 5]
    # Another host is not slowed down by this one's failures.
    other = guard.admit(addr("10.0.0.2"), Closer())
    assert other is not None
    assert other.refused("w1", "unknown worker 'w1'").called
    assert guard.failures_of("10.0.0.1") == 6 and guard.failures_of("10.0.0.2") == 1
    text = " ".join(formatEvent(e) for e in events if e.get("login_refused"))
    assert "wrong password for worker 'w1'" in text and "answered in 8 s" in text


def test_a_host_with_many_waiting_refusals_is_refused_without_checking() -> None:
    guard, clock = make(failed_login_grace=0, failed_login_delay=10.0, failed_login_max_delay=10.0,
                        max_unauthenticated_per_host=64)
    held = []
    for _ in range(lg.HELD_PER_HOST):
        t = guard.admit(addr("10.0.0.1"), Closer())
        assert t is not None and t.may_check()
        held.append(t.refused("w", "wrong password"))
    t = guard.admit(addr("10.0.0.1"), Closer())
    assert t is not None and not t.may_check()
    t.throttled("w")
    assert guard.stats["throttled"] == 1
    assert guard.admit(addr("10.0.0.2"), Closer()).may_check()  # type: ignore[union-attr]
    clock.advance(10)
    assert all(d.called for d in held) and t.may_check()


def test_a_lost_connection_releases_its_waiting_refusal() -> None:
    guard, clock = make(failed_login_grace=0)
    t = guard.admit(addr("10.0.0.1"), Closer())
    assert t is not None
    d = t.refused("w", "wrong password")
    assert not d.called
    t.done()
    assert d.called and not clock.getDelayedCalls()


def test_host_records_are_bounded_and_forgotten(monkeypatch: Any) -> None:
    monkeypatch.setattr(lg, "MAX_HOSTS", 50)
    guard, clock = make()
    for i in range(200):
        t = guard.admit(addr(f"10.0.{i // 250}.{i % 250}"), Closer())
        assert t is not None
        t.refused("w", "wrong password")
        t.done()
    assert len(guard._hosts) == 50
    assert guard.failures_of("10.0.0.199") == 1 and guard.failures_of("10.0.0.0") == 0
    clock.advance(lg.FORGET_AFTER + 1)
    assert guard.failures_of("10.0.0.199") == 0


def test_a_flood_of_log_lines_becomes_a_burst_and_one_summary(events: Any) -> None:
    clock = Clock()
    log = RateLimitedLog(clock, burst=5, window=60)
    for i in range(1000):
        log.emit("failed login", "warn", "login from {peer} refused", host=f"10.0.0.{i % 3}", peer=i)
    assert log.logged["failed login"] == 5 and log.suppressed["failed login"] == 995
    clock.advance(60)
    summaries = [formatEvent(e) for e in events if e.get("log_summary")]
    assert len(summaries) == 1 and "995 more 'failed login' lines" in summaries[0], summaries
    assert "10.0.0.0 (332)" in summaries[0]  # the first five were logged one by one
    log.emit("failed login", "warn", "again")
    assert log.logged["failed login"] == 7  # a new window
    assert not clock.getDelayedCalls()


def test_stop_closes_connections_still_logging_in() -> None:
    guard, clock = make()
    closers = [Closer() for _ in range(3)]
    tickets = [guard.admit(addr("10.0.0.1"), c) for c in closers]
    tickets[0].verified()  # type: ignore[union-attr]
    tickets[0].done()  # type: ignore[union-attr]
    guard.stop()
    assert [c.closed for c in closers] == [0, 1, 1]
    assert guard.unauthenticated == 0 and not clock.getDelayedCalls()
