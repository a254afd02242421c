"""Endpoint strings: the listen backlog a master gets by default, the port forms
every network backend accepts, and the address a registration gives workers."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from workerwire.addresses import DEFAULT_BACKLOG, with_default_backlog
from workerwire.endpoints import server_from_string


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


# -- the address a registration hands to workers -------------------------------------

import socket  # noqa: E402

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress  # noqa: E402

from workerwire import LinkOptions  # noqa: E402
from workerwire.conformance import Harness  # noqa: E402
from workerwire.addresses import client_address_for  # noqa: E402


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_client_addresses_are_spelled_one_way_for_every_backend() -> None:
    assert client_address_for(IPv4Address("TCP", "0.0.0.0", 5)) == "tcp:host=127.0.0.1:port=5"
    assert client_address_for(IPv4Address("TCP", "10.0.0.2", 5)) == "tcp:host=10.0.0.2:port=5"
    assert client_address_for(IPv6Address("TCP", "::", 5)) == r"tcp:host=\:\:1:port=5"
    assert client_address_for(IPv6Address("TCP", "fe80::1%eth0", 5)) == r"tcp:host=fe80\:\:1%eth0:port=5"
    assert client_address_for(UNIXAddress(b"/tmp/m.sock")) == "unix:path=/tmp/m.sock"
    with pytest.raises(AddressError):
        client_address_for(object())


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1) to listen on")
@pytest.mark.parametrize("name", NETWORK_BACKENDS)
@pytest.mark.parametrize("port", [r"tcp6:port=0:interface=\:\:1", r"tcp:port=0:interface=\:\:1", "tcp6:0"])
@pytest_twisted.ensureDeferred
async def test_a_worker_dials_the_address_of_an_ipv6_registration(name: str, port: str, tmp_path: Any) -> None:
    """The address a registration gives out is one the backend's own connector dials
    (pb once gave ``tcp6:host=...``, which no Twisted client endpoint parses)."""
    h = Harness(load_backend(name), LinkOptions(keepalive_interval=None), reactor, str(tmp_path))
    try:
        reg = await h.register("w1", "pw", port)
        assert isinstance(reg.getPort(), int) and reg.getPort() > 0
        assert reg.getAddress() == rf"tcp:host=\:\:1:port={reg.getPort()}"
        w = await h.start_worker("w1", "pw")
        assert w.conn.get_peer().startswith("[::1]:")  # the peer, spelled as on every backend
        rc = await h.run(w, "echo", {"over": "ipv6"})
        assert rc.values("echo") == [{"over": "ipv6"}]
    finally:
        await h.close()


@pytest.mark.parametrize("name", NETWORK_BACKENDS)
@pytest_twisted.ensureDeferred
async def test_a_worker_dials_the_address_of_a_unix_socket_registration(name: str, tmp_path: Any) -> None:
    h = Harness(load_backend(name), LinkOptions(keepalive_interval=None), reactor, str(tmp_path))
    path = tmp_path / "master.sock"
    try:
        reg = await h.register("w1", "pw", f"unix:{path}")
        assert reg.getAddress() == f"unix:path={path}"
        assert reg.getPort() == str(path)  # the path, as for every backend (pb once gave "UNIXAddress('...')")
        w = await h.start_worker("w1", "pw")
        assert w.conn.get_peer() == f"unix:{path}"  # the listening socket (the client is anonymous), on every backend
        rc = await h.run(w, "echo", {"over": "unix"})
        assert rc.values("echo") == [{"over": "unix"}]
    finally:
        await h.close()
