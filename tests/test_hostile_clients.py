"""Hostile clients cannot hurt others (issue 7, item 4), on every network backend.

A real ``workerwire master`` process listens on 127.0.0.1 (port 0) with one
legitimate worker (a ``workerwire worker`` process) running a long list of
short jobs.  From other loopback source addresses (127.0.0.2 ... 127.0.0.8:
the master counts failures and caps per source host, so the attack must not
come from the legitimate worker's address) the test then, all at once:

* opens hundreds of idle TCP connections that never say a word (more than
  one host may hold; with the rest of the attack, about as many as the
  listener holds in all);
* opens connections that send a large frame before any login (a banana
  string / an AMP box announcing far more than a login needs) and stall;
* sends thousands of bad logins through the backend's own connector
  (``probe()`` with a wrong password or an unknown worker name).

It checks, from ``/proc`` of the master process, that the master's peak
memory stayed within a generous bound of what it used before (and prints
the figures), that every connection from the attacking hosts is gone at the
end (no socket of the master is connected to them), that the legitimate
worker kept running commands throughout (jobs finished with rc 0 while the
attack ran, it never disconnected), and that the master's log stayed short
and free of passwords.

Runs in well under 40 s per backend.  ``WORKERWIRE_HOSTILE_SCALE=4`` (say)
multiplies the idle connections, stuffers and bad logins.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from workerwire import LinkOptions, load_backend
from workerwire.conformance import ScriptedWorker
from workerwire.conformance.harness import within
from workerwire.errors import ConnectionLost, LoginRefused

from test_app_support import DEADLINE, REACTOR, EventLog, Processes, network_backends, to_toml, until

SCALE = float(os.environ.get("WORKERWIRE_HOSTILE_SCALE", "1"))
IDLE = int(300 * SCALE)              # idle unauthenticated connections
STUFFERS = int(100 * SCALE)          # connections sending a large frame before logging in
STUFF_BYTES = 600 * 1024             # what each of them tries to send
BAD_LOGINS = int(2000 * SCALE)       # refused logins, all told
CONCURRENCY = 64                     # bad logins in flight at a time (more than a host may have waiting)
IDLE_HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
STUFF_HOSTS = ["127.0.0.5", "127.0.0.8"]
LOGIN_HOSTS = ["127.0.0.6", "127.0.0.7"]
ATTACKERS = {*IDLE_HOSTS, *STUFF_HOSTS, *LOGIN_HOSTS}
LOGIN_TIMEOUT = 3.0
MASTER_OPTIONS = {
    "login_timeout": LOGIN_TIMEOUT,
    "max_unauthenticated": 300,
    "max_unauthenticated_per_host": 64,
    "failed_login_grace": 3,
    "failed_login_delay": 0.1,
    "failed_login_max_delay": 2.0,
}
#: Growth of the master's peak RSS over its RSS before the attack that fails
#: the test.  Generous (the attack costs it about 6 MiB), yet it catches
#: buffering what the stuffers send (STUFFERS * STUFF_BYTES = 59 MiB).
RSS_BOUND_MIB = 32 * max(1.0, SCALE)
N_JOBS = 4000
ECHO = shutil.which("echo") or "/bin/echo"


def stuff(backend: str) -> bytes | None:
    """A frame a backend parses as the start of one large message (never finished)."""
    if backend == "pb":  # a banana string of 640 KiB - 1 (base-128 length, low digit first, then STRING)
        n, prefix = 640 * 1024 - 1, bytearray()
        while n:
            prefix.append(n & 0x7F)
            n >>= 7
        return bytes(prefix) + b"\x82" + b"x" * STUFF_BYTES
    if backend == "amp":  # a box of 65,535-byte values under distinct keys, never terminated
        return b"".join(b"\x00\x02k%d\xff\xff" % i + b"x" * 0xFFFF for i in range(STUFF_BYTES // 0xFFFF + 1))
    if backend == "msgpack":  # a WebSocket upgrade request whose header never ends
        return b"GET / HTTP/1.1\r\nHost: master\r\nUpgrade: websocket\r\nX-Stuff: " + b"x" * STUFF_BYTES
    return None  # a third-party backend: its frames are unknown here; idle connections and logins still run


# -- /proc of the master ---------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) ... of *pid*, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Vm"):
            out[key] = int(value.split()[0])
    return out


def _ipv4(hexaddr: str) -> tuple[str, int]:
    ip, port = hexaddr.split(":")
    return ".".join(str(b) for b in bytes.fromhex(ip)[::-1]), int(port, 16)


def master_sockets(pid: int) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """(local, remote) of every IPv4 TCP socket the master process holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    out = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[9]) in inodes:
            out.append((_ipv4(parts[1]), _ipv4(parts[2])))
    return out


def attacker_sockets(pid: int) -> int:
    return sum(1 for _, (ip, _) in master_sockets(pid) if ip in ATTACKERS)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- the attackers ----------------------------------------------------------------


class Raw(Protocol):
    """Connects, optionally writes once, then waits to be closed."""

    def __init__(self, host: str, payload: bytes | None):
        self.host = host
        self.payload = payload
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if self.payload:
            self.transport.write(self.payload)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


async def open_raw(port: int, host: str, payload: bytes | None, batch: int = 50,
                   count: int = 1) -> tuple[list[Raw], int]:
    """*count* connections from *host*; returns them and how many were closed
    before the connect completed on this side (closed at once by a cap)."""
    conns: list[Raw] = []
    failed = 0
    for start in range(0, count, batch):
        ds = []
        for _ in range(min(batch, count - start)):
            proto = Raw(host, payload)
            conns.append(proto)
            ep = TCP4ClientEndpoint(REACTOR, "127.0.0.1", port, timeout=10, bindAddress=(host, 0))
            ds.append(ep.connect(Factory.forProtocol(lambda p=proto: p)))
        batch_conns, conns = conns[-len(ds):], conns[:-len(ds)]
        for proto, (ok, _) in zip(batch_conns, await DeferredList(ds, consumeErrors=True)):
            if ok:
                conns.append(proto)
            else:
                failed += 1
    return conns, failed


class BadLogins:
    """Thousands of refused logins through the backend's own connector."""

    def __init__(self, backend: Any, address: str, basedir: str):
        self.backend = backend
        self.address = address
        self.bot = ScriptedWorker(basedir, REACTOR)
        self.outcomes: Counter[str] = Counter()
        self.started = 0

    async def run(self, total: int, concurrency: int) -> None:
        await DeferredList([ensureDeferred(self._loop(i, total)) for i in range(concurrency)],
                           fireOnOneErrback=True, consumeErrors=True)

    async def _loop(self, lane: int, total: int) -> None:
        host = LOGIN_HOSTS[lane % len(LOGIN_HOSTS)]
        while self.started < total:
            n = self.started
            self.started += 1
            name, password = ("good", f"guess-{n}") if n % 2 else (f"intruder-{n}", "pw")
            connector = self.backend.create_connector(
                self.bot, f"{self.address}:bindAddress={host}", name, password,
                LinkOptions(keepalive_interval=None, login_timeout=15), REACTOR)
            try:
                await connector.probe()
            except LoginRefused:
                self.outcomes["refused"] += 1
            except ConnectionLost:
                self.outcomes["closed (at a cap)"] += 1
            except Exception as e:  # recorded, fails the test below
                self.outcomes[f"unexpected {type(e).__name__}: {e}"] += 1
            else:
                self.outcomes["accepted!"] += 1


# -- the test ---------------------------------------------------------------------


def _params() -> list[Any]:
    names = network_backends()
    return names or [pytest.param(None, marks=pytest.mark.skip(reason="no network backend is installed"))]


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="reads the master's memory and sockets from /proc")
@pytest.mark.parametrize("backend_name", _params())
@pytest_twisted.ensureDeferred
async def test_hostile_clients_cannot_hurt_a_working_worker(backend_name: str, tmp_path: Path,
                                                            processes: Processes) -> None:
    backend = load_backend(backend_name)
    config = tmp_path / "master.toml"
    config.write_text(to_toml({
        # A backlog long enough that the kernel does not drop the attack's connection attempts (an
        # attempt dropped from a full accept queue never reaches the master, so it cannot close it).
        "protocols": {backend_name: {"port": "tcp:port=0:interface=127.0.0.1:backlog=1024", **MASTER_OPTIONS}},
        "workers": [{"name": "good", "password": "the-good-secret"}],
        "jobs": [{"name": f"j{i}", "command": [ECHO, f"job {i}"], "workers": ["good"], "builder": "echo"}
                 for i in range(N_JOBS)],
    }))
    events_path = tmp_path / "events.jsonl"
    master = processes.start(["master", "-c", str(config), "--events", str(events_path)], name="master")
    events = EventLog(events_path, master)
    ready = await events.wait("ready")
    address = ready["protocols"][backend_name]["address"]
    port = ready["protocols"][backend_name]["port"]
    assert master.pid is not None
    pid = master.pid
    (tmp_path / "good.pw").write_text("the-good-secret\n")
    worker = processes.start(["worker", "--backend", backend_name, "--master", address, "--name", "good",
                              "--password-file", str(tmp_path / "good.pw"), "--basedir", str(tmp_path / "good")],
                             name="worker")
    await events.wait("attached", worker="good")
    await events.wait("job_finished", worker="good", count=5)

    # Warm up (imports, first allocations), then take the baseline.
    logins = BadLogins(backend, address, str(tmp_path / "attacker"))
    warm, _ = await open_raw(port, IDLE_HOSTS[0], stuff(backend_name), count=5)
    await logins.run(20, 4)
    for c in warm:
        c.transport.loseConnection()  # type: ignore[union-attr]
    await until(lambda: attacker_sockets(pid) == 0, "the warm-up connections to close")
    before = proc_status(pid)
    fds_before = fd_count(pid)
    jobs_before = len(events.matching("job_finished", worker="good"))

    # The attack.
    t0 = time.time()
    idle_per_host = IDLE // len(IDLE_HOSTS)
    opened = [ensureDeferred(open_raw(port, host, None, count=idle_per_host)) for host in IDLE_HOSTS]
    stuffers = [] if stuff(backend_name) is None else [
        ensureDeferred(open_raw(port, host, stuff(backend_name), count=STUFFERS // len(STUFF_HOSTS)))
        for host in STUFF_HOSTS]
    logins = BadLogins(backend, address, str(tmp_path / "attacker"))
    await logins.run(BAD_LOGINS, CONCURRENCY)
    raw: list[Raw] = []
    connect_failures = 0
    for d in [*opened, *stuffers]:
        conns, failed = await d
        raw += conns
        connect_failures += failed
    t1 = time.time()
    during = proc_status(pid)

    # Every attacking connection is closed by the master, none left open on its side.
    await until(lambda: all(c.lost.called for c in raw),
                f"the master to close every attacking connection (open: "
                f"{Counter(c.host for c in raw if not c.lost.called)})", timeout=LOGIN_TIMEOUT + 20)
    await until(lambda: attacker_sockets(pid) == 0, "the master to hold no socket to the attackers", timeout=10)
    after = proc_status(pid)
    fds_after = fd_count(pid)
    finished = events.matching("job_finished", worker="good")
    in_attack = [e for e in finished if t0 <= e["time"] <= t1]

    mib = 1024.0
    print(f"\n[{backend_name}] hostile clients: {len(raw)} raw connections open "
          f"(+{connect_failures} closed by a cap before the client saw them open) "
          f"({IDLE} idle from {len(IDLE_HOSTS)} hosts, {len(stuffers) and STUFFERS} sending "
          f"{STUFF_BYTES // 1024} KiB before login), {sum(logins.outcomes.values())} bad logins in "
          f"{t1 - t0:.1f} s: {dict(logins.outcomes)}")
    print(f"[{backend_name}] master pid {pid} RSS before {before['VmRSS'] / mib:.1f} MiB, "
          f"right after the attack {during['VmRSS'] / mib:.1f} MiB, at the end {after['VmRSS'] / mib:.1f} MiB, "
          f"peak {after['VmHWM'] / mib:.1f} MiB (bound: before + {RSS_BOUND_MIB:g} MiB); "
          f"open fds {fds_before} before, {fds_after} after")
    print(f"[{backend_name}] the good worker finished {len(in_attack)} jobs during the attack, "
          f"{len(finished)} in all")

    # Bad logins were all refused (checked, throttled, or closed at a cap), none accepted.
    assert sum(logins.outcomes.values()) == BAD_LOGINS
    assert set(logins.outcomes) <= {"refused", "closed (at a cap)"}, logins.outcomes
    assert logins.outcomes["refused"] > 0
    # Memory stayed bounded; nothing leaked.
    assert after["VmHWM"] - before["VmRSS"] < RSS_BOUND_MIB * 1024, (before, after)
    assert fds_after <= fds_before + 2, (fds_before, fds_after, master_sockets(pid))
    # The legitimate worker kept working, on the same link, all along.
    assert len(in_attack) >= 1 and len(finished) > jobs_before
    assert all(e["rc"] == 0 and e["failure"] is None for e in finished), [e for e in finished if e["rc"] != 0][:3]
    assert events.matching("attached", worker="good") and not events.matching("disconnected", worker="good")
    # The master's log stayed short and named no password.
    worker.signal("TERM")
    assert await worker.wait_exit() == 0, worker.text_err[-2000:]
    master.signal("TERM")
    assert await master.wait_exit() == 0, master.text_err[-3000:]
    log = master.text_err
    assert "the-good-secret" not in log and "guess-" not in log
    refusal_lines = [line for line in log.splitlines() if "refused" in line and "login" in line]
    assert len(refusal_lines) <= 40, f"{len(refusal_lines)} refusal lines for {BAD_LOGINS} bad logins"
    print(f"[{backend_name}] the master logged {len(log.splitlines())} lines in all, "
          f"{len(refusal_lines)} about refused logins; {logged_counts(log)}")


def logged_counts(log: str) -> str:
    """What the master's rate-limited lines and summaries say it saw, by kind."""
    import re

    seen: Counter[str] = Counter()
    for line in log.splitlines():
        summary = re.search(r"(\d+) more '([^']+)' lines", line)
        if summary:
            seen[summary.group(2)] += int(summary.group(1))
        elif "refused without checking" in line:
            seen["throttled login"] += 1
        elif "login from" in line and "refused:" in line:
            seen["failed login"] += 1
        elif "no login from" in line:
            seen["login timeout"] += 1
        elif "closing new connections at once" in line:
            seen["cap reached"] += 1
        elif "bytes before logging in" in line:
            seen["login input limit"] += 1
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(seen.items()))


# -- each defence on an in-process listener -------------------------------------------


class LogLines:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> "LogLines":
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc: Any) -> None:
        from twisted.logger import globalLogPublisher

        globalLogPublisher.removeObserver(self.events.append)

    def formatted(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events]

    def with_field(self, key: str, value: Any = True) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if e.get(key) == value]


async def _harness(backend_name: str, tmp_path: Path, **options: Any) -> Any:
    from workerwire.conformance import Harness

    return Harness(load_backend(backend_name), LinkOptions(keepalive_interval=None, **options), REACTOR,
                   str(tmp_path))


@pytest.mark.parametrize("backend_name", _params())
@pytest_twisted.ensureDeferred
async def test_without_a_waiting_room_caps_close_new_connections_at_once_and_the_login_timeout_the_rest(
        backend_name: str, tmp_path: Path) -> None:
    h = await _harness(backend_name, tmp_path, login_timeout=1.0, max_unauthenticated=8,
                       max_unauthenticated_per_host=6, max_waiting_logins=0)
    try:
        port = (await h.register("w1", "pw")).getPort()
        guard = h.listener.login_guard
        with LogLines() as log:
            first, _ = await open_raw(port, "127.0.0.2", None, count=6)
            await until(lambda: guard.unauthenticated == 6, "6 connections to be accepted")
            more, _ = await open_raw(port, "127.0.0.2", None, count=3)  # over the host's cap
            await until(lambda: guard.stats["closed_at_cap"] == 3, "the host's cap to close 3")
            other, _ = await open_raw(port, "127.0.0.3", None, count=4)  # 2 fit under the listener's cap
            await until(lambda: guard.stats["closed_at_cap"] == 5, "the listener's cap to close 2")
            assert guard.unauthenticated == 8
            await until(lambda: all(c.lost.called for c in [*first, *more, *other]),
                        "the login timeout to close the rest", timeout=10)
            assert guard.unauthenticated == 0 and guard.stats["timed_out"] == 8
        assert len(log.with_field("cap_reached")) == 2  # one line per burst: the host's cap, the listener's
        assert len(log.with_field("login_timeout")) == 8
        w = await h.start_worker("w1", "pw")  # logins work again
        assert w.conn.isConnected
    finally:
        await h.close()


@pytest.mark.parametrize("backend_name", _params())
@pytest_twisted.ensureDeferred
async def test_connections_over_a_cap_wait_their_turn_unread_and_a_worker_among_them_logs_in(
        backend_name: str, tmp_path: Path) -> None:
    # Long login timeout: every slot below is freed by a client closing, never by a timer.
    h = await _harness(backend_name, tmp_path, login_timeout=60.0, max_unauthenticated=8,
                       max_unauthenticated_per_host=6, max_waiting_logins=4)
    try:
        reg = await h.register("w1", "pw")
        port = reg.getPort()
        guard = h.listener.login_guard
        with LogLines() as log:
            first, _ = await open_raw(port, "127.0.0.2", None, count=6)  # the host's cap
            await until(lambda: guard.unauthenticated == 6, "6 connections to be accepted")
            # A real worker from the same host: over the host's cap, it waits instead of being closed.
            bot = ScriptedWorker(str(tmp_path), REACTOR)
            connector = h.backend.create_connector(bot, f"{reg.getAddress()}:bindAddress=127.0.0.2", "w1", "pw",
                                                   LinkOptions(keepalive_interval=None), REACTOR)
            connector.start()
            await until(lambda: guard.waiting == 1, "the worker's connection to wait")
            queued, _ = await open_raw(port, "127.0.0.2", None, count=3)
            await until(lambda: guard.waiting == 4, "3 more to wait")
            extra, _ = await open_raw(port, "127.0.0.2", None, count=1)  # the waiting room is full
            await until(lambda: extra[0].lost.called, "a connection beyond the waiting room to be closed")
            assert guard.stats["closed_at_cap"] == 1 and guard.stats["waited"] == 4
            assert guard.unauthenticated == 6 and not h.master.connections
            assert not any(c.lost.called for c in [*first, *queued])  # nobody else was closed
            # One idle client leaves: the worker, first in line, is served and logs in.
            first[0].transport.loseConnection()  # type: ignore[union-attr]
            await within(connector.whenConnected(), REACTOR, DEADLINE, "the waiting worker to log in")
            assert h.master.connections["w1"].isConnected
            # Its login done, its slot went to the next in line; two more slots serve the last two.
            await until(lambda: guard.waiting == 2 and guard.unauthenticated == 6, "the next one to be served")
            for c in first[1:3]:
                c.transport.loseConnection()  # type: ignore[union-attr]
            await until(lambda: guard.waiting == 0 and guard.unauthenticated == 6,
                        "the queued connections to be served")
            assert not any(c.lost.called for c in queued)  # served, not closed
        assert any("wait their turn" in line for line in log.formatted()), log.formatted()
        await connector.stop()
    finally:
        await h.close()


@pytest.mark.parametrize("backend_name", _params())
@pytest_twisted.ensureDeferred
async def test_repeated_failures_of_a_host_are_delayed_and_then_not_even_checked(backend_name: str,
                                                                                  tmp_path: Path) -> None:
    from workerwire import login_guard

    # Delays long enough that all the concurrent logins below arrive while the first ones wait.
    h = await _harness(backend_name, tmp_path, failed_login_grace=2, failed_login_delay=0.5,
                       failed_login_max_delay=2.0)
    try:
        reg = await h.register("w1", "pw")
        guard = h.listener.login_guard
        bot = ScriptedWorker(str(tmp_path), REACTOR)

        def probe(host: str, password: str) -> Deferred[None]:
            return h.backend.create_connector(bot, f"{reg.getAddress()}:bindAddress={host}", "w1", password,
                                              LinkOptions(keepalive_interval=None), REACTOR).probe()

        with LogLines() as log:
            for i in range(4):  # one after the other: 2 answered at once, then delayed
                with pytest.raises(LoginRefused):
                    await probe("127.0.0.2", f"wrong-{i}")
            assert guard.stats["refused"] == 4 and guard.stats["delayed"] == 2
            # Many at once: no more than HELD_PER_HOST wait; the rest are refused unchecked.
            n = login_guard.HELD_PER_HOST + 8
            results = await DeferredList([probe("127.0.0.2", "wrong") for _ in range(n)], consumeErrors=True)
            assert all(not ok and f.check(LoginRefused) for ok, f in results)
            assert guard.stats["throttled"] >= 8
            # Another host, and the right password from the same host, are not slowed down.
            with pytest.raises(LoginRefused):
                await probe("127.0.0.3", "wrong")
            assert guard.failures_of("127.0.0.3") == 1
            await probe("127.0.0.2", "pw")
        refusals = log.with_field("login_refused")
        assert refusals and not any("wrong-" in line for line in refusals)  # no password in any line
        assert any("wrong password for worker 'w1'" in line for line in refusals)
    finally:
        await h.close()
