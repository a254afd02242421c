"""The master raises its open-files limit and says when it is still too low."""

from __future__ import annotations

import resource
from typing import Any

from twisted.logger import formatEvent, globalLogPublisher

from workerwire import LinkOptions
from workerwire_app.limits import files_needed, raise_open_files_limit


def test_files_needed_counts_workers_and_every_listeners_caps() -> None:
    options = [LinkOptions(), LinkOptions(max_unauthenticated=10, max_waiting_logins=0)]
    assert files_needed(500, options) == 500 + 64 + (256 + 1024) + 10


def test_the_soft_limit_is_raised_to_the_hard_one_and_a_shortfall_is_logged() -> None:
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        soft = raise_open_files_limit(10)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft
        if hard != resource.RLIM_INFINITY:
            assert soft == hard
        assert not seen  # enough: nothing to say
        if hard != resource.RLIM_INFINITY:
            raise_open_files_limit(hard + 1)
            lines = [formatEvent(e) for e in seen]
            assert any("open-files limit" in line and "ulimit -n" in line for line in lines), lines
    finally:
        globalLogPublisher.removeObserver(seen.append)
