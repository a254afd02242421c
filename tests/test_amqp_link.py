"""What only the amqp backend has: pools of masters, the broker's presence lock,
rejoining after the broker connection drops, and its address syntax.

These run against the private broker of ``tests/conftest.py`` (or
``$WORKERWIRE_AMQP_URL``), in addition to the whole conformance suite.
"""

from __future__ import annotations

from typing import Any

import pytest
from pytest_twisted import ensureDeferred as async_test
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import formatEvent, globalLogPublisher

from workerwire import LinkOptions, load_backend
from workerwire.conformance import Harness, within
from workerwire.conformance.relay import TCPRelay
from workerwire.errors import AddressError, DuplicateWorker, WorkerwireError
from workerwire_amqp.address import parse_dial, parse_port, queue_name

REACTOR: Any = _reactor


@pytest.fixture
def harness(amqp_broker_url: str, tmp_path: Any) -> Any:
    import pytest_twisted
    from twisted.internet.defer import ensureDeferred

    h = Harness(load_backend("amqp"), LinkOptions(keepalive_interval=None), REACTOR, str(tmp_path))
    yield h
    pytest_twisted.blockon(ensureDeferred(h.close()))


def _listener(harness: Harness, options: LinkOptions | None = None) -> Any:
    listener = harness.backend.create_listener(harness.master, options or harness.options, REACTOR)
    harness.extra_listeners.append(listener)
    return listener


@async_test
async def test_masters_of_one_pool_share_its_workers(harness: Harness) -> None:
    a = await harness.listener.updateRegistration("w1", "pw", "amqp:shared-pool")
    b = await _listener(harness).updateRegistration("w1", "pw", "amqp:shared-pool")
    assert a.getAddress() == b.getAddress(), "both masters hand out the pool's address"
    assert a.getPort() != b.getPort() and a.getPort().startswith("shared-pool/")
    w = await harness.start_worker("w1", "pw", builders=[], address=a.getAddress())
    assert await w.conn.remotePrint("served") is None


@async_test
async def test_a_second_master_with_the_same_name_is_a_port_in_use(harness: Harness) -> None:
    await harness.listener.updateRegistration("w1", "pw", "amqp:pool=named:master=alpha")
    with pytest.raises(AddressError) as err:
        await _listener(harness).updateRegistration("w1", "pw", "amqp:named/alpha")
    assert "already has a live master named 'alpha'" in str(err.value)
    assert (await _listener(harness).updateRegistration("w1", "pw", "amqp:named/beta")).getPort() == "named/beta"


@async_test
async def test_the_broker_refuses_a_second_session_at_another_master(harness: Harness) -> None:
    first = harness.listener
    reg = await first.updateRegistration("w1", "pw", "amqp:lock-pool")
    w = await harness.start_worker("w1", "pw", builders=[], address=reg.getAddress())
    other = _listener(harness)
    await other.updateRegistration("w1", "pw", "amqp:lock-pool")
    # The first master stops taking logins (its last registration goes); its session stays.
    await first.updateRegistration("w1", "pw", None)
    assert w.conn.isConnected
    c, _ = harness.connector(reg.getAddress(), "w1", "pw")
    with pytest.raises(DuplicateWorker) as err:
        await within(c.probe(), REACTOR, what="the other master's refusal")
    assert "live session" in str(err.value)
    assert [name for name, _ in harness.master.offers] == ["w1"], "the refusal came before any offer"
    # Once the session ends, the broker releases the lock and the other master takes the worker.
    gone: Deferred[None] = Deferred()
    w.conn.notifyOnDisconnect(lambda: gone.callback(None))
    await w.connector.stop()
    await within(gone, REACTOR, what="the first session to end")
    again, _ = harness.connector(reg.getAddress(), "w1", "pw")
    await within(ensureDeferred(_retry_probe(again)), REACTOR, what="a login at the other master")


async def _retry_probe(connector: Any, attempts: int = 20) -> None:
    """The lock's release reaches the broker a moment after the disconnect notice."""
    for attempt in range(attempts):
        try:
            await connector.probe()
            return
        except DuplicateWorker:
            if attempt + 1 == attempts:
                raise
            d: Deferred[None] = Deferred()
            REACTOR.callLater(0.1, d.callback, None)
            await d


@async_test
async def test_a_master_rejoins_its_pool_when_its_broker_connection_drops(harness: Harness,
                                                                         amqp_broker_url: str) -> None:
    broker = parse_port("amqp:x").broker
    relay = TCPRelay(REACTOR, broker.host, broker.port)
    await relay.start()
    harness.interposers.append(relay)
    via_relay = broker.moved_to("127.0.0.1", int(relay.address.rsplit("=", 1)[1]))
    reg = await harness.listener.updateRegistration("w1", "pw", f"amqp:url={via_relay.escaped()}:pool=rejoin")
    address = f"amqp:url={broker.escaped()}:pool=rejoin"  # the worker reaches the broker directly
    w = await harness.start_worker("w1", "pw", builders=["b1"], address=address,
                                   worker_options=LinkOptions(keepalive_interval=0.2, keepalive_timeout=2.0))
    assert reg.getAddress().endswith(":pool=rejoin")
    master_lost: Deferred[None] = Deferred()
    worker_lost: Deferred[None] = Deferred()
    w.conn.notifyOnDisconnect(lambda: master_lost.callback(None))
    w.connector.notifyOnDisconnect(lambda: worker_lost.called or worker_lost.callback(None))
    again = harness.master.whenConnection("w1", newer_than=w.conn)
    for link in relay.live_links():
        link.abort()  # the master's broker connection drops; the broker lives on
    await within(master_lost, REACTOR, what="the master to lose its sessions with its broker connection")
    await within(worker_lost, REACTOR, what="the worker to see its session gone")
    conn = await within(again, REACTOR, seconds=30, what="the worker to log in again once the master rejoined")
    assert await within(conn.remotePrint("back"), REACTOR, what="a call over the new session") is None


@async_test
async def test_no_broker_password_in_the_logs_or_the_workers_address(harness: Harness) -> None:
    events: list[str] = []
    globalLogPublisher.addObserver(lambda e: events.append(formatEvent(e)))
    reg = await harness.listener.updateRegistration("w1", "pw", "amqp:pw-pool")
    url = parse_dial(reg.getAddress()).broker
    assert "guest:guest@" in url.url and "guest:***@" in url.redacted()
    w = await harness.start_worker("w1", "pw", builders=[], address=reg.getAddress())
    assert "guest:guest" not in w.connector.address
    await w.connector.stop()
    await harness.listener.updateRegistration("w1", "pw", None)
    c, _ = harness.connector(reg.getAddress(), "w1", "pw")
    with pytest.raises(WorkerwireError):
        await within(c.probe(), REACTOR, what="the pool to have no master")
    leaks = [e for e in events if "guest:guest" in e]
    assert not leaks, leaks[:3]


def test_port_strings() -> None:
    spec = parse_port(r"amqp:url=amqp\://u\:p@mq\:5673/v:pool=ci:master=m1")
    assert (spec.broker.host, spec.broker.port, spec.pool, spec.master) == ("mq", 5673, "ci", "m1")
    assert spec.broker.redacted() == "amqp://u:***@mq:5673/v"
    # The spelling: the URL's own ':' unescaped.
    assert parse_port(r"amqp:url=amqp\://u:p@mq\:5673/v:pool=ci:master=m1") == spec
    assert parse_port("amqp:pool=ci:url=amqp://u:p@mq:5673/v:master=m1") == spec
    assert parse_port("amqp:ci/m2").master == "m2" and parse_port("amqp:ci").master is None
    fresh = parse_port("amqp:pool=0").bound()
    assert fresh.pool and fresh.pool.startswith("p-") and fresh.master and fresh.master.startswith("m-")
    for bad, says in [
        ("tcp:9989", "not an amqp port string"),
        ("amqp:pool=ci:colour=red", "unknown key"),
        ("amqp:pool=c.i", "pool 'c.i'"),
        (r"amqp:url=http\://x:pool=ci", "amqp:// or amqps://"),
        ("amqp:ci:pool=ci", "given twice"),
    ]:
        with pytest.raises(AddressError) as err:
            parse_port(bad)
        assert says in str(err.value), (bad, str(err.value))


def test_worker_addresses() -> None:
    dial = parse_dial(r"amqp:url=amqps\://mq.example/%2F:pool=ci")
    assert dial.broker.tls and dial.broker.port == 5671 and dial.pool == "ci"
    with pytest.raises(AddressError, match="names its pool"):
        parse_dial("amqp:url=amqp\\://mq/%2F")
    with pytest.raises(AddressError, match="unknown key"):
        parse_dial("amqp:pool=ci:master=m1")


def test_queue_names_of_any_worker_name() -> None:
    assert queue_name("ci", "worker", "w-1") == "workerwire.ci.worker.w-1"
    assert queue_name("ci", "worker", "wörker 1") == "workerwire.ci.worker.x" + "wörker 1".encode().hex()
    long_name = queue_name("ci", "worker", "n" * 300)
    assert len(long_name) < 255 and long_name.startswith("workerwire.ci.worker.h")


@async_test
async def test_a_worker_that_reads_reports_all_it_took_and_is_not_dropped(harness: Harness) -> None:
    """The send budget through a broker counts published minus the worker's
    ``seen`` receipts: a worker that reads everything brings it back to 0
    exactly, however far over the limit a burst of calls took it."""
    harness.use_options(harness.options.with_(
        send_queue_limit=64 * 1024, send_queue_resume=0, send_queue_timeout=1.0))
    w = await harness.start_worker("w1")
    from twisted.internet.defer import gatherResults

    burst = [w.conn.remotePrint(f"{i:04d}" + "p" * 8 * 1024) for i in range(40)]  # 320 KiB queued at once
    await within(gatherResults(burst), REACTOR, what="40 prints of 8 KiB")
    conn = w.conn
    assert conn.sent_bytes > 320 * 1024
    await within(_until_true(lambda: conn.unseen() == 0), REACTOR, what="the worker's receipts to catch up")
    stats = harness.listener.login_guard.stats
    assert conn.isConnected and stats["send_queue_dropped"] == 0, dict(stats)
    assert not conn.budget.paused


def _until_true(predicate: Any) -> Deferred[None]:
    """Fires once *predicate()* holds (no callback announces a receipt count)."""
    from twisted.internet.task import deferLater

    async def poll() -> None:
        while not predicate():
            await deferLater(REACTOR, 0.01, lambda: None)

    return ensureDeferred(poll())


@async_test
async def test_a_login_request_nobody_took_in_time_is_dropped_by_the_broker(amqp_broker_url: str,
                                                                             tmp_path: Any) -> None:
    """A worker that gave up waiting leaves no login behind for a master to serve
    later (in a login storm, such leftovers are work for nobody that delays everyone)."""
    from workerwire.errors import ConnectionLost
    from workerwire_amqp.broker import connect
    from workerwire_app.worker_runtime import WorkerRuntime

    broker = parse_port("amqp:x").broker
    link = await connect(broker, REACTOR, "test: the pool's login queue, consumed by nobody")
    try:
        channel = await link.channel()
        login_queue = queue_name("unserved", "login")
        await channel.queue_declare(login_queue, auto_delete=True)  # routable, but no master takes logins
        connector = load_backend("amqp").create_connector(
            WorkerRuntime(str(tmp_path), REACTOR), f"amqp:url={broker.escaped()}:pool=unserved", "w1", "pw",
            LinkOptions(keepalive_interval=None, login_timeout=1.0), REACTOR)
        with pytest.raises(ConnectionLost):
            await within(connector.probe(), REACTOR, what="the login attempt to give up")
        deadline = REACTOR.seconds() + 20
        while True:
            waiting = (await channel.queue_declare(login_queue, passive=True)).method.message_count
            if waiting == 0:
                break
            assert REACTOR.seconds() < deadline, f"{waiting} login request(s) still queued 20 s after the worker gave up"
            d: Deferred[None] = Deferred()
            REACTOR.callLater(0.2, d.callback, None)
            await d
    finally:
        link.close()


@async_test
async def test_a_worker_stops_reading_a_master_that_takes_nothing_and_drops_it(harness: Harness) -> None:
    """The worker's send budget toward its master: what it published to the
    session queue minus the master's ``seen`` receipts.  A master that stops
    taking (here: its session's reading paused, as a wedged master's would be)
    while it keeps calling is not answered without bound: over
    ``send_queue_limit`` the worker stops reading its calls, and after
    ``send_queue_timeout`` with nothing taken it drops the link."""
    worker_options = LinkOptions(keepalive_interval=None, send_queue_limit=64 * 1024, send_queue_resume=16 * 1024,
                                 send_queue_timeout=1.0)
    w = await harness.start_worker("w1", worker_options=worker_options)
    conn = w.conn
    session = w.connector._session
    await within(_until_true(lambda: session.unseen() == 0), REACTOR, what="the master's receipts to catch up")
    worker_lost: Deferred[None] = Deferred()
    w.connector.notifyOnDisconnect(lambda: worker_lost.called or worker_lost.callback(None))
    conn.box.pause()  # the master takes nothing more from the session queue
    calls = [conn.remoteGetWorkerInfo() for _ in range(200)]  # each answer ~1 KiB: far over 64 KiB
    for d in calls:
        d.addErrback(lambda f: None)
    await within(worker_lost, REACTOR, seconds=30, what="the worker to drop a master that takes nothing")
    assert session.budget is not None and session.budget.dropped
    assert 64 * 1024 < session.unseen() < 64 * 1024 + 16 * 1024, "it stopped answering soon after the limit"
    assert "stopped taking" in (session.lost_reason or "")
