"""Reconnect backoff: the full-jitter first reconnect after a lost link, on a
fake clock (``task.Clock``) and a seeded random generator.  A fake session
stands in for a network link: what is pinned down is when the connector tries
again, which no real link can show exactly."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed

from workerwire import Backoff
from workerwire.base_worker import BaseWorkerConnector, WorkerSession


def test_the_first_reconnect_after_a_loss_is_uniform_over_the_spread() -> None:
    b = Backoff(rng=random.Random(18))
    assert b.loss_spread == 5.0  # min(maximum, 10 * initial) for the defaults
    delays = [b.delay_after_loss() for _ in range(10000)]
    assert 0 <= min(delays) < 0.01 and 4.99 < max(delays) <= 5.0
    per_second = [sum(1 for d in delays if k <= d < k + 1) for k in range(5)]
    assert all(1800 < n < 2200 for n in per_second), per_second


def test_loss_spread_follows_the_backoffs_scale_and_is_checked() -> None:
    assert Backoff(initial=0.05, maximum=1.0).loss_spread == 0.5
    assert Backoff(initial=0.05, maximum=0.2).loss_spread == 0.2
    assert Backoff(loss_spread=0).delay_after_loss() == 0
    with pytest.raises(ValueError, match="loss_spread must be in"):
        Backoff(maximum=30, loss_spread=31)


class _Session(WorkerSession):
    peer = "fake:1"

    def __init__(self, connector: "_Connector") -> None:
        self.connector = connector

    def keepalive(self) -> Deferred[None]:
        return succeed(None)

    def request_shutdown(self) -> Deferred[None]:
        return succeed(None)

    def close(self, abort: bool = False) -> None:
        self.connector.session_lost(self, "closed")


class _Bot:
    def linkEstablished(self) -> None:
        pass

    def linkLost(self) -> None:
        pass


class _Connector(BaseWorkerConnector):
    """Logs in at once every time it dials (the fake part: no network)."""

    def __init__(self, clock: task.Clock, backoff: Backoff) -> None:
        super().__init__(_Bot(), "fake", "w", "pw", None, clock, backoff)  # type: ignore[arg-type]
        self.dials: list[float] = []

    def connect_once(self) -> Deferred[Any]:
        self.dials.append(self.reactor.seconds())
        return succeed(_Session(self))


def test_a_fleet_that_loses_its_master_at_once_comes_back_spread_out() -> None:
    """1,000 workers lose the link at the same instant (a master restart):
    their first reconnects are spread over the loss spread, not bunched in
    the first retry's [0.25, 0.5] s."""
    clock = task.Clock()
    rng = random.Random(5)
    fleet = [_Connector(clock, Backoff(rng=rng)) for _ in range(1000)]
    for c in fleet:
        c.start()
    assert all(c.isConnected and c.dials == [0.0] for c in fleet)
    clock.advance(10)
    for c in fleet:
        assert c._session is not None
        c._session.close()  # the master went away
    clock.pump([0.05] * 120)
    redials = [c.dials[1] - 10 for c in fleet]
    assert all(c.isConnected for c in fleet)
    assert 0 <= min(redials) and max(redials) <= 5.0 + 0.05
    busiest = max(sum(1 for d in redials if k * 0.25 <= d < (k + 1) * 0.25) for k in range(20))
    assert busiest < 100, busiest  # ~50 per quarter second; all 1,000 in one before


def test_the_reconnect_after_a_loss_waits_what_the_backoff_says() -> None:
    clock = task.Clock()
    expected = random.Random(9)
    c = _Connector(clock, Backoff(rng=random.Random(9)))
    c.start()
    assert c._session is not None
    c._session.close()
    wait = 5.0 * expected.random()
    clock.advance(wait - 1e-6)
    assert c.dials == [0.0]
    clock.advance(2e-6)
    assert c.dials == [0.0, pytest.approx(wait, abs=1e-5)]
