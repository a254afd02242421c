"""TLS on every network backend (``workerwire.tls``), over real loopback sockets.

Each test runs once per registered backend whose ``Backend.network`` is true;
no backend is named here.  The CA, certificates and keys are minted at run
time with ``cryptography``: a good chain, a certificate for another host, one
from an untrusted CA, an expired one, client certificates from the right and a
wrong CA, and a self-signed master for the explicit ``verify=no`` opt-out.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pytest_twisted import ensureDeferred as async_test
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.logger import formatEvent, globalLogPublisher

from workerwire import LinkOptions, backend_names, load_backend
from workerwire.conformance import Harness, within
from workerwire.errors import AddressError, ConnectionLost
from workerwire.endpoints import client_from_string, server_from_string
from workerwire.tls import add_client_options, dial_address

NETWORK_BACKENDS = [name for name in backend_names() if load_backend(name).network]


# -- a CA and certificates, minted per test session --------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any, password: bytes | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class CA:
    """A self-signed certificate authority that issues leaf certificates."""

    def __init__(self, name: str):
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(days=1))
            .not_valid_after(_now() + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, names: tuple[str, ...] = ("localhost", "127.0.0.1"), *, client: bool = False,
              valid_days: tuple[int, int] = (-1, 30)) -> tuple[bytes, bytes]:
        """``(certificate PEM, key PEM)`` for *names* (DNS names or IP addresses)."""
        key = _key()
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() + datetime.timedelta(days=valid_days[0]))
            .not_valid_after(_now() + datetime.timedelta(days=valid_days[1]))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return _cert_pem(cert), _key_pem(key)


def _self_signed(name: str) -> tuple[bytes, bytes]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1)).not_valid_after(_now() + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


class PKI:
    """Files on disk: ``ca``, ``other_ca`` and ``(cert, key)`` path pairs."""

    def __init__(self, root: Path):
        self.root = root
        ca, other = CA("workerwire test CA"), CA("some other CA")
        self.ca = self._write("ca.pem", _cert_pem(ca.cert))
        self.other_ca = self._write("other-ca.pem", _cert_pem(other.cert))
        self.master = self._pair("master", ca.issue())
        self.master_other_host = self._pair("master-other-host", ca.issue(("elsewhere.example",)))
        self.master_untrusted = self._pair("master-untrusted", other.issue())
        self.master_expired = self._pair("master-expired", ca.issue(valid_days=(-30, -1)))
        self.master_self_signed = self._pair("master-self-signed", _self_signed("localhost"))
        self.worker = self._pair("worker", ca.issue(("worker-1",), client=True))
        self.worker_other_ca = self._pair("worker-other-ca", other.issue(("worker-1",), client=True))

    def _write(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.write_bytes(data)
        path.chmod(0o600)
        return str(path)

    def _pair(self, stem: str, pems: tuple[bytes, bytes]) -> tuple[str, str]:
        return self._write(f"{stem}.crt", pems[0]), self._write(f"{stem}.key", pems[1])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


def ssl_port(pair: tuple[str, str], ca: str | None = None) -> str:
    port = f"ssl:port=0:interface=127.0.0.1:privateKey={pair[1]}:certKey={pair[0]}"
    return port + (f":caCertsFile={ca}" if ca else "")


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(params=NETWORK_BACKENDS)
def harness(request: pytest.FixtureRequest, reactor: Any, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(load_backend(request.param), LinkOptions(keepalive_interval=None), reactor, str(tmp_path))
    yield h
    pytest_twisted.blockon(ensureDeferred(h.close()))


class Log:
    """Records log events; :meth:`wait_for` fires on the first matching one."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], Deferred[dict[str, Any]]]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        for item in list(self._waiters):
            if item[0](event):
                self._waiters.remove(item)
                item[1].callback(event)

    def texts(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> Deferred[dict[str, Any]]:
        for event in self.events:
            if predicate(event):
                d: Deferred[dict[str, Any]] = Deferred()
                d.callback(event)
                return d
        d = Deferred()
        self._waiters.append((predicate, d))
        return d

    def failures(self) -> list[str]:
        return [formatEvent(e) + "\n" + e["log_failure"].getTraceback() for e in self.events if e.get("log_failure")]


@pytest.fixture
def log() -> Iterator[Log]:
    recorder = Log()
    globalLogPublisher.addObserver(recorder)
    yield recorder
    globalLogPublisher.removeObserver(recorder)
    assert not recorder.failures(), recorder.failures()[0]


def master_tls_failure(event: dict[str, Any]) -> bool:
    return event.get("log_format", "").startswith("TLS handshake with {peer}")


async def refused(harness: Harness, address: str, name: str = "w1") -> ConnectionLost:
    """Dial *address* once as worker *name*; the login must fail with ConnectionLost."""
    connector, _ = harness.connector(address, name, "pw-1")
    with pytest.raises(ConnectionLost) as caught:
        await within(connector.probe(), harness.reactor, what="the TLS login attempt to fail")
    assert not harness.master.offers, "the master must not see a worker whose TLS handshake failed"
    return caught.value


async def run_echo(harness: Harness, address: str) -> None:
    """A worker dials *address*, logs in and runs a command end to end."""
    handle = await harness.start_worker("w1", "pw-1", address=address)
    rc = await harness.run(handle, "echo", {"secure": True, "text": "über TLS"})
    assert rc.completions == [None]
    assert rc.values("echo") == [{"secure": True, "text": "über TLS"}]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", handle.conn.get_peer())


# -- good chains ---------------------------------------------------------------------


@async_test
async def test_good_chain_runs_a_command(harness: Harness, pki: PKI, log: Log) -> None:
    reg = await harness.register("w1", "pw-1", ssl_port(pki.master))
    assert re.fullmatch(r"tls:host=127\.0\.0\.1:port=\d+", reg.getAddress())
    assert reg.getAddress().endswith(f":port={reg.getPort()}")
    await run_echo(harness, add_client_options(reg.getAddress(), ca_file=pki.ca))


@async_test
async def test_large_output_and_many_updates_arrive_intact_over_tls(harness: Harness, pki: PKI, log: Log) -> None:
    from workerwire.conformance.scripted_worker import blob_text, stream_line

    reg = await harness.register("w1", "pw-1", ssl_port(pki.master))
    handle = await harness.start_worker("w1", "pw-1", address=add_client_options(reg.getAddress(), ca_file=pki.ca))
    size = 8 * 1024 * 1024
    blob = await harness.run(handle, "blob", {"size": size})
    assert blob.completions == [None] and blob.text("stdout") == blob_text(size)
    stream = await harness.run(handle, "stream", {"count": 5000, "batch": 7})
    assert stream.text("stdout") == "".join(stream_line(i) for i in range(5000))


@async_test
async def test_tls_logins_over_the_caps_wait_their_turn_through_the_tls_layer(harness: Harness, pki: PKI,
                                                                             log: Log) -> None:
    """The waiting room pauses the TCP transport under TLS's wrapper and hands
    the connection, handshake and all, to the backend's protocol when served."""
    harness.use_options(harness.options.with_(max_unauthenticated=2, max_unauthenticated_per_host=1))
    names = [f"t{i}" for i in range(8)]
    regs = [await harness.register(n, f"pw-{n}", ssl_port(pki.master)) for n in names]
    address = add_client_options(regs[0].getAddress(), ca_file=pki.ca)
    handles = await within(gatherResults([ensureDeferred(harness.start_worker(n, f"pw-{n}", address=address))
                                          for n in names]), harness.reactor,
                           what="8 TLS workers through caps of 2 (1 per host)")
    guard = harness.listener.login_guard  # type: ignore[attr-defined]
    assert len(harness.listener.connections()) == 8
    assert guard.stats["closed_at_cap"] == 0 and guard.stats["waited"] > 0, dict(guard.stats)
    for handle in handles:  # every one of them works end to end
        rc = await harness.run(handle, "echo", {"n": handle.name})
        assert rc.values("echo") == [{"n": handle.name}]


@async_test
async def test_tls_scheme_on_the_master_means_the_same(harness: Harness, pki: PKI, log: Log) -> None:
    reg = await harness.register("w1", "pw-1", "tls" + ssl_port(pki.master)[3:])
    await run_echo(harness, f"{reg.getAddress()}:caCertsFile={pki.ca}:hostname=localhost")


@async_test
async def test_client_certificate_from_the_right_ca_is_accepted(harness: Harness, pki: PKI, log: Log) -> None:
    reg = await harness.register("w1", "pw-1", ssl_port(pki.master, ca=pki.ca))
    address = add_client_options(reg.getAddress(), ca_file=pki.ca, certificate=pki.worker[0],
                                 private_key=pki.worker[1])
    await run_echo(harness, address)


@async_test
async def test_opt_out_connects_to_a_self_signed_master(harness: Harness, pki: PKI, log: Log) -> None:
    reg = await harness.register("w1", "pw-1", ssl_port(pki.master_self_signed))
    # Verified (the default), the self-signed master is refused ...
    error = await refused(harness, add_client_options(reg.getAddress(), ca_file=pki.ca))
    assert "not signed by a CA" in str(error)
    # ... and with the explicit opt-out it is accepted, loudly.
    await run_echo(harness, add_client_options(reg.getAddress(), verify=False))
    assert any("NOT verifying the master's certificate" in t for t in log.texts())


# -- the worker refuses a master it cannot verify -----------------------------------


@async_test
async def test_wrong_host_name_is_refused(harness: Harness, pki: PKI, log: Log) -> None:
    reg = await harness.register("w1", "pw-1", ssl_port(pki.master_other_host))
    error = await refused(harness, add_client_options(reg.getAddress(), ca_file=pki.ca))
    text = str(error)
    assert "wrong host name" in text and "127.0.0.1" in text and "elsewhere.example" in text, text


@async_test
async def test_untrusted_ca_is_refused(harness: Harness, pki: PKI, log: Log) -> None:
    reg = await harness.register("w1", "pw-1", ssl_port(pki.master_untrusted))
    error = await refused(harness, add_client_options(reg.getAddress(), ca_file=pki.ca))
    text = str(error)
    assert "untrusted CA" in text and "some other CA" in text and pki.ca in text, text
    # The master hears why, with the worker's address.
    event = await within(log.wait_for(master_tls_failure), harness.reactor, what="the master's TLS log line")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", event["peer"]) and "unknown CA" in event["why"], event


@async_test
async def test_expired_certificate_is_refused(harness: Harness, pki: PKI, log: Log) -> None:
    reg = await harness.register("w1", "pw-1", ssl_port(pki.master_expired))
    error = await refused(harness, add_client_options(reg.getAddress(), ca_file=pki.ca))
    assert "expired on" in str(error), str(error)


@async_test
async def test_without_a_ca_file_the_system_trust_store_decides(harness: Harness, pki: PKI, log: Log) -> None:
    reg = await harness.register("w1", "pw-1", ssl_port(pki.master))
    error = await refused(harness, reg.getAddress())  # no caCertsFile: a private CA is not trusted
    assert "untrusted CA" in str(error) and "caCertsFile=" in str(error), str(error)


# -- the master refuses workers without a good client certificate ----------------------


@async_test
async def test_missing_client_certificate_is_refused(harness: Harness, pki: PKI, log: Log) -> None:
    reg = await harness.register("w1", "pw-1", ssl_port(pki.master, ca=pki.ca))
    error = await refused(harness, add_client_options(reg.getAddress(), ca_file=pki.ca))
    assert "requires a client certificate" in str(error), str(error)
    event = await within(log.wait_for(master_tls_failure), harness.reactor, what="the master's TLS log line")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", event["peer"]), event
    assert "sent no client certificate" in event["why"], event


@async_test
async def test_client_certificate_from_another_ca_is_refused(harness: Harness, pki: PKI, log: Log) -> None:
    reg = await harness.register("w1", "pw-1", ssl_port(pki.master, ca=pki.ca))
    address = add_client_options(reg.getAddress(), ca_file=pki.ca, certificate=pki.worker_other_ca[0],
                                 private_key=pki.worker_other_ca[1])
    error = await refused(harness, address)
    assert "client certificate" in str(error), str(error)
    event = await within(log.wait_for(master_tls_failure), harness.reactor, what="the master's TLS log line")
    assert "untrusted CA" in event["why"] and "some other CA" in event["why"], event
    assert re.fullmatch(r"127\.0\.0\.1:\d+", event["peer"]), event


@async_test
async def test_a_plain_tcp_client_on_a_tls_port_is_dropped_and_logged(harness: Harness, pki: PKI, log: Log) -> None:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol

    class Plain(Protocol):
        def __init__(self) -> None:
            self.lost: Deferred[None] = Deferred()

        def connectionMade(self) -> None:
            self.transport.write(b"GET / HTTP/1.0\r\n\r\n")  # anything but a TLS ClientHello

        def connectionLost(self, reason: Any = None) -> None:
            self.lost.callback(None)

    reg = await harness.register("w1", "pw-1", ssl_port(pki.master))
    plain = await connectProtocol(TCP4ClientEndpoint(harness.reactor, "127.0.0.1", int(reg.getPort())), Plain())
    await within(plain.lost, harness.reactor, what="the master to drop a client that does not speak TLS")
    event = await within(log.wait_for(master_tls_failure), harness.reactor, what="the master's TLS log line")
    assert "does not speak TLS" in event["why"] and re.fullmatch(r"127\.0\.0\.1:\d+", event["peer"]), event
    assert not harness.master.offers


# -- strings and files ------------------------------------------------------------------


@pytest.mark.parametrize("name", NETWORK_BACKENDS)
def test_backends_accept_tls_port_strings_and_check_their_files(name: str, pki: PKI, tmp_path: Path) -> None:
    backend = load_backend(name)
    backend.check_port(ssl_port(pki.master, ca=pki.ca))
    backend.check_port("tls" + ssl_port(pki.master)[3:])
    with pytest.raises(AddressError, match="privateKey=FILE"):
        backend.check_port("ssl:port=0")
    with pytest.raises(AddressError, match="cannot read the private key file"):
        backend.check_port(f"ssl:0:privateKey={tmp_path / 'missing.key'}:certKey={pki.master[0]}")
    with pytest.raises(AddressError, match="does not belong to the certificate"):
        backend.check_port(f"ssl:0:privateKey={pki.worker[1]}:certKey={pki.master[0]}")
    with pytest.raises(AddressError, match="unknown key.*sslmethod"):
        backend.check_port(ssl_port(pki.master) + ":sslmethod=TLSv1_METHOD")


def test_master_config_reports_a_bad_tls_port_with_its_key(pki: PKI, tmp_path: Path) -> None:
    from workerwire_app.config import ConfigErrors, load_config

    name = NETWORK_BACKENDS[0]
    config = tmp_path / "master.toml"
    good = ssl_port(pki.master, ca=pki.ca)
    config.write_text(f'[protocols.{name}]\nport = "{good}"\n[[workers]]\nname = "w1"\npassword = "pw"\n')
    assert load_config(str(config)).protocols[name].port == good
    missing = tmp_path / "missing.crt"
    config.write_text(f'[protocols.{name}]\nport = "ssl:0:privateKey={pki.master[1]}:certKey={missing}"\n'
                      '[[workers]]\nname = "w1"\npassword = "pw"\n')
    with pytest.raises(ConfigErrors) as caught:
        load_config(str(config))
    assert f"protocols.{name}.port" in str(caught.value)
    assert f"cannot read the master certificate file '{missing}'" in str(caught.value)


def test_client_addresses(reactor: Any, pki: PKI, tmp_path: Path) -> None:
    assert client_from_string(reactor, f"tls:host=127.0.0.1:port=1:caCertsFile={pki.ca}")
    assert client_from_string(reactor, f"tls:localhost:1:caCertsFile={pki.ca}")
    with pytest.raises(AddressError, match="tls:host=H:port=N"):
        client_from_string(reactor, "ssl:host=127.0.0.1:port=1")
    with pytest.raises(AddressError, match="unknown key.*trustRoots"):
        client_from_string(reactor, "tls:host=127.0.0.1:port=1:trustRoots=/etc/ssl")
    with pytest.raises(AddressError, match="both certificate= and privateKey="):
        client_from_string(reactor, f"tls:host=h:port=1:certificate={pki.worker[0]}")
    with pytest.raises(AddressError, match="must be yes or no"):
        client_from_string(reactor, "tls:host=h:port=1:verify=maybe")
    with pytest.raises(AddressError, match="no readable PEM certificate"):
        client_from_string(reactor, f"tls:host=h:port=1:caCertsFile={pki.worker[1]}")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(_key_pem(_key(), b"secret"))
    with pytest.raises(AddressError, match="is encrypted") as caught:
        client_from_string(reactor, f"tls:host=h:port=1:certificate={pki.worker[0]}:privateKey={encrypted}")
    assert "BEGIN" not in str(caught.value)


def test_dial_address_and_client_options(pki: PKI) -> None:
    assert dial_address("ssl:0:privateKey=k", "tcp:host=127.0.0.1:port=5") == "tls:host=127.0.0.1:port=5"
    assert dial_address("tls:0:privateKey=k", "tcp6:host=\\:\\:1:port=5") == "tls:host=\\:\\:1:port=5"
    assert dial_address("tcp:0", "tcp:host=127.0.0.1:port=5") == "tcp:host=127.0.0.1:port=5"
    assert (add_client_options("tls:host=h:port=5", ca_file="/a:b", verify=False)
            == "tls:host=h:port=5:caCertsFile=/a\\:b:verify=no")
    assert add_client_options("tcp:host=h:port=5") == "tcp:host=h:port=5"
    with pytest.raises(AddressError, match="need a tls: master address"):
        add_client_options("tcp:host=h:port=5", ca_file=pki.ca)
    with pytest.raises(AddressError, match="already gives caCertsFile"):
        add_client_options(f"tls:host=h:port=5:caCertsFile={pki.ca}", ca_file=pki.ca)


def test_plain_strings_still_go_to_twisted(reactor: Any) -> None:
    assert server_from_string(reactor, "tcp:port=0:interface=127.0.0.1")
    assert client_from_string(reactor, "tcp:host=127.0.0.1:port=1")


# -- operators: the real `workerwire master` and `workerwire worker` processes -------------


def test_worker_tls_options_are_checked(tmp_path: Path, pki: PKI) -> None:
    import subprocess

    from test_app_support import workerwire_argv

    def worker(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*workerwire_argv(), "worker", "--backend", NETWORK_BACKENDS[0], "--name", "w",
                               "--password", "p", "--basedir", str(tmp_path / "b"), *extra],
                              capture_output=True, text=True, timeout=60)

    out = worker("--master", "tcp:host=127.0.0.1:port=1", "--ca-file", pki.ca)
    assert out.returncode == 2 and "TLS options need a tls: master address" in out.stderr, out.stderr
    out = worker("--master", "tls:host=127.0.0.1:port=1", "--ca-file", pki.ca, "--insecure-no-verify")
    assert out.returncode == 2 and "contradict" in out.stderr, out.stderr
    out = worker("--master", "tls:host=127.0.0.1:port=1", "--ca-file", str(tmp_path / "missing.pem"))
    assert out.returncode == 2 and "cannot read the caCertsFile file" in out.stderr, out.stderr


@pytest.mark.skipif(not NETWORK_BACKENDS, reason="needs a network backend")
@pytest_twisted.ensureDeferred
async def test_master_and_workers_over_mutual_tls(tmp_path: Path, pki: PKI) -> None:
    """A master config with an ``ssl:`` port per network backend (client certificates
    required); ``workerwire worker --ca-file --client-cert --client-key`` runs its job;
    a worker without a client certificate is refused and says why."""
    from test_app_support import EventLog, Processes, to_toml

    procs = Processes()
    try:
        passwords = {f"w-{b}": f"secret-{b}" for b in NETWORK_BACKENDS}
        config = tmp_path / "master.toml"
        config.write_text(to_toml({
            "protocols": {b: {"port": ssl_port(pki.master, ca=pki.ca)} for b in NETWORK_BACKENDS},
            "workers": [{"name": f"w-{b}", "password": passwords[f"w-{b}"], "protocols": [b]}
                        for b in NETWORK_BACKENDS],
            "jobs": [{"name": "hello", "command": "echo hello over tls"}],
        }))
        master = procs.start(["master", "-c", str(config), "--events", str(tmp_path / "events.jsonl")], name="master")
        events = EventLog(tmp_path / "events.jsonl", master)
        ready = await events.wait("ready")
        workers = []
        for b in NETWORK_BACKENDS:
            address = ready["protocols"][b]["address"]
            assert re.fullmatch(r"tls:host=127\.0\.0\.1:port=\d+", address), address
            workers.append(procs.start(
                ["worker", "--backend", b, "--master", address, "--name", f"w-{b}", "--password", passwords[f"w-{b}"],
                 "--basedir", str(tmp_path / f"basedir-{b}"), "--ca-file", pki.ca,
                 "--client-cert", pki.worker[0], "--client-key", pki.worker[1]], name=f"w-{b}"))
        for b in NETWORK_BACKENDS:
            done = await events.wait("job_finished", worker=f"w-{b}", job="hello")
            assert done["rc"] == 0 and done["output_tail"] == "hello over tls\n", done
        # Without a client certificate: refused by the master, and the worker says why.
        b = NETWORK_BACKENDS[0]
        stranger = procs.start(
            ["worker", "--backend", b, "--master", ready["protocols"][b]["address"], "--name", f"w-{b}",
             "--password", passwords[f"w-{b}"], "--basedir", str(tmp_path / "stranger"), "--ca-file", pki.ca],
            name="stranger")
        await stranger.wait_output("requires a client certificate", stream="stderr")
        await master.wait_output("sent no client certificate", stream="stderr")
        assert len(events.matching("attached")) == len(NETWORK_BACKENDS)
        for proc in [stranger, *workers, master]:
            proc.signal("TERM")
        for proc in [stranger, *workers, master]:
            assert await proc.wait_exit() == 0, proc.text_err[-3000:]
        for proc in [*workers, master]:
            assert "BEGIN" not in proc.text_err and "PRIVATE KEY" not in proc.text_err
    finally:
        procs.cleanup()

