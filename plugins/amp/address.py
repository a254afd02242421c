"""Address strings of the amp backend: Twisted endpoint strings.

A master listens on a server endpoint string (``tcp:9990``,
``tcp:port=0:interface=127.0.0.1``, ``ssl:...``, ``unix:...``); a worker dials a
client endpoint string (``tcp:host=master.example:port=9990``, ``tls:...``).
"""

from __future__ import annotations

from typing import Any

from workerwire.addresses import client_address_for
from workerwire.endpoints import parse_client_address, parse_server_port

__all__ = ["check_server_port", "check_client_address", "client_address_for"]


def check_server_port(reactor: Any, portStr: str) -> Any:
    """Parse *portStr* as a server endpoint without listening; return the endpoint
    (see :func:`workerwire.endpoints.parse_server_port`).

    :raises AddressError: not a valid server endpoint string.
    """
    return parse_server_port(reactor, portStr, "amp")


def check_client_address(reactor: Any, address: str) -> Any:
    """Parse *address* as a client endpoint string; return the endpoint
    (see :func:`workerwire.endpoints.parse_client_address`).

    :raises AddressError: not a valid client endpoint string.
    """
    return parse_client_address(reactor, address, "amp")
