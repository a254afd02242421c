"""Port strings and client endpoints for the pb backend.

A port string is a Twisted server endpoint string (``tcp:9989``,
``tcp:port=0:interface=127.0.0.1``, ``unix:/path``, ...); a bare number
``9989`` means ``tcp:9989``, as in Buildbot's ``c['protocols']``.  A worker
dials a Twisted client endpoint string (``tcp:host=H:port=N``).
"""

from __future__ import annotations

from typing import Any

from workerwire.errors import AddressError
from workerwire.endpoints import parse_client_address, parse_server_port

__all__ = ["normalize_port", "server_endpoint", "client_endpoint"]

_EXAMPLES = "'tcp:9989' or 'tcp:port=0:interface=127.0.0.1'"


def normalize_port(portStr: Any) -> str:
    """The endpoint string for *portStr* (``"9989"`` -> ``"tcp:9989"``)."""
    if isinstance(portStr, int) and not isinstance(portStr, bool):
        portStr = str(portStr)
    if not isinstance(portStr, str) or not portStr.strip():
        raise AddressError(f"a pb port must be a non-empty endpoint string such as {_EXAMPLES}, not {portStr!r}")
    portStr = portStr.strip()
    return f"tcp:{portStr}" if portStr.isdigit() else portStr


def server_endpoint(reactor: Any, portStr: str) -> Any:
    """A server endpoint for *portStr*; nothing listens yet (see
    :func:`workerwire.endpoints.parse_server_port`).

    :raises AddressError: the string is not a valid server endpoint.
    """
    return parse_server_port(reactor, portStr, "pb")


def client_endpoint(reactor: Any, address: str) -> Any:
    """A client endpoint for *address*; nothing connects yet (see
    :func:`workerwire.endpoints.parse_client_address`).

    :raises AddressError: the string is not a valid client endpoint.
    """
    return parse_client_address(reactor, address, "pb")
