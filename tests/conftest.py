"""Project-wide test setup: a private RabbitMQ broker for the amqp backend.

The broker (:mod:`rabbitmq`) starts once per session, the first time a test
whose id names the amqp backend runs, and stops at the end; its URL goes to
``$WORKERWIRE_AMQP_URL``, which the amqp backend dials by default.  A run
given a broker already (``WORKERWIRE_AMQP_URL`` set) uses that one.
"""

from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from rabbitmq import URL_ENV, PrivateBroker  # noqa: E402


@pytest.fixture(scope="session")
def amqp_broker_url() -> Iterator[str]:
    """The URL of a running broker: the given one, or a private one started now."""
    given = os.environ.get(URL_ENV)
    if given:
        yield given
        return
    broker = PrivateBroker().start()
    os.environ[URL_ENV] = broker.url
    try:
        yield broker.url
    finally:
        os.environ.pop(URL_ENV, None)
        broker.stop()


#: Test modules that run every installed backend in child processes (which
#: find the broker through the environment), besides tests whose id names amqp.
RUN_EVERY_BACKEND = {"test_bench_quick"}


@pytest.fixture(autouse=True)
def _amqp_broker_for_amqp_tests(request: pytest.FixtureRequest) -> None:
    module = request.node.module.__name__.rsplit(".", 1)[-1] if request.node.module else ""
    if "amqp" in request.node.nodeid or module in RUN_EVERY_BACKEND:
        request.getfixturevalue("amqp_broker_url")
