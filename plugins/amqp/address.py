r"""Address strings of the amqp backend.

A master's port string names a broker and a pool, and optionally this
master's name within the pool::

    amqp:url=amqp\://user:pw@broker\:5672/vhost:pool=ci:master=m1
    amqp:ci            (positional: the pool; the broker from $WORKERWIRE_AMQP_URL)
    amqp:ci/m1         (positional: pool/master, as ``Registration.getPort()`` spells it)

``pool`` omitted or ``0`` picks a fresh pool of this listener (as TCP port 0
picks a free port); ``master`` omitted picks a fresh unique master name.  The
pair ``pool/master`` is what a master holds exclusively (``getPort()``): a
second master with the same name in a pool is "port in use".  ``url`` omitted
is ``$WORKERWIRE_AMQP_URL``, else ``amqp://guest:guest@127.0.0.1:5672/%2F``.

A worker dials ``amqp:url=...:pool=ci`` (``Registration.getAddress()``): the
broker and the pool, never a master.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pika

from workerwire.addresses import escape_value, split_description
from workerwire.errors import AddressError

__all__ = ["BrokerURL", "PortSpec", "DialSpec", "parse_port", "parse_dial", "default_url", "URL_ENV",
           "queue_name", "NAME_RE"]

#: Environment variable naming the default broker.
URL_ENV = "WORKERWIRE_AMQP_URL"
_FALLBACK_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: Pool and master names: what may appear in a queue name between dots.
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EXAMPLE = r"amqp:url=amqp\://user:pw@broker\:5672/%2F:pool=ci"


def default_url() -> str:
    return os.environ.get(URL_ENV) or _FALLBACK_URL


@dataclass(frozen=True)
class BrokerURL:
    """An AMQP URL: where the broker is, and the transport's credentials."""

    url: str

    def parameters(self) -> pika.URLParameters:
        return pika.URLParameters(self.url)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (5671 if parts.scheme == "amqps" else 5672)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "amqps"

    def redacted(self) -> str:
        """The URL without its password, for logs and peer names."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username}:***@{parts.hostname}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def moved_to(self, host: str, port: int) -> "BrokerURL":
        """The same URL (credentials, vhost, query) at another host and port."""
        parts = urlsplit(self.url)
        user = ""
        if parts.username is not None:
            user = parts.username + (f":{parts.password}" if parts.password is not None else "") + "@"
        return BrokerURL(urlunsplit(parts._replace(netloc=f"{user}{host}:{port}")))

    def escaped(self) -> str:
        return escape_value(self.url)


def _check_url(description: str, url: str) -> BrokerURL:
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise AddressError(f"{description!r}: url must be an amqp:// or amqps:// URL with a host, e.g. {_EXAMPLE!r}")
    try:
        pika.URLParameters(url)
        parts.port  # noqa: B018 (raises for a bad port)
    except Exception as e:
        raise AddressError(f"{description!r}: bad AMQP URL: {e}") from None
    return BrokerURL(url)


def _check_name(description: str, what: str, name: str) -> str:
    if not NAME_RE.match(name):
        raise AddressError(
            f"{description!r}: {what} {name!r} must be 1-64 letters, digits, '_' or '-'")
    return name


@dataclass(frozen=True)
class PortSpec:
    """A master's membership in a pool, parsed from its port string."""

    broker: BrokerURL
    pool: str | None  # None: a fresh pool
    master: str | None  # None: a fresh master name

    def bound(self) -> "PortSpec":
        """This spec with fresh names filled in."""
        return PortSpec(self.broker, self.pool or f"p-{uuid.uuid4().hex[:12]}",
                        self.master or f"m-{uuid.uuid4().hex[:12]}")


@dataclass(frozen=True)
class DialSpec:
    """What a worker dials: a broker and a pool."""

    broker: BrokerURL
    pool: str

    def address(self) -> str:
        return f"amqp:url={self.broker.escaped()}:pool={self.pool}"


#: ``url=`` runs to the next ``:pool=`` / ``:master=`` (or the end), so the
#: URL's own ``:`` may be escaped (``\\:``) or not.
_URL_PART = re.compile(r"(?:^|(?<=:))url=(?P<url>.*?)(?=:(?:pool|master)=|$)")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split(description: object, what: str) -> tuple[list[str], dict[str, str], str]:
    if not isinstance(description, str) or not description:
        raise AddressError(f"{what} must be a non-empty string such as {_EXAMPLE!r}")
    if description.split(":", 1)[0].lower() != "amqp":
        raise AddressError(f"{description!r} is not an amqp {what} (expected e.g. {_EXAMPLE!r})")
    rest = description.split(":", 1)[1] if ":" in description else ""
    url = None
    m = _URL_PART.search(rest)
    if m is not None:
        url = _unescape(m["url"])
        rest = (rest[:m.start()] + rest[m.end():]).strip(":").replace("::", ":")
    _, args, kwargs = split_description("amqp:" + rest) if rest else ("amqp", [], {})
    if url is not None:
        if "url" in kwargs:
            raise AddressError(f"{description!r}: url given twice")
        kwargs["url"] = url
    return args, kwargs, description


def parse_port(description: object) -> PortSpec:
    """Parse a master's port string.

    :raises AddressError: not an amqp port string; says what would be valid.
    """
    args, kwargs, text = _split(description, "port string")
    unknown = set(kwargs) - {"url", "pool", "master"}
    if unknown:
        raise AddressError(f"{text!r}: unknown key(s) {sorted(unknown)}; valid: url, pool, master")
    if len(args) > 1:
        raise AddressError(f"{text!r}: at most one positional part (POOL or POOL/MASTER)")
    pool = kwargs.get("pool")
    master = kwargs.get("master")
    if args:
        if pool is not None:
            raise AddressError(f"{text!r}: the pool is given twice")
        pool, _, named = args[0].partition("/")
        if named:
            if master is not None:
                raise AddressError(f"{text!r}: the master name is given twice")
            master = named
    if pool in ("", "0"):
        pool = None
    broker = _check_url(text, kwargs.get("url") or default_url())
    return PortSpec(
        broker,
        None if pool is None else _check_name(text, "pool", pool),
        None if master is None else _check_name(text, "master", master),
    )


def parse_dial(description: object) -> DialSpec:
    """Parse a worker's address (``amqp:url=...:pool=P`` or ``amqp:P``).

    :raises AddressError: not an amqp worker address.
    """
    args, kwargs, text = _split(description, "address")
    unknown = set(kwargs) - {"url", "pool"}
    if unknown:
        raise AddressError(f"{text!r}: unknown key(s) {sorted(unknown)}; a worker address has url and pool")
    if len(args) > 1 or (args and "pool" in kwargs):
        raise AddressError(f"{text!r}: name the pool once")
    pool = kwargs.get("pool") or (args[0] if args else None)
    if not pool or pool == "0":
        raise AddressError(f"{text!r}: a worker address names its pool, e.g. {_EXAMPLE!r}")
    return DialSpec(_check_url(text, kwargs.get("url") or default_url()), _check_name(text, "pool", pool))


def queue_name(pool: str, kind: str, name: str | None = None) -> str:
    """``workerwire.<pool>.<kind>[.<name>]``; worker names are free text, so
    they are hex-encoded when they hold anything but safe characters (by
    their SHA-256 when longer than 64 bytes)."""
    if name is None:
        return f"workerwire.{pool}.{kind}"
    if not NAME_RE.match(name):
        raw = name.encode("utf-8")
        # queue names are at most 255 bytes: long names go by their digest
        name = "x" + raw.hex() if len(raw) <= 64 else "h" + hashlib.sha256(raw).hexdigest()
    return f"workerwire.{pool}.{kind}.{name}"
