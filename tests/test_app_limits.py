"""The master raises its open-files limit and says when it is still too low."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.logger import formatEvent, globalLogPublisher

from workerwire import LinkOptions
from workerwire_app.limits import files_needed, raise_open_files_limit

from test_app_support import InProcess, require_network_backend, to_toml


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


def test_workers_allowed_is_the_limit_less_the_listeners_caps_and_spare() -> None:
    from workerwire_app.limits import workers_allowed

    assert workers_allowed(20000, [LinkOptions()]) == 20000 - 64 - (256 + 1024)
    assert workers_allowed(1000, [LinkOptions()]) == 0
    assert workers_allowed(resource.RLIM_INFINITY, [LinkOptions()]) is None


def test_the_master_says_at_start_how_many_workers_its_limit_allows() -> None:
    from workerwire_app.limits import open_files_capacity

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        capacity = open_files_capacity(100, [LinkOptions()])
    finally:
        globalLogPublisher.removeObserver(seen.append)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        assert capacity == {"open_files_limit": None, "workers_allowed": None}
        return
    allowed = soft - 64 - (256 + 1024)
    assert capacity == {"open_files_limit": soft, "workers_allowed": allowed}
    lines = [formatEvent(e) for e in seen]
    assert f"open-files limit {soft}: room for {allowed} worker connections (100 configured)" in lines, lines


@pytest_twisted.ensureDeferred
async def test_status_shows_the_open_files_limit(tmp_path: Path) -> None:
    """``workerwire status --json`` carries what the master logged at start."""
    backend = require_network_backend()[0]
    env = InProcess(tmp_path, {"w1": "pw1"}, backend=backend)
    env.config_path.write_text(to_toml({
        "protocols": {env.backend.name: {"port": "tcp:port=0:interface=127.0.0.1"}},
        "workers": [{"name": "w1", "password": "pw1"}],
    }))
    await env.start()
    try:
        shown = env.master.status()["open_files"]
        assert shown["open_files_limit"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert shown["workers_allowed"] > 0
    finally:
        await env.stop()
