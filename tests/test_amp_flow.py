"""Flow control of command output: a slow master slows the worker's producer."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.python.failure import Failure

from workerwire import Backoff, LinkOptions
from workerwire.conformance import RecordingCommand, RecordingMaster, ScriptedWorker, within
from workerwire.conformance.scripted_worker import blob_text, stream_line
from workerwire.errors import ConnectionLost, ProtocolError
from workerwire_amp import AMPConnector, AMPListener
from workerwire.flow import SendWindow

MiB = 1024 * 1024
OPTIONS = LinkOptions(keepalive_interval=None)


class Link:
    """A real amp listener and connector with chosen windows."""

    def __init__(self, reactor: Any, basedir: str, master_window: int, worker_window: int):
        self.reactor = reactor
        self.master = RecordingMaster(reactor)
        self.listener = AMPListener(self.master, OPTIONS, reactor, window=master_window)
        self.bot = ScriptedWorker(basedir, reactor)
        self.worker_window = worker_window
        self.connector: AMPConnector | None = None

    async def start(self) -> Any:
        reg = await self.listener.updateRegistration("w1", "pw", "tcp:port=0:interface=127.0.0.1")
        self.connector = AMPConnector(self.bot, reg.getAddress(), "w1", "pw", OPTIONS, self.reactor,
                                      Backoff(initial=0.05, maximum=0.5), window=self.worker_window)
        self.connector.start()
        conn = await within(self.master.whenConnection("w1"), self.reactor, what="the worker to log in")
        await conn.remoteSetBuilderList([("b1", "b1")])
        return conn

    @property
    def window(self) -> SendWindow:
        assert self.connector is not None and self.connector.session is not None
        return self.connector.session.window

    async def stop(self) -> None:
        if self.connector is not None:
            await self.connector.stop()
        await self.listener.stopListening()


@pytest.fixture
def make_link(reactor: Any, tmp_path: Any) -> Iterator[Any]:
    links: list[Link] = []

    def make(master_window: int, worker_window: int) -> Link:
        link = Link(reactor, str(tmp_path), master_window, worker_window)
        links.append(link)
        return link

    yield make
    for link in links:
        pytest_twisted.blockon(ensureDeferred(link.stop()))


class SlowCommand(RecordingCommand):
    """Digests each update *delay* seconds late: the acknowledgement waits."""

    def __init__(self, reactor: Any, delay: float):
        super().__init__()
        self.reactor = reactor
        self.delay = delay

    def remote_update(self, updates: Any) -> Deferred[None]:  # type: ignore[override]
        super().remote_update(updates)
        d: Deferred[None] = Deferred()
        self.reactor.callLater(self.delay, d.callback, None)
        return d


@async_test
async def test_slow_master_keeps_the_workers_buffer_under_the_window(make_link: Any, reactor: Any) -> None:
    window = 32 * 1024
    link = make_link(master_window=window, worker_window=window)
    conn = await link.start()
    rc = SlowCommand(reactor, delay=0.005)
    lines, batch = 6000, 200  # 30 updates of about 3.2 kB each: about 3 windows' worth
    await conn.remoteStartCommand(rc, "b1", "c1", "stream", {"count": lines, "batch": batch})
    await within(rc.done, reactor, what="the stream to complete")
    assert rc.values("stdout") == [stream_line(i) for i in range(lines)]
    assert rc.completions == [None]
    w = link.window
    batch_bytes = len(stream_line(0).encode()) * batch + 64
    assert 0 < w.peak_in_flight <= window, "unacknowledged bytes stay within the window"
    assert w.peak_buffered <= window + batch_bytes, "in flight plus what the producer handed over"
    assert w.stalls > 0, "the producer had to wait for the slow master"
    assert w.peak_in_flight_count >= 2, "several updates were in flight at once (pipelined)"
    # The completion may overtake the last acknowledgements (they wait on the
    # slow master); then the window drains.
    await within(poll(lambda: w.buffered == 0, reactor), reactor, what="the window to drain")


def poll(predicate: Any, reactor: Any, every: float = 0.005) -> Deferred[None]:
    d: Deferred[None] = Deferred()

    def check() -> None:
        if predicate():
            d.callback(None)
        else:
            reactor.callLater(every, check)

    check()
    return d


@async_test
async def test_master_may_offer_a_smaller_window(make_link: Any, reactor: Any) -> None:
    link = make_link(master_window=8 * 1024, worker_window=MiB)
    conn = await link.start()
    assert link.window.limit == 8 * 1024
    rc = SlowCommand(reactor, delay=0.002)
    await conn.remoteStartCommand(rc, "b1", "c1", "stream", {"count": 2000, "batch": 100})
    await within(rc.done, reactor, what="the stream to complete")
    assert link.window.peak_in_flight <= 8 * 1024
    assert len(rc.values("stdout")) == 2000


@async_test
async def test_an_update_larger_than_the_window_goes_alone(make_link: Any, reactor: Any) -> None:
    link = make_link(master_window=64 * 1024, worker_window=64 * 1024)
    conn = await link.start()
    rc = RecordingCommand()
    await conn.remoteStartCommand(rc, "b1", "c1", "blob", {"size": 3 * MiB})
    await within(rc.done, reactor, what="the blob to arrive")
    assert rc.values("stdout") == [blob_text(3 * MiB)]
    assert rc.update_calls == 2, "one update for the blob (never pieces), one for rc"
    assert link.window.peak_in_flight_count == 1


# -- the window alone, with scripted answers ------------------------------------------


class Answers:
    """Sends that the test answers by hand."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []

    def send(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d

    def answer(self, result: Any = None) -> None:
        self.pending.pop(0).callback(result) if not isinstance(result, Failure) else self.pending.pop(0).errback(result)


def test_window_fires_while_room_remains_and_queues_beyond_it() -> None:
    w, answers = SendWindow(100), Answers()
    a = w.send_update(40, answers.send)
    b = w.send_update(40, answers.send)
    assert a.called and b.called and w.in_flight == 80  # pipelined, room left
    c = w.send_update(40, answers.send)
    assert not c.called and w.queued == 40 and w.buffered == 120 and len(answers.pending) == 2
    done = w.send_ordered(answers.send)
    assert not done.called and len(answers.pending) == 2, "a completion waits behind queued updates"
    answers.answer()
    assert c.called and w.in_flight == 80 and len(answers.pending) == 3
    answers.answer()
    answers.answer()
    assert w.in_flight == 0 and not done.called
    answers.answer()
    assert done.called and w.stalls == 1 and w.peak_in_flight == 80


def test_window_sends_an_oversized_update_alone_and_holds_the_producer() -> None:
    w, answers = SendWindow(100), Answers()
    big = w.send_update(500, answers.send)
    assert not big.called and w.in_flight == 500, "sent (nothing else in flight) but no room left"
    small = w.send_update(10, answers.send)
    assert not small.called and len(answers.pending) == 1
    answers.answer()
    assert big.called and small.called and w.in_flight == 10


def test_window_reports_refusals_and_losses() -> None:
    w, answers = SendWindow(100), Answers()
    full = w.send_update(100, answers.send)
    queued = w.send_update(10, answers.send)
    answers.answer(Failure(ProtocolError("update for command 'x', which is not running")))
    assert full.called and queued.called
    with pytest.raises(ProtocolError):
        full.result.raiseException()
    full.addErrback(lambda f: None)
    hanging = w.send_ordered(answers.send)
    w.lost("connection closed")
    assert hanging.called
    hanging.addErrback(lambda f: f.trap(ConnectionLost))
    late = w.send_update(1, lambda: succeed(None))
    assert isinstance(late.result, Failure) and late.result.check(ConnectionLost)
    late.addErrback(lambda f: None)
