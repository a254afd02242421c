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


from workerwire import load_backend, backend_names  # noqa: E402
from workerwire.errors import AddressError  # noqa: E402

NETWORK_BACKENDS = [n for n in backend_names() if load_backend(n).network]


@pytest.mark.parametrize("name", NETWORK_BACKENDS)
def test_network_backends_accept_the_same_port_forms(name: str) -> None:
    backend = load_backend(name)
    for good in ("9989", "tcp:9989", "tcp:port=0:interface=127.0.0.1", "tcp6:port=0"):
        backend.check_port(good)
    for bad, why in (("tcp:99999", "outside 0..65535"), ("no-such-kind:1", "not a server endpoint"), ("", "non-empty")):
        with pytest.raises(AddressError) as err:
            backend.check_port(bad)
        assert why in str(err.value) and name in str(err.value)
