"""TLS for every network backend, in one protocol-neutral place.

A backend never builds TLS itself: it parses its port strings with
:func:`server_from_string` and its master addresses with
:func:`client_from_string` (drop-in replacements for Twisted's
``serverFromString`` / ``clientFromString``), and turns the address of a
listening port into a dialable one with :func:`dial_address`.  Plain strings
(``tcp:...``, ``unix:...``) go to Twisted unchanged.

**Master** (server) port strings, ``ssl:`` or ``tls:`` (the same meaning)::

    ssl:9989:privateKey=/etc/ww/master.key:certKey=/etc/ww/master.crt
    ssl:port=9989:interface=0.0.0.0:privateKey=KEY:certKey=CERT:caCertsFile=/etc/ww/workers-ca.pem

``port`` (or the first positional value), ``interface``, ``backlog`` as for
``tcp:``; ``privateKey`` (PEM, unencrypted; required), ``certKey`` (PEM
certificate, optionally followed by its intermediates; defaults to the
``privateKey`` file), ``extraCertChain`` (PEM intermediates).
``caCertsFile`` (PEM, one or more CA certificates) turns on mutual TLS: every
worker must present a client certificate signed by one of those CAs, or the
handshake fails and the master logs why, with the peer's address.  There is
no "verify if offered" mode: a check a client can skip protects nothing.

**Worker** (client) addresses, ``tls:`` only::

    tls:host=master.example:port=9989:caCertsFile=/etc/ww/ca.pem
    tls:host=10.0.0.5:port=9989:hostname=master.example:caCertsFile=CA:certificate=CERT:privateKey=KEY

The master's certificate is verified by default: against ``caCertsFile``
(without it: the CAs this system trusts) and against the host name (``hostname``,
default ``host``; an IP address must appear as an IP SAN).  ``certificate`` and
``privateKey`` (PEM) are this worker's client certificate for mutual TLS.
``verify=no`` skips every check of the master's certificate; it is logged as a
warning on every connection attempt.  ``timeout`` is the TCP connect timeout
in seconds.  Twisted's own ``ssl:`` client strings verify no host name, so a
worker refuses them and names the ``tls:`` form instead.

A handshake that fails reaches the backend as a lost connection whose reason
is :class:`TLSFailed` (a Twisted ``ConnectionLost``); its message says why
(``not signed by a CA in ...``, ``does not match the host name ...``,
``expired on ...``, ``requires a client certificate`` ...), and backends turn
it into the core :class:`~workerwire.errors.ConnectionLost` carrying that
message.  Files are read when the string is parsed, so a missing or
mismatched certificate is an :class:`~workerwire.errors.AddressError` at
configuration time.  No private key is ever logged; messages name files only.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint, clientFromString, serverFromString
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLServerConnectionCreator,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import AddressError

__all__ = [
    "SERVER_SCHEMES",
    "SERVER_KEYS",
    "CLIENT_KEYS",
    "TLSFailed",
    "is_tls",
    "server_from_string",
    "client_from_string",
    "dial_address",
    "client_address_for",
    "bound_port_of",
    "describe_peer",
    "add_client_options",
]

_log = Logger()

#: Port-string schemes that mean "TLS over TCP" on the master.
SERVER_SCHEMES = ("ssl", "tls")
#: Keys a master's ``ssl:``/``tls:`` port string accepts.
SERVER_KEYS = ("port", "interface", "backlog", "privateKey", "certKey", "extraCertChain", "caCertsFile")
#: Keys a worker's ``tls:`` address accepts.
CLIENT_KEYS = ("host", "port", "caCertsFile", "certificate", "privateKey", "verify", "hostname", "timeout")

_SERVER_EXAMPLE = "'ssl:9989:privateKey=master.key:certKey=master.crt'"
_CLIENT_EXAMPLE = "'tls:host=master.example:port=9989:caCertsFile=ca.pem'"
_YES = ("yes", "true", "on", "1")
_NO = ("no", "false", "off", "0")


class TLSFailed(net_error.ConnectionLost):
    """The TLS handshake (or certificate check) failed; the message says why.

    A transport-level reason: backends see it in ``connectionLost`` and turn
    it into the core :class:`~workerwire.errors.ConnectionLost`.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"TLS: {self.message}"


# -- endpoint-string syntax ------------------------------------------------------


def _split(description: str) -> tuple[str, list[str], dict[str, str]]:
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


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _scheme(description: Any) -> str:
    if not isinstance(description, str):
        return ""
    return description.split(":", 1)[0].strip().lower()


def is_tls(description: Any) -> bool:
    """True for an ``ssl:`` or ``tls:`` endpoint string (server or client)."""
    return _scheme(description) in SERVER_SCHEMES


def _bool(description: str, key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _YES:
        return True
    if v in _NO:
        return False
    raise AddressError(f"{description!r}: {key}={value!r} must be yes or no")


def _port_number(description: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise AddressError(f"{description!r}: port {value!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise AddressError(f"{description!r}: port {port} is outside 0..65535")
    return port


# -- certificates and keys -----------------------------------------------------


def _ssl_modules() -> tuple[Any, Any]:
    try:
        from OpenSSL import crypto  # noqa: F401
        from twisted.internet import ssl

        import service_identity  # noqa: F401
    except ImportError as e:
        raise AddressError(
            f"TLS needs pyOpenSSL and service_identity ({e}); install them with: pip install 'twisted[tls]'"
        ) from None
    return ssl, crypto


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise AddressError(f"cannot read the {what} file {path!r}: {e.strerror or e}") from None


def _load_certs(path: str, what: str) -> list[Any]:
    """Every PEM certificate in *path*, as ``cryptography`` certificates."""
    from cryptography import x509

    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise AddressError(f"the {what} file {path!r} holds no readable PEM certificate ({e})") from None
    return list(certs)


def _load_key(path: str) -> Any:
    from cryptography.hazmat.primitives import serialization

    data = _read(path, "private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise AddressError(f"the private key file {path!r} is encrypted; give an unencrypted PEM key "
                           "(protect it with file permissions)") from None
    except (ValueError, Exception):
        # Never echo the file's content: the message names the file only.
        raise AddressError(f"the private key file {path!r} holds no readable PEM private key") from None


@dataclass
class _Identity:
    """A certificate with its key and intermediates (``cryptography`` objects,
    which Twisted's ``CertificateOptions`` hands to pyOpenSSL as they are)."""

    key: Any
    cert: Any
    chain: list[Any]

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``CertificateOptions`` for presenting this identity."""
        return {"privateKey": self.key, "certificate": self.cert, "extraCertChain": list(self.chain)}


def _load_identity(cert_path: str, key_path: str, who: str) -> _Identity:
    _ssl_modules()
    from cryptography.hazmat.primitives import serialization

    key = _load_key(key_path)
    certs = _load_certs(cert_path, f"{who} certificate")
    leaf, chain = certs[0], certs[1:]
    ours = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    if ours != theirs:
        raise AddressError(f"the private key in {key_path!r} does not belong to the certificate in {cert_path!r}")
    return _Identity(key, leaf, chain)


def _trust_root(certs: list[Any]) -> Any:
    ssl, crypto = _ssl_modules()
    return ssl.trustRootFromCertificates([ssl.Certificate(crypto.X509.from_cryptography(c)) for c in certs])


def _min_version() -> Any:
    from twisted.internet.ssl import TLSVersion

    return TLSVersion.TLSv1_2


def _subject(cert: Any) -> str:
    try:
        return cert.subject.rfc4514_string() or "(empty subject)"
    except Exception:
        return "(unreadable subject)"


def _names(cert: Any) -> list[str]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)] + [
        f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)
    ]


# -- explaining a failed handshake -----------------------------------------------


def _openssl_reasons(value: BaseException) -> list[str]:
    """The reason strings of an ``OpenSSL.SSL.Error`` (``["certificate verify failed"]``)."""
    out: list[str] = []
    for item in (value.args[0] if value.args and isinstance(value.args[0], list) else []):
        if isinstance(item, tuple) and item:
            out.append(str(item[-1]))
    return out or [str(value) or type(value).__name__]


def _peer_chain(tls_connection: Any) -> list[Any]:
    """The peer's certificates (leaf first) as ``cryptography`` certificates."""
    if tls_connection is None:
        return []
    out: list[Any] = []
    try:
        leaf = tls_connection.get_peer_certificate()
        chain = tls_connection.get_peer_cert_chain() or []
    except Exception:
        return []
    for c in ([leaf] if leaf is not None else []) + list(chain):
        c = c.to_cryptography() if hasattr(c, "to_cryptography") else c
        if all(c != seen for seen in out):
            out.append(c)
    return out


def _explain_chain(chain: list[Any], cas: list[Any] | None, ca_source: str) -> str | None:
    """Why *chain* fails: expiry, then trust.  ``None`` when no reason is found."""
    if not chain:
        return None
    leaf = chain[0]
    now = datetime.datetime.now(datetime.timezone.utc)
    reasons = []
    for cert in chain:
        label = "it" if cert is leaf else f"the intermediate {_subject(cert)}"
        if cert.not_valid_after_utc < now:
            reasons.append(f"{label} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
        elif cert.not_valid_before_utc > now:
            reasons.append(f"{label} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    issuer = leaf.issuer.rfc4514_string()
    if cas is not None and not _anchored(chain, cas):
        reasons.append(f"it is not signed by a CA in {ca_source} (issuer {issuer}): untrusted CA")
    elif cas is None and not reasons:
        # OpenSSL refused the chain for another reason than its dates, and we
        # cannot read the system store to say more: the usual cause is trust.
        reasons.append(f"it is not signed by a CA in {ca_source} (issuer {issuer}), or the chain sent is "
                       "incomplete: untrusted CA (give the CA with caCertsFile=)")
    if not reasons:
        return None
    return f"{'; '.join(reasons)} [subject {_subject(leaf)}]"


def _anchored(chain: list[Any], cas: list[Any]) -> bool:
    cert = chain[0]
    pool = list(chain[1:])
    for _ in range(len(chain) + 1):
        for ca in cas:
            if _issued_by(cert, ca):
                return True
        parent = next((c for c in pool if _issued_by(cert, c)), None)
        if parent is None:
            return False
        pool.remove(parent)
        cert = parent
    return False


def _issued_by(cert: Any, issuer: Any) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:
        return False


_ALERTS_FROM_MASTER = {
    "certificate required": "the master requires a client certificate: give certificate= and privateKey=",
    "unknown ca": "the master does not trust this worker's client certificate (unknown CA)",
    "bad certificate": "the master rejected this worker's client certificate",
    "certificate expired": "the master says this worker's client certificate expired",
    "certificate unknown": "the master rejected this worker's client certificate",
    "handshake failure": "the master refused the handshake (no common TLS version or cipher?)",
    "protocol version": "the master refused this TLS version",
}
_ALERTS_FROM_WORKER = {
    "unknown ca": "the worker does not trust the master's certificate (unknown CA)",
    "bad certificate": "the worker rejected the master's certificate",
    "certificate expired": "the worker says the master's certificate expired",
    "certificate unknown": "the worker rejected the master's certificate",
}


def _alert(reasons: list[str], table: dict[str, str]) -> str | None:
    for reason in reasons:
        if "alert" in reason:
            for key, text in table.items():
                if key in reason:
                    return f"{text} ({reason})"
    return None


def _explain(side: "_Side", reason: Failure, tls_connection: Any, seen: list[Any]) -> str | None:
    """A sentence saying why a TLS link failed, or ``None`` if it did not fail in TLS."""
    from OpenSSL import SSL
    from service_identity import VerificationError

    value = reason.value
    if isinstance(value, TLSFailed):
        return value.message
    if isinstance(value, VerificationError):
        chain = _peer_chain(tls_connection)
        names = ", ".join(_names(chain[0])) if chain else "?"
        also = _explain_chain(chain, side.cas, side.ca_source)
        return (f"the master's certificate does not match the host name {side.hostname!r} "
                f"(it names {names or 'nothing'}): wrong host name" + (f"; also {also}" if also else ""))
    if not isinstance(value, SSL.Error):
        return None
    reasons = _openssl_reasons(value)
    text = "; ".join(reasons)
    if side.is_client:
        if "certificate verify failed" in text:
            why = _explain_chain(_peer_chain(tls_connection), side.cas, side.ca_source)
            return f"the master's certificate was rejected: {why or text}"
        alert = _alert(reasons, _ALERTS_FROM_MASTER)
        if alert:
            return alert
        return f"handshake with the master failed: {text}"
    if "peer did not return a certificate" in text or "certificate required" in text:
        return f"the worker sent no client certificate, and this port requires one ({side.ca_source}): {text}"
    if "certificate verify failed" in text:
        why = _explain_chain(seen or _peer_chain(tls_connection), side.cas, side.ca_source)
        return f"the worker's client certificate was rejected: {why or text}"
    alert = _alert(reasons, _ALERTS_FROM_WORKER)
    if alert:
        return alert
    if "wrong version number" in text or "http request" in text or "unexpected eof" in text:
        return f"the peer does not speak TLS (plain TCP or HTTP?): {text}"
    return f"handshake with the worker failed: {text}"


@dataclass
class _Side:
    is_client: bool
    where: str  # the port string (server) or the address (client), for logs
    hostname: str = ""
    cas: list[Any] | None = None  # None: the system's trust store, or no verification
    ca_source: str = "the system's trust store"


@implementer(IHandshakeListener)
class _Watch(ProtocolWrapper):
    """Sits between Twisted's TLS layer and the backend's protocol: passes
    everything through, and turns a failed handshake into :class:`TLSFailed`
    with an explanation (logged once, with the peer's address)."""

    factory: "_WatchFactory"

    def __init__(self, factory: Any, wrapped: Any):
        super().__init__(factory, wrapped)
        #: Certificates the peer presented, by depth (filled on the master when it verifies them).
        self.seen: dict[int, Any] = {}

    def handshakeCompleted(self) -> None:
        inner = self.wrappedProtocol
        if IHandshakeListener.providedBy(inner):
            inner.handshakeCompleted()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        side = self.factory.side
        try:
            handle = self.transport.getHandle() if self.transport is not None else None
            why = _explain(side, reason, handle, [self.seen[d] for d in sorted(self.seen)])
        except Exception as e:  # explaining must never break the disconnect
            why = None
            _log.warn("TLS: could not explain a failed handshake: {error}", error=repr(e))
        if why is not None:
            peer = _describe(self.transport)
            if side.is_client:
                _log.warn("TLS to the master at {address} ({peer}) failed: {why}", address=side.where, peer=peer,
                          why=why)
            else:
                _log.warn("TLS handshake with {peer} on {port} failed: {why}", peer=peer, port=side.where, why=why)
            reason = Failure(TLSFailed(why))
        ProtocolWrapper.connectionLost(self, reason)


def _describe(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except Exception:
        return "?"
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if host is None:
        return str(peer)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class _WatchFactory(WrappingFactory):
    protocol = _Watch  # type: ignore[assignment]
    noisy = False

    def __init__(self, wrapped: Any, side: _Side):
        super().__init__(wrapped)
        self.side = side

    def logPrefix(self) -> str:
        wrapped = self.wrappedFactory
        return wrapped.logPrefix() if hasattr(wrapped, "logPrefix") else type(wrapped).__name__


# -- the master: server endpoints ------------------------------------------------


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """Listens on TCP and speaks TLS with the options of an ``ssl:``/``tls:`` port string."""

    def __init__(self, reactor: Any, port: int, interface: str, backlog: int, options: Any, side: _Side):
        self._tcp = TCP4ServerEndpoint(reactor, port, backlog=backlog, interface=interface)
        self._port = port
        self.options = options
        self.side = side

    def listen(self, factory: Any) -> Any:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        creator = _ServerCreator(self.options, self.side.cas is not None)
        return self._tcp.listen(
            TLSMemoryBIOFactory(creator, False, _WatchFactory(factory, self.side)))  # type: ignore[arg-type]


@implementer(IOpenSSLServerConnectionCreator)
class _ServerCreator:
    """Twisted's server options, plus a verify callback that only *records*
    the client's certificates (OpenSSL's verdict stands) so that a rejection
    can be explained: OpenSSL keeps no peer certificate it refused."""

    def __init__(self, options: Any, verifying: bool):
        self.options = options
        self.verifying = verifying

    def serverConnectionForTLS(self, tls_protocol: Any) -> Any:
        connection = self.options.serverConnectionForTLS(tls_protocol)
        watch = getattr(tls_protocol, "wrappedProtocol", None)
        if self.verifying and isinstance(watch, _Watch):
            seen = watch.seen

            def record(conn: Any, cert: Any, errno: int, depth: int, ok: int) -> int:
                try:
                    seen[depth] = cert.to_cryptography() if hasattr(cert, "to_cryptography") else cert
                except Exception:
                    pass
                return ok

            connection.set_verify(connection.get_verify_mode(), record)
        return connection


def _server(reactor: Any, description: str) -> TLSServerEndpoint:
    ssl, _ = _ssl_modules()
    scheme, args, kw = _split(description)
    unknown = sorted(set(kw) - set(SERVER_KEYS))
    if unknown:
        raise AddressError(f"{description!r}: unknown key(s) {', '.join(unknown)}; "
                           f"an {scheme}: port takes {', '.join(SERVER_KEYS)}")
    if len(args) > 1 or (args and "port" in kw):
        raise AddressError(f"{description!r}: only the port may be given without a key, e.g. {_SERVER_EXAMPLE}")
    port_text = args[0] if args else kw.get("port")
    if port_text is None:
        raise AddressError(f"{description!r} names no port; use e.g. {_SERVER_EXAMPLE}")
    port = _port_number(description, port_text)
    try:
        backlog = int(kw.get("backlog", str(DEFAULT_BACKLOG)))
    except ValueError:
        raise AddressError(f"{description!r}: backlog must be a number") from None
    key_path = kw.get("privateKey")
    if not key_path:
        raise AddressError(f"{description!r}: a {scheme}: port needs privateKey=FILE (and certKey=FILE unless "
                           f"the key file also holds the certificate), e.g. {_SERVER_EXAMPLE}")
    identity = _load_identity(kw.get("certKey") or key_path, key_path, "master")
    if kw.get("extraCertChain"):
        identity.chain += _load_certs(kw["extraCertChain"], "extraCertChain")
    cas = None
    side = _Side(False, description)
    if kw.get("caCertsFile"):
        cas = _load_certs(kw["caCertsFile"], "caCertsFile")
        side.cas, side.ca_source = cas, f"caCertsFile {kw['caCertsFile']!r}"
    options = ssl.CertificateOptions(
        trustRoot=_trust_root(cas) if cas else None, raiseMinimumTo=_min_version(), **identity.options())
    return TLSServerEndpoint(reactor, port, kw.get("interface", ""), backlog, options, side)


def server_from_string(reactor: Any, description: str) -> Any:
    """A server endpoint for *description*: ``ssl:``/``tls:`` as this module
    says, anything else through Twisted's ``serverFromString``.

    :raises AddressError: a TLS string with unknown keys, a missing port or key,
        or unreadable / mismatched certificate files.
    """
    if is_tls(description):
        return _server(reactor, description)
    return serverFromString(reactor, with_default_backlog(description))


def parse_server_port(reactor: Any, portStr: Any, backend: str) -> Any:
    """The server endpoint a network backend listens on for *portStr*; nothing
    listens yet.  A bare number ``9989`` means ``tcp:9989`` (as in Buildbot's
    ``c['protocols']``); ``ssl:``/``tls:`` go through this module.

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
    nothing connects yet.  ``tls:`` goes through this module.

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


#: Listen backlog used when a TCP port string names none.  Twisted's default of
#: 50 drops connections when hundreds of workers reconnect at once (a master
#: restart), and a dropped PB handshake then waits for its login timeout.
DEFAULT_BACKLOG = 1024


def with_default_backlog(description: str) -> str:
    """*description* with ``backlog=DEFAULT_BACKLOG`` added to a ``tcp:``/``tcp6:``
    string that sets no backlog of its own."""
    scheme = _scheme(description)
    if scheme not in ("tcp", "tcp6") or "backlog=" in description:
        return description
    return f"{description}:backlog={DEFAULT_BACKLOG}"


# -- the worker: client endpoints --------------------------------------------------


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint:
    """Dials TCP, then TLS with the master's certificate verified (unless ``verify=no``).

    ``connect`` fires with the backend's own protocol, as a plain TCP
    endpoint would.
    """

    def __init__(self, reactor: Any, host: str, port: int, timeout: float, creator: Any, side: _Side,
                 verify: bool):
        self._tcp = HostnameEndpoint(reactor, host, port, timeout=timeout)
        self.creator = creator
        self.side = side
        self.verify = verify

    def connect(self, factory: Any) -> Any:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        if not self.verify:
            _log.warn("TLS to the master at {address}: NOT verifying the master's certificate (verify=no); "
                      "anyone on the network path can pose as the master", address=self.side.where)
        tls_factory = TLSMemoryBIOFactory(self.creator, True, _WatchFactory(factory, self.side))  # type: ignore[arg-type]
        connecting = self._tcp.connect(tls_factory)  # type: ignore[arg-type]
        return connecting.addCallback(lambda tls: tls.wrappedProtocol.wrappedProtocol)


def _client(reactor: Any, description: str) -> TLSClientEndpoint:
    ssl, _ = _ssl_modules()
    _, args, kw = _split(description)
    unknown = sorted(set(kw) - set(CLIENT_KEYS))
    if unknown:
        raise AddressError(f"{description!r}: unknown key(s) {', '.join(unknown)}; "
                           f"a tls: address takes {', '.join(CLIENT_KEYS)}")
    if len(args) > 2:
        raise AddressError(f"{description!r}: too many values without a key; use e.g. {_CLIENT_EXAMPLE}")
    positional = dict(zip(("host", "port"), args))
    for key in positional:
        if key in kw:
            raise AddressError(f"{description!r}: {key} given twice")
    kw = {**positional, **kw}
    host, port_text = kw.get("host"), kw.get("port")
    if not host or port_text is None:
        raise AddressError(f"{description!r} needs host= and port=, e.g. {_CLIENT_EXAMPLE}")
    port = _port_number(description, port_text)
    try:
        timeout = float(kw.get("timeout", "30"))
    except ValueError:
        raise AddressError(f"{description!r}: timeout must be a number of seconds") from None
    verify = _bool(description, "verify", kw.get("verify", "yes"))
    hostname = kw.get("hostname") or host
    cert_path, key_path = kw.get("certificate"), kw.get("privateKey")
    if bool(cert_path) != bool(key_path):
        raise AddressError(f"{description!r}: a client certificate needs both certificate= and privateKey=")
    identity = _load_identity(cert_path, key_path, "client") if cert_path and key_path else None
    side = _Side(True, description, hostname=hostname)
    if not verify:
        options = ssl.CertificateOptions(raiseMinimumTo=_min_version(), **(identity.options() if identity else {}))
        return TLSClientEndpoint(reactor, host, port, timeout, options, side, verify=False)
    if kw.get("caCertsFile"):
        cas = _load_certs(kw["caCertsFile"], "caCertsFile")
        trust = _trust_root(cas)
        side.cas, side.ca_source = cas, f"caCertsFile {kw['caCertsFile']!r}"
    else:
        trust = ssl.platformTrust()
    extra: dict[str, Any] = {"raiseMinimumTo": _min_version(), **(identity.options() if identity else {})}
    try:
        creator = ssl.optionsForClientTLS(hostname, trustRoot=trust, extraCertificateOptions=extra)
    except Exception as e:
        raise AddressError(f"{description!r}: {type(e).__name__}: {e}") from None
    return TLSClientEndpoint(reactor, host, port, timeout, creator, side, verify=True)


def client_from_string(reactor: Any, description: str) -> Any:
    """A client endpoint for *description*: ``tls:`` as this module says,
    anything else through Twisted's ``clientFromString``.

    :raises AddressError: an ``ssl:`` client string (it would verify no host
        name), or a ``tls:`` string with unknown keys or unreadable files.
    """
    scheme = _scheme(description)
    if scheme == "ssl":
        raise AddressError(f"{description!r}: a worker dials a TLS master with tls:host=H:port=N "
                           f"(which verifies the master's certificate and host name), e.g. {_CLIENT_EXAMPLE}")
    if scheme == "tls":
        return _client(reactor, description)
    return clientFromString(reactor, description)


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
        return f"tcp:host={_escape(ip)}:port={host.port}"
    if isinstance(host, UNIXAddress):
        name = host.name.decode() if isinstance(host.name, bytes) else str(host.name)
        return f"unix:path={_escape(name)}"
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
    peer = transport.getPeer()
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if isinstance(host, str) and host:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(peer, "name", None) or getattr(transport.getHost(), "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    return f"unix:{name or '?'}" if isinstance(peer, UNIXAddress) or name else str(peer)


def dial_address(port_str: str, address: str) -> str:
    """The address a worker dials for a port listening on *port_str*.

    For an ``ssl:``/``tls:`` port, the backend's plain address of the bound
    socket (``tcp:host=127.0.0.1:port=N``, ``tcp:host=\\:\\:1:port=N``)
    becomes ``tls:host=127.0.0.1:port=N``: it verifies against the system's
    trust store and the host name, so a worker with a private CA adds
    ``caCertsFile=`` (:func:`add_client_options`).  Other addresses are
    returned unchanged.
    """
    if not is_tls(port_str):
        return address
    scheme, _, kw = _split(address)
    if scheme not in ("tcp", "tcp6") or "host" not in kw or "port" not in kw:
        return address
    return f"tls:host={_escape(kw['host'])}:port={kw['port']}"


def add_client_options(
    address: str,
    *,
    ca_file: str | None = None,
    certificate: str | None = None,
    private_key: str | None = None,
    verify: bool | None = None,
) -> str:
    """*address* with TLS client keys added (for command-line options).

    :raises AddressError: *address* is not a ``tls:`` address, or already
        gives one of the keys.
    """
    wanted = {"caCertsFile": ca_file, "certificate": certificate, "privateKey": private_key,
              "verify": None if verify is None else ("yes" if verify else "no")}
    given: dict[str, str] = {k: v for k, v in wanted.items() if v is not None}
    if not given:
        return address
    if _scheme(address) != "tls":
        raise AddressError(f"TLS options need a tls: master address such as {_CLIENT_EXAMPLE}, not {address!r}")
    _, _, kw = _split(address)
    both = sorted(set(given) & set(kw))
    if both:
        raise AddressError(f"{address!r} already gives {', '.join(both)}")
    return address + "".join(f":{k}={_escape(v)}" for k, v in given.items())
