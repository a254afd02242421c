"""pytest plugin (entry point ``pytest11``): the ``--workerwire-backend`` option.

It only adds an option; it changes nothing in a test run that does not use it.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("workerwire")
    group.addoption(
        "--workerwire-backend",
        action="store",
        default=None,
        dest="workerwire_backend",
        help="name of the installed workerwire backend the conformance suite runs against",
    )
