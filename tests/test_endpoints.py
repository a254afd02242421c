"""Server endpoint strings: the listen backlog a master gets by default."""

from __future__ import annotations

import pytest
from twisted.internet import reactor

from workerwire.tls import DEFAULT_BACKLOG, server_from_string, with_default_backlog


@pytest.mark.parametrize("description", ["tcp:9989", "tcp:port=0:interface=127.0.0.1", "tcp6:port=0"])
def test_tcp_ports_get_a_backlog_that_survives_a_reconnect_storm(description: str) -> None:
    endpoint = server_from_string(reactor, description)
    assert endpoint._backlog == DEFAULT_BACKLOG >= 1000


def test_an_explicit_backlog_is_kept() -> None:
    assert with_default_backlog("tcp:port=0:backlog=10") == "tcp:port=0:backlog=10"
    assert server_from_string(reactor, "tcp:port=0:backlog=10")._backlog == 10


def test_other_kinds_are_left_alone() -> None:
    assert with_default_backlog("unix:/tmp/master.sock") == "unix:/tmp/master.sock"
