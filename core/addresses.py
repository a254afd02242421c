"""Endpoint strings and addresses, for every network backend: the syntax of
Twisted endpoint strings, the listen backlog a master gets by default, the
client address of a bound port and how a peer is described.

Nothing here knows TLS (:mod:`workerwire.tls`) or builds endpoints
(:mod:`workerwire.endpoints`); both build on it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from .errors import AddressError

__all__ = [
    "split_description",
    "describe_address",
    "escape_value",
    "scheme_of",
    "parse_bool",
    "port_number",
    "DEFAULT_BACKLOG",
    "with_default_backlog",
    "client_address_for",
    "bound_port_of",
    "describe_peer",
]

_YES = ("yes", "true", "on", "1")
_NO = ("no", "false", "off", "0")


# -- endpoint-string syntax ------------------------------------------------------


def split_description(description: str) -> tuple[str, list[str], dict[str, str]]:
    r"""``scheme:a:k=v`` -> ``("scheme", ["a"], {"k": "v"})``; ``\`` escapes ``:``, ``=`` and itself."""
    parts: list[list[str]] = [[]]
    current: list[str] = []
    i = 0
    while i < len(description):
        ch = description[i]
        if ch == "\\" and i + 1 < len(description):
            current.append(description[i + 1])
            i += 2
            continue
        if ch == ":":
            parts[-1].append("".join(current))
            parts.append([])
            current = []
        elif ch == "=" and len(parts[-1]) == 0:
            parts[-1].append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts[-1].append("".join(current))
    scheme = parts[0][0] if len(parts[0]) == 1 else ":".join(parts[0])
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in parts[1:]:
        if len(part) == 1:
            args.append(part[0])
        else:
            key, value = part[0], "=".join(part[1:])
            if key in kwargs:
                raise AddressError(f"{description!r}: key {key!r} given twice")
            kwargs[key] = value
    return scheme, args, kwargs


def escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def scheme_of(description: Any) -> str:
    if not isinstance(description, str):
        return ""
    return description.split(":", 1)[0].strip().lower()


def parse_bool(description: str, key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _YES:
        return True
    if v in _NO:
        return False
    raise AddressError(f"{description!r}: {key}={value!r} must be yes or no")


def port_number(description: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise AddressError(f"{description!r}: port {value!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise AddressError(f"{description!r}: port {port} is outside 0..65535")
    return port


# -- the listen backlog -----------------------------------------------------------


#: Listen backlog used when a TCP port string names none.  Twisted's default of
#: 50 drops connections when hundreds of workers reconnect at once (a master
#: restart), and a dropped PB handshake then waits for its login timeout.
DEFAULT_BACKLOG = 1024


def with_default_backlog(description: str) -> str:
    """*description* with ``backlog=DEFAULT_BACKLOG`` added to a ``tcp:``/``tcp6:``
    string that sets no backlog of its own."""
    scheme = scheme_of(description)
    if scheme not in ("tcp", "tcp6") or "backlog=" in description:
        return description
    return f"{description}:backlog={DEFAULT_BACKLOG}"


# -- addresses -----------------------------------------------------------------------


def client_address_for(host: Any) -> str:
    """The client endpoint string that reaches a listening port whose address
    is *host* (``port.getHost()``), the same for every backend.

    A wildcard interface is reached through loopback:
    ``tcp:host=127.0.0.1:port=N``, and ``tcp:host=\\:\\:1:port=N`` for IPv6
    (Twisted's ``tcp:`` client endpoint takes IPv6 literals; there is no
    ``tcp6:`` client endpoint); a UNIX socket is ``unix:path=PATH``.

    :raises AddressError: *host* is no TCP or UNIX address.
    """
    if isinstance(host, IPv4Address):
        ip = host.host if host.host not in ("0.0.0.0", "") else "127.0.0.1"
        return f"tcp:host={ip}:port={host.port}"
    if isinstance(host, IPv6Address):
        ip = host.host if host.host not in ("::", "") else "::1"
        return f"tcp:host={escape_value(ip)}:port={host.port}"
    if isinstance(host, UNIXAddress):
        name = host.name.decode() if isinstance(host.name, bytes) else str(host.name)
        return f"unix:path={escape_value(name)}"
    raise AddressError(f"cannot make a client address for {host!r}")


def bound_port_of(host: Any) -> int | str:
    """What ``Registration.getPort()`` says of a port bound at *host*
    (``port.getHost()``): the TCP port number, or a UNIX socket's path."""
    port = getattr(host, "port", None)
    if isinstance(port, int):
        return port
    name = getattr(host, "name", None)
    if isinstance(name, bytes):
        return name.decode("utf-8", "surrogateescape")
    return str(name) if name else str(host)


def describe_peer(transport: Any) -> str:
    """``Connection.get_peer()`` of a connection on *transport*, the same for
    every backend: ``host:port``, ``[v6 address]:port``, or ``unix:PATH``
    (a UNIX socket's peer is usually anonymous: then the path is the
    listening socket's)."""
    return describe_address(transport.getPeer(), lambda: getattr(transport.getHost(), "name", None))


def describe_address(addr: Any, unix_name: Any = None) -> str:
    """``host:port``, ``[v6 address]:port`` or ``unix:PATH`` of a peer address
    (as :func:`describe_peer` spells it; for log lines before a transport
    exists).  *unix_name*, if given, is called for a UNIX address without a
    name (an anonymous peer)."""
    host, port = getattr(addr, "host", None), getattr(addr, "port", None)
    if isinstance(host, str) and host:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(addr, "name", None) or (unix_name() if unix_name is not None else None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    return f"unix:{name or '?'}" if isinstance(addr, UNIXAddress) or name else str(addr)
