"""Endpoint strings to endpoints, for every network backend.

:func:`server_from_string` and :func:`client_from_string` are drop-in
replacements for Twisted's ``serverFromString`` / ``clientFromString``:
``ssl:``/``tls:`` strings go to :mod:`workerwire.tls`, everything else to
Twisted (a TCP port with :data:`~workerwire.addresses.DEFAULT_BACKLOG` unless
it names a backlog).  :func:`parse_server_port` and
:func:`parse_client_address` add the checks and error messages a backend
gives its users.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import clientFromString, serverFromString

from .addresses import scheme_of, with_default_backlog
from .errors import AddressError
from .tls import CLIENT_EXAMPLE, is_tls, tls_client_endpoint, tls_server_endpoint

__all__ = ["server_from_string", "client_from_string", "parse_server_port", "parse_client_address"]


def server_from_string(reactor: Any, description: str) -> Any:
    """A server endpoint for *description*: ``ssl:``/``tls:`` as
    :mod:`workerwire.tls` says, anything else through Twisted's
    ``serverFromString`` (TCP with the default backlog).

    :raises AddressError: a TLS string with unknown keys, a missing port or key,
        or unreadable / mismatched certificate files.
    """
    if is_tls(description):
        return tls_server_endpoint(reactor, description)
    return serverFromString(reactor, with_default_backlog(description))


def client_from_string(reactor: Any, description: str) -> Any:
    """A client endpoint for *description*: ``tls:`` as :mod:`workerwire.tls`
    says, anything else through Twisted's ``clientFromString``.

    :raises AddressError: an ``ssl:`` client string (it would verify no host
        name), or a ``tls:`` string with unknown keys or unreadable files.
    """
    scheme = scheme_of(description)
    if scheme == "ssl":
        raise AddressError(f"{description!r}: a worker dials a TLS master with tls:host=H:port=N "
                           f"(which verifies the master's certificate and host name), e.g. {CLIENT_EXAMPLE}")
    if scheme == "tls":
        return tls_client_endpoint(reactor, description)
    return clientFromString(reactor, description)


def parse_server_port(reactor: Any, portStr: Any, backend: str) -> Any:
    """The server endpoint a network backend listens on for *portStr*; nothing
    listens yet.  A bare number ``9989`` means ``tcp:9989`` (as in Buildbot's
    ``c['protocols']``); ``ssl:``/``tls:`` go to :mod:`workerwire.tls`.

    :raises AddressError: naming the string, what is wrong and what is valid.
    """
    example = "'tcp:9989' or 'tcp:port=0:interface=127.0.0.1'"
    if isinstance(portStr, int) and not isinstance(portStr, bool):
        portStr = str(portStr)
    if not isinstance(portStr, str) or not portStr.strip():
        raise AddressError(f"a {backend} port must be a non-empty endpoint string such as {example}, not {portStr!r}")
    description = portStr.strip()
    if description.isdigit():
        description = f"tcp:{description}"
    try:
        endpoint = server_from_string(reactor, description)
    except AddressError:
        raise
    except Exception as e:
        raise AddressError(f"{backend} port {portStr!r} is not a server endpoint string "
                           f"({type(e).__name__}: {e}); use one such as {example}") from None
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise AddressError(f"{backend} port {portStr!r}: port {port} is outside 0..65535")
    return endpoint


def parse_client_address(reactor: Any, address: Any, backend: str) -> Any:
    """The client endpoint a network backend's worker dials for *address*;
    nothing connects yet.  ``tls:`` goes to :mod:`workerwire.tls`.

    :raises AddressError: naming the string, what is wrong and what is valid.
    """
    example = "'tcp:host=127.0.0.1:port=9989'"
    if not isinstance(address, str) or not address:
        raise AddressError(f"a {backend} master address must be a client endpoint string such as {example}, "
                           f"not {address!r}")
    try:
        return client_from_string(reactor, address)
    except AddressError:
        raise
    except Exception as e:
        raise AddressError(f"{backend} master address {address!r} is not a client endpoint string "
                           f"({type(e).__name__}: {e}); use one such as {example}") from None
