"""The suite bound to the backend named by ``--workerwire-backend`` (see runner.py)."""

from __future__ import annotations

import pytest

from workerwire.conformance import ConformanceSuite


class TestConformance(ConformanceSuite):
    @pytest.fixture
    def backend_name(self, request: pytest.FixtureRequest) -> str:
        name = request.config.getoption("workerwire_backend")
        if not name:
            raise pytest.UsageError("pass --workerwire-backend=NAME")
        return str(name)
