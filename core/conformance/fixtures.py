"""The fixtures a backend's conformance test class provides or may override.

A backend's test module is one class::

    from workerwire.conformance import ConformanceSuite

    class TestMyBackend(ConformanceSuite):
        @pytest.fixture
        def backend_name(self):
            return "acme-nats"

Capability flags are class attributes a backend's class may override; a test
that needs a capability the backend lacks is skipped and the skip names it.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred

from ..backend import Backend, LinkOptions
from ..registry import load_backend
from .harness import Harness

__all__ = ["ConformanceFixtures"]


class ConformanceFixtures:
    """Fixtures every conformance test uses."""

    @pytest.fixture
    def backend_name(self) -> str:
        raise NotImplementedError("a conformance test class must provide the backend_name fixture")

    @pytest.fixture
    def backend(self, backend_name: str) -> Backend:
        """The backend under test, loaded through the registry as a master would."""
        return load_backend(backend_name)

    @pytest.fixture
    def link_options(self) -> LinkOptions:
        """Options for both ends; keepalive off unless a test turns it on."""
        return LinkOptions(keepalive_interval=None, login_timeout=30.0)

    @pytest.fixture
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    @pytest.fixture
    def harness(self, backend: Backend, link_options: LinkOptions, reactor: Any, tmp_path: Any) -> Iterator[Harness]:
        h = Harness(backend, link_options, reactor, str(tmp_path))
        yield h
        pytest_twisted.blockon(ensureDeferred(h.close()))
