"""The conformance suite, once for every backend the registry finds.

No backend is named here: installing a backend (in-tree or third-party) is
enough to put it through the suite.
"""

from __future__ import annotations

import pytest

from workerwire.conformance import ConformanceSuite
from workerwire.registry import backend_names


@pytest.fixture(params=backend_names())
def _registered_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestConformance(ConformanceSuite):
    @pytest.fixture
    def backend_name(self, _registered_backend: str) -> str:
        return _registered_backend
