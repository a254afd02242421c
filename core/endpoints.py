"""Endpoint strings to endpoints, for every network backend.

:func:`server_from_string` and :func:`client_from_string` are drop-in
replacements for Twisted's ``serverFromString`` / ``clientFromString``:
``ssl:``/``tls:`` strings go to :mod:`workerwire.tls`, everything else to
Twisted (a TCP port with :data:`~workerwire.addresses.DEFAULT_BACKLOG` unless
it names a backlog).  :func:`parse_server_port` and
:func:`parse_client_address` add the checks and error messages a backend
gives its users.

A worker behind an HTTP proxy adds ``proxy=http://HOST:PORT`` to a ``tcp:`` or
``tls:`` client address (:mod:`workerwire.http_proxy`); the backend's protocol
then runs through the proxy's ``CONNECT`` tunnel, TLS end to end with the master.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import clientFromString, serverFromString

from .addresses import port_number, scheme_of, split_description, with_default_backlog
from .errors import AddressError
from .http_proxy import HTTPConnectEndpoint, take_proxy
from .tls import CLIENT_EXAMPLE, is_tls, tls_client_endpoint, tls_server_endpoint

__all__ = ["server_from_string", "client_from_string", "parse_server_port", "normalize_port", "parse_client_address"]


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
    description, proxy = take_proxy(description)
    if proxy is not None:
        return _through_proxy(reactor, description, proxy)
    scheme = scheme_of(description)
    if scheme == "ssl":
        raise AddressError(f"{description!r}: a worker dials a TLS master with tls:host=H:port=N "
                           f"(which verifies the master's certificate and host name), e.g. {CLIENT_EXAMPLE}")
    if scheme == "tls":
        return tls_client_endpoint(reactor, description)
    return clientFromString(reactor, description)


def _through_proxy(reactor: Any, description: str, proxy: tuple[str, int]) -> Any:
    """The endpoint of a ``tcp:`` or ``tls:`` address reached through an HTTP proxy."""
    scheme = scheme_of(description)
    if scheme not in ("tcp", "tls"):
        raise AddressError(f"{description!r}: proxy= applies to tcp:host=H:port=N and tls:host=H:port=N "
                           f"addresses, not {scheme}:")
    _, args, kw = split_description(description)
    kw = {**dict(zip(("host", "port"), args)), **kw}
    host, port_text = kw.get("host"), kw.get("port")
    if not host or port_text is None:
        raise AddressError(f"{description!r} needs host= and port= to go through a proxy")
    port = port_number(description, port_text)
    try:
        timeout = float(kw.get("timeout", "30"))
    except ValueError:
        raise AddressError(f"{description!r}: timeout must be a number of seconds") from None
    unknown = sorted(set(kw) - {"host", "port", "timeout"}) if scheme == "tcp" else []
    if unknown:
        raise AddressError(f"{description!r}: through a proxy a tcp: address takes host, port and timeout, "
                           f"not {', '.join(unknown)}")
    tunnel = HTTPConnectEndpoint(reactor, proxy[0], proxy[1], host, port, timeout)
    if scheme == "tcp":
        return tunnel
    endpoint: Any = tls_client_endpoint(reactor, description)
    # TLS runs inside the tunnel: the TLS endpoint dials through it instead of TCP.
    endpoint._tcp = tunnel
    return endpoint


_SERVER_EXAMPLE = "'tcp:9989' or 'tcp:port=0:interface=127.0.0.1'"


def normalize_port(portStr: Any, backend: str) -> str:
    """The server endpoint string for *portStr*: ``9989`` and ``"9989"`` mean
    ``"tcp:9989"`` (as in Buildbot's ``c['protocols']``); surrounding blanks go.

    :raises AddressError: *portStr* is not a non-empty string or a number.
    """
    if isinstance(portStr, int) and not isinstance(portStr, bool):
        portStr = str(portStr)
    if not isinstance(portStr, str) or not portStr.strip():
        raise AddressError(f"a {backend} port must be a non-empty endpoint string such as {_SERVER_EXAMPLE}, "
                           f"not {portStr!r}")
    description = portStr.strip()
    return f"tcp:{description}" if description.isdigit() else description


def parse_server_port(reactor: Any, portStr: Any, backend: str) -> Any:
    """The server endpoint a network backend listens on for *portStr*; nothing
    listens yet.  A bare number ``9989`` means ``tcp:9989`` (as in Buildbot's
    ``c['protocols']``); ``ssl:``/``tls:`` go to :mod:`workerwire.tls`.

    :raises AddressError: naming the string, what is wrong and what is valid.
    """
    description = normalize_port(portStr, backend)
    try:
        endpoint = server_from_string(reactor, description)
    except AddressError:
        raise
    except Exception as e:
        raise AddressError(f"{backend} port {portStr!r} is not a server endpoint string "
                           f"({type(e).__name__}: {e}); use one such as {_SERVER_EXAMPLE}") from None
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
