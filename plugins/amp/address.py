"""Address strings of the amp backend: Twisted endpoint strings.

A master listens on a server endpoint string (``tcp:9990``,
``tcp:port=0:interface=127.0.0.1``, ``ssl:...``, ``unix:...``); a worker dials a
client endpoint string (``tcp:host=master.example:port=9990``, ``tls:...``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from workerwire.errors import AddressError
from workerwire.tls import client_from_string, server_from_string

__all__ = ["check_server_port", "check_client_address", "client_address_for"]

_SERVER_EXAMPLES = "'tcp:9990' or 'tcp:port=0:interface=127.0.0.1'"
_CLIENT_EXAMPLES = "'tcp:host=127.0.0.1:port=9990'"


def check_server_port(reactor: Any, portStr: str) -> Any:
    """Parse *portStr* as a server endpoint without listening; return the endpoint.

    :raises AddressError: not a valid server endpoint string.
    """
    if not isinstance(portStr, str) or not portStr:
        raise AddressError(f"an amp port must be a non-empty endpoint string such as {_SERVER_EXAMPLES}")
    try:
        endpoint = server_from_string(reactor, portStr)  # ssl:/tls: through workerwire.tls
    except AddressError:
        raise
    except Exception as e:
        raise AddressError(
            f"{portStr!r} is not a server endpoint string ({type(e).__name__}: {e}); "
            f"use one such as {_SERVER_EXAMPLES}") from None
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise AddressError(f"{portStr!r}: port {port} is outside 0..65535")
    return endpoint


def check_client_address(reactor: Any, address: str) -> Any:
    """Parse *address* as a client endpoint string; return the endpoint.

    :raises AddressError: not a valid client endpoint string.
    """
    if not isinstance(address, str) or not address:
        raise AddressError(f"an amp master address must be a client endpoint string such as {_CLIENT_EXAMPLES}")
    try:
        return client_from_string(reactor, address)  # tls: through workerwire.tls
    except AddressError:
        raise
    except Exception as e:
        raise AddressError(
            f"{address!r} is not a client endpoint string ({type(e).__name__}: {e}); "
            f"use one such as {_CLIENT_EXAMPLES}") from None


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
