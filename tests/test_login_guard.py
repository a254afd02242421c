"""workerwire.login_guard on a fake clock: caps, the login timer, the input
limit, growing and capped refusal delays per host, throttling, bounded
memory of hosts, and logs that stay short whatever the flood."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
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


# -- the waiting room (GuardedFactory) ----------------------------------------------
#
# On a fake clock with Twisted's StringTransport: the order in which waiting
# connections are served and when they time out are exact here; the same path
# over real sockets with real workers is in tests/test_hostile_clients.py.


class BackendProtocol(lg.Protocol):
    """What a backend's factory builds: takes a ticket like pb and amp do."""

    def __init__(self, ticket: Any, host: str) -> None:
        self.ticket = ticket
        self.host = host
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.ticket.done()


class BackendFactory(lg.Factory):
    def __init__(self, guard: LoginGuard) -> None:
        self.guard = guard
        self.built: list[BackendProtocol] = []
        self.stopped = False

    def buildProtocol(self, a: Any) -> Any:
        ticket = self.guard.admit(a, Closer())
        if ticket is None:
            return lg.CloseAtOnce()
        proto = BackendProtocol(ticket, a.host)
        self.built.append(proto)
        return proto

    def doStop(self) -> None:
        self.stopped = True


def connect(factory: Any, host: str) -> tuple[Any, StringTransport]:
    proto = factory.buildProtocol(addr(host))
    transport = StringTransport(peerAddress=addr(host))
    proto.makeConnection(transport)
    return proto, transport


def served_hosts(backend: BackendFactory) -> list[str]:
    return [p.host for p in backend.built]


def test_connections_over_a_cap_wait_unread_and_are_served_one_host_after_another(events: Any) -> None:
    guard, clock = make(max_unauthenticated=4, max_unauthenticated_per_host=2, max_waiting_logins=5)
    backend = BackendFactory(guard)
    factory = guard.guarded(backend)
    a1, _ = connect(factory, "10.0.0.1")
    a2, _ = connect(factory, "10.0.0.1")
    a3, t_a3 = connect(factory, "10.0.0.1")   # over 10.0.0.1's cap: waits, unread
    b1, _ = connect(factory, "10.0.0.2")
    b2, _ = connect(factory, "10.0.0.2")      # the listener's cap is reached
    c1, t_c1 = connect(factory, "10.0.0.3")
    a4, t_a4 = connect(factory, "10.0.0.1")
    d1, t_d1 = connect(factory, "10.0.0.4")
    e1, t_e1 = connect(factory, "10.0.0.5")   # 5 waiting: the room is full
    f1, t_f1 = connect(factory, "10.0.0.6")   # closed at once
    assert served_hosts(backend) == ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"]
    assert guard.waiting == 5 and guard.stats["waited"] == 5 and guard.stats["closed_at_cap"] == 1
    assert t_a3.producerState == "paused" and t_c1.producerState == "paused"
    assert isinstance(f1, lg.CloseAtOnce) and t_f1.disconnecting
    assert [e for e in events if e.get("log_kind") == "waiting room"]  # logged once when the wait began
    a3.dataReceived(b"early")  # read before the pause took effect: kept for the backend's protocol
    # A slot of 10.0.0.1 frees: served a turn later, the first in line (a3), then 10.0.0.1 goes last.
    a1.ticket.done()
    assert len(backend.built) == 4
    clock.advance(0)
    assert served_hosts(backend)[4:] == ["10.0.0.1"] and a3.inner is backend.built[4]
    assert backend.built[4].received == [b"early"] and t_a3.producerState == "producing"
    a3.dataReceived(b"more")
    assert backend.built[4].received == [b"early", b"more"]  # input now goes to the backend's protocol
    # A slot of 10.0.0.2 frees: the next host in turn is 10.0.0.3 (not 10.0.0.1 again).
    b1.ticket.done()
    clock.advance(0)
    assert served_hosts(backend)[5:] == ["10.0.0.3"]
    # The login timer of a served connection starts when it is served; the rest wait login_timeout at most.
    clock.advance(guard.options.login_timeout - 0.001)
    assert guard.waiting == 3 and not t_a4.disconnecting
    clock.advance(0.001)
    assert guard.stats["wait_timed_out"] == 3 and guard.waiting == 0
    assert t_a4.disconnecting and t_d1.disconnecting and t_e1.disconnecting
    lost = [e for e in events if e.get("login_timeout") and "waited" in formatEvent(e)]
    assert lost, [formatEvent(e) for e in events]


def test_a_waiting_connection_that_goes_leaves_the_room_and_is_never_served() -> None:
    guard, clock = make(max_unauthenticated=1, max_unauthenticated_per_host=1, max_waiting_logins=10)
    backend = BackendFactory(guard)
    factory = guard.guarded(backend)
    first, _ = connect(factory, "10.0.0.1")
    gone, _ = connect(factory, "10.0.0.2")
    stays, _ = connect(factory, "10.0.0.3")
    assert guard.waiting == 2
    gone.connectionLost(None)  # the client closed while waiting
    assert guard.waiting == 1
    first.ticket.done()
    clock.advance(0)
    assert served_hosts(backend) == ["10.0.0.1", "10.0.0.3"] and guard.waiting == 0
    # A served connection's loss reaches the backend's protocol (which ends its ticket).
    stays.connectionLost(None)
    assert guard.unauthenticated == 0


def test_new_arrivals_queue_behind_those_already_waiting() -> None:
    guard, clock = make(max_unauthenticated=2, max_unauthenticated_per_host=2, max_waiting_logins=10)
    backend = BackendFactory(guard)
    factory = guard.guarded(backend)
    first, _ = connect(factory, "10.0.0.1")
    connect(factory, "10.0.0.1")
    connect(factory, "10.0.0.2")            # waits
    first.ticket.done()                     # a slot is free, but 10.0.0.2 is first in line
    late, _ = connect(factory, "10.0.0.3")  # arrives before the serving turn: waits behind
    assert guard.waiting == 2 and not hasattr(late, "ticket")
    clock.advance(0)
    assert served_hosts(backend) == ["10.0.0.1", "10.0.0.1", "10.0.0.2"] and guard.waiting == 1


def test_without_a_waiting_room_connections_over_a_cap_are_closed_at_once() -> None:
    guard, _ = make(max_unauthenticated=1, max_unauthenticated_per_host=1, max_waiting_logins=0)
    factory = guard.guarded(BackendFactory(guard))
    connect(factory, "10.0.0.1")
    proto, transport = connect(factory, "10.0.0.2")
    assert isinstance(proto, lg.CloseAtOnce) and transport.disconnecting
    assert guard.stats["closed_at_cap"] == 1 and guard.waiting == 0
    with pytest.raises(ValueError):
        LinkOptions(max_waiting_logins=-1)


def test_closing_the_port_or_the_listener_drops_what_waits() -> None:
    guard, clock = make(max_unauthenticated=1, max_unauthenticated_per_host=1, max_waiting_logins=10)
    backend = BackendFactory(guard)
    factory = guard.guarded(backend)
    connect(factory, "10.0.0.1")
    _, t1 = connect(factory, "10.0.0.2")
    factory.doStop()  # the port stopped listening
    assert t1.disconnecting and backend.stopped
    _, t2 = connect(factory, "10.0.0.3")
    guard.stop()  # the listener stops
    assert t2.disconnecting and guard.waiting == 0 and guard.unauthenticated == 0
    clock.advance(guard.options.login_timeout * 2)  # no timer left behind that fires on closed connections
    assert guard.stats["wait_timed_out"] == 0
