"""Address strings of the amp backend: Twisted endpoint strings.

A master listens on a server endpoint string (``tcp:9990``,
``tcp:port=0:interface=127.0.0.1``, ``ssl:...``, ``unix:...``); a worker dials a
client endpoint string (``tcp:host=master.example:port=9990``, ``tls:...``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from workerwire.errors import AddressError
from workerwire.tls import parse_client_address, parse_server_port

__all__ = ["check_server_port", "check_client_address", "client_address_for"]



def check_server_port(reactor: Any, portStr: str) -> Any:
    """Parse *portStr* as a server endpoint without listening; return the endpoint
    (see :func:`workerwire.tls.parse_server_port`).

    :raises AddressError: not a valid server endpoint string.
    """
    return parse_server_port(reactor, portStr, "amp")


def check_client_address(reactor: Any, address: str) -> Any:
    """Parse *address* as a client endpoint string; return the endpoint
    (see :func:`workerwire.tls.parse_client_address`).

    :raises AddressError: not a valid client endpoint string.
    """
    return parse_client_address(reactor, address, "amp")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def client_address_for(host: Any) -> str:
    """The client endpoint string that reaches a listening port whose address is *host*.

    A wildcard interface is reached through loopback:
    ``tcp:host=127.0.0.1:port=N`` (or ``tcp:host=\\:\\:1:port=N`` for IPv6).
    """
    if isinstance(host, IPv4Address):
        ip = host.host if host.host not in ("0.0.0.0", "") else "127.0.0.1"
        return f"tcp:host={ip}:port={host.port}"
    if isinstance(host, IPv6Address):
        ip = host.host if host.host not in ("::", "") else "::1"
        return f"tcp:host={_escape(ip)}:port={host.port}"  # connectTCP takes IPv6 literals
    if isinstance(host, UNIXAddress):
        name = host.name.decode() if isinstance(host.name, bytes) else str(host.name)
        return f"unix:path={_escape(name)}"
    raise AddressError(f"cannot make a client address for {host!r}")
