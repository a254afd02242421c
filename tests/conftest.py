"""Fixtures shared by the project's own tests (the conformance suite has its own, in
``workerwire.conformance.fixtures``, for third parties), and a private RabbitMQ
broker for the amqp backend.

The broker (:mod:`rabbitmq`) starts once per session, the first time a test
whose id names the amqp backend runs, and stops at the end; its URL goes to
``$WORKERWIRE_AMQP_URL``, which the amqp backend dials by default.  A run
given a broker already (``WORKERWIRE_AMQP_URL`` set) uses that one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from workerwire import LinkOptions, load_backend
from workerwire.conformance import Harness

sys.path.insert(0, os.path.dirname(__file__))

from rabbitmq import URL_ENV, PrivateBroker  # noqa: E402


def write_distribution(site: Path, name: str, version: str, backends: Mapping[str, str],
                       modules: Mapping[str, str] | None = None) -> dict[str, str]:
    """Install a throwaway distribution into the directory *site*, as pip would
    lay it out: each of *modules* (module name -> source) as ``site/NAME.py``,
    and ``NAME-VERSION.dist-info`` with ``METADATA``, ``entry_points.txt``
    registering *backends* (entry-point name -> ``module:attribute``) in the
    ``workerwire.backends`` group, and an empty ``RECORD``.

    Returns ``os.environ`` with *site* first on ``PYTHONPATH``: a fresh
    process run with it finds the distribution (this one does not: stevedore
    caches entry points).
    """
    site.mkdir(parents=True, exist_ok=True)
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(source)
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(
        "[workerwire.backends]\n" + "".join(f"{entry} = {target}\n" for entry, target in backends.items()))
    (dist / "RECORD").write_text("")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))


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


@pytest.fixture
def reactor() -> Any:
    """The global reactor pytest-twisted runs the tests on."""
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def no_errors_logged() -> Iterator[list[str]]:
    """Fails the test if anything logs an error or an unhandled failure (warnings
    are fine).  The test appends to the list it gets the texts it expects to
    be logged as errors (e.g. stock PB logs every failure it sends)."""
    errors: list[str] = []
    allowed: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.error, LogLevel.critical) or event.get("isError"):
            errors.append(formatEvent(event) + repr(event.get("log_failure", "")))

    globalLogPublisher.addObserver(observer)
    yield allowed
    globalLogPublisher.removeObserver(observer)
    errors = [e for e in errors if not any(a in e for a in allowed)]
    assert not errors, f"errors logged: {errors[:3]}"


@pytest.fixture
def make_harness(reactor: Any, tmp_path: Any) -> Iterator[Callable[..., Harness]]:
    """``make_harness("amp", keepalive_interval=None)``: a conformance
    :class:`Harness` of that backend with those :class:`LinkOptions`, closed at
    the end of the test."""
    made: list[Harness] = []

    def make(backend_name: str, **options: Any) -> Harness:
        h = Harness(load_backend(backend_name), LinkOptions(**options), reactor, str(tmp_path))
        made.append(h)
        return h

    yield make
    for h in reversed(made):
        pytest_twisted.blockon(ensureDeferred(h.close()))


# The app tests' process reaper, as a fixture every test file can ask for.
from test_app_support import processes  # noqa: E402,F401
