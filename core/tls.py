"""TLS for every network backend, in one protocol-neutral place.

A backend never builds TLS itself: it parses its port strings with
:func:`workerwire.endpoints.server_from_string` and its master addresses with
:func:`workerwire.endpoints.client_from_string` (drop-in replacements for
Twisted's ``serverFromString`` / ``clientFromString``, which hand ``ssl:`` and
``tls:`` strings to :func:`tls_server_endpoint` / :func:`tls_client_endpoint`
here), and turns the address of a listening port into a dialable one with
:func:`dial_address`.  Plain strings (``tcp:...``, ``unix:...``) go to Twisted.

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
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint
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

from .addresses import DEFAULT_BACKLOG, describe_peer, escape_value, parse_bool, port_number, scheme_of, split_description
from .errors import AddressError

__all__ = [
    "SERVER_SCHEMES",
    "SERVER_KEYS",
    "CLIENT_KEYS",
    "CLIENT_EXAMPLE",
    "TLSFailed",
    "is_tls",
    "tls_server_endpoint",
    "tls_client_endpoint",
    "dial_address",
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
CLIENT_EXAMPLE = "'tls:host=master.example:port=9989:caCertsFile=ca.pem'"


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


def is_tls(description: Any) -> bool:
    """True for an ``ssl:`` or ``tls:`` endpoint string (server or client)."""
    return scheme_of(description) in SERVER_SCHEMES


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
    "certificate required": ("the master requires a client certificate: give certificate= and privateKey= in the "
                             "address (workerwire worker: --client-cert and --client-key)"),
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
            handle = getattr(self.transport, "getHandle", lambda: None)()
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
        return describe_peer(transport)
    except Exception:
        return "?"


class _WatchFactory(WrappingFactory):
    protocol = _Watch
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
            TLSMemoryBIOFactory(creator, False, _WatchFactory(factory, self.side)))


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


def tls_server_endpoint(reactor: Any, description: str) -> TLSServerEndpoint:
    """The endpoint of a master's ``ssl:``/``tls:`` port string (see the module docstring)."""
    ssl, _ = _ssl_modules()
    scheme, args, kw = split_description(description)
    unknown = sorted(set(kw) - set(SERVER_KEYS))
    if unknown:
        raise AddressError(f"{description!r}: unknown key(s) {', '.join(unknown)}; "
                           f"an {scheme}: port takes {', '.join(SERVER_KEYS)}")
    if len(args) > 1 or (args and "port" in kw):
        raise AddressError(f"{description!r}: only the port may be given without a key, e.g. {_SERVER_EXAMPLE}")
    port_text = args[0] if args else kw.get("port")
    if port_text is None:
        raise AddressError(f"{description!r} names no port; use e.g. {_SERVER_EXAMPLE}")
    port = port_number(description, port_text)
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
        tls_factory = TLSMemoryBIOFactory(self.creator, True, _WatchFactory(factory, self.side))
        connecting: Deferred[Any] = self._tcp.connect(tls_factory)

        def inner(tls: Any) -> Any:
            return tls.wrappedProtocol.wrappedProtocol

        return connecting.addCallback(inner)


def tls_client_endpoint(reactor: Any, description: str) -> TLSClientEndpoint:
    """The endpoint of a worker's ``tls:`` address (see the module docstring)."""
    ssl, _ = _ssl_modules()
    _, args, kw = split_description(description)
    unknown = sorted(set(kw) - set(CLIENT_KEYS))
    if unknown:
        raise AddressError(f"{description!r}: unknown key(s) {', '.join(unknown)}; "
                           f"a tls: address takes {', '.join(CLIENT_KEYS)}")
    if len(args) > 2:
        raise AddressError(f"{description!r}: too many values without a key; use e.g. {CLIENT_EXAMPLE}")
    positional = dict(zip(("host", "port"), args))
    for key in positional:
        if key in kw:
            raise AddressError(f"{description!r}: {key} given twice")
    kw = {**positional, **kw}
    host, port_text = kw.get("host"), kw.get("port")
    if not host or port_text is None:
        raise AddressError(f"{description!r} needs host= and port=, e.g. {CLIENT_EXAMPLE}")
    port = port_number(description, port_text)
    try:
        timeout = float(kw.get("timeout", "30"))
    except ValueError:
        raise AddressError(f"{description!r}: timeout must be a number of seconds") from None
    verify = parse_bool(description, "verify", kw.get("verify", "yes"))
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


# -- addresses -----------------------------------------------------------------------


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
    scheme, _, kw = split_description(address)
    if scheme not in ("tcp", "tcp6") or "host" not in kw or "port" not in kw:
        return address
    return f"tls:host={escape_value(kw['host'])}:port={kw['port']}"


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
    if scheme_of(address) != "tls":
        raise AddressError(f"TLS options need a tls: master address such as {CLIENT_EXAMPLE}, not {address!r}")
    _, _, kw = split_description(address)
    both = sorted(set(given) & set(kw))
    if both:
        raise AddressError(f"{address!r} already gives {', '.join(both)}")
    return address + "".join(f":{k}={escape_value(v)}" for k, v in given.items())
