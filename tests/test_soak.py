"""Soak: many workers on every network backend run commands in a loop while a
proxy breaks their links at random.

Everything runs in this process on one reactor, over real loopback TCP: the
app's :class:`~workerwire_app.master.Master` (its duplicate-login policy
included), a :class:`workerwire.conformance.TCPRelay` per backend between the
workers and the master, and worker connectors serving real
:class:`~workerwire_app.worker_runtime.WorkerRuntime` objects (real ``shell``
commands).  A chaos loop aborts a random relayed link (both ends see the
close) or silently blackholes one (only keepalive can find it), a bounded
number of times.

At the end: every command either completed with all of its output, in order,
and rc 0, or failed with the core ``ConnectionLost`` (its output so far being
a prefix of the expected output); none hung (every wait is bounded); each
worker has exactly one connection on the master and one established socket
on the master's port; and once everything is stopped, this process has no
more file descriptors open than before (a small constant allowed).

``WORKERWIRE_SOAK_SECONDS`` (default 25) is how long the command loops run;
``WORKERWIRE_SOAK_WORKERS`` (default 5) is the number of workers per backend.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, FirstError, ensureDeferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from test_app_support import REACTOR, network_backends, sleep, to_toml, until
from workerwire import Backoff, LinkOptions, load_backend
from workerwire.conformance import TCPRelay
from workerwire.errors import ConnectionLost

SOAK_SECONDS = float(os.environ.get("WORKERWIRE_SOAK_SECONDS", "25"))
WORKERS_PER_BACKEND = int(os.environ.get("WORKERWIRE_SOAK_WORKERS", "5"))
#: Keepalive on both ends: a blackholed link is found within 1.5 s.
INTERVAL, TIMEOUT = 0.5, 1.0
#: Seconds a worker waits for a login answer, and the master for a login.
LOGIN_TIMEOUT = 3.0
#: Longest any single wait may take before the command counts as hung.
WAIT = 20.0
#: File descriptors the process may hold after the soak beyond what it held before.
FD_SLACK = 4

STREAM_LINES = 12
STREAM = ("i=1; while [ $i -le %d ]; do echo \"line $i\"; i=$((i+1)); sleep 0.04; done" % STREAM_LINES)
BULK_LINES = 3000

pytestmark = pytest.mark.soak


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def established_on(port: int) -> int:
    """TCP sockets in state ESTABLISHED whose local port is *port* (from /proc/net/tcp)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                count += 1
    return count


class _Done(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


async def _warm_up_process_spawning() -> None:
    """The reactor keeps a few descriptors for child processes once it spawned one."""
    p = _Done()
    REACTOR.spawnProcess(p, "/bin/sh", ["sh", "-c", "true"], env=dict(os.environ))
    await p.ended


async def bounded(d: Deferred[Any], seconds: float, what: str) -> Any:
    from workerwire_app.asyncutil import TimedOut, wait_for

    try:
        return await wait_for(d, seconds, REACTOR)
    except TimedOut:
        raise AssertionError(f"hung: {what} took more than {seconds:g} s") from None


class Recorder:
    """A command target that keeps everything the command reported."""

    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.rc: int | None = None
        self.completions: list[Any] = []
        self.done: Deferred[None] = Deferred()

    def remote_update(self, updates: list[Any]) -> None:
        assert not self.completions, "an update after the completion"
        for key, value in updates:
            if key == "stdout":
                self.stdout.append(value)
            elif key == "rc":
                self.rc = value

    def remote_complete(self, failure: Any = None) -> None:
        self.completions.append(failure)
        if not self.done.called:
            self.done.callback(None)


class Soak:
    def __init__(self, tmp: Path, backends: list[str]):
        self.tmp = tmp
        self.backends = backends
        self.workers = {f"w{i}-{b}": b for b in backends for i in range(1, WORKERS_PER_BACKEND + 1)}
        self.master: Any = None
        self.relays: dict[str, TCPRelay] = {}
        self.ports: dict[str, int] = {}
        self.connectors: dict[str, Any] = {}
        self.runtimes: dict[str, Any] = {}
        self.rng = random.Random(os.environ.get("WORKERWIRE_SOAK_SEED"))
        self.outcomes: dict[str, int] = {"completed": 0, "lost": 0, "start lost": 0}
        self.problems: list[str] = []
        self.faults: dict[str, int] = {"abort": 0, "blackhole": 0}

    async def start(self) -> None:
        from workerwire_app.config import load_config
        from workerwire_app.master import Master
        from workerwire_app.worker_runtime import WorkerRuntime

        config = self.tmp / "master.toml"
        config.write_text(to_toml({
            "master": {"duplicate_ping_timeout": 0.5},
            "protocols": {b: {"port": "tcp:port=0:interface=127.0.0.1", "keepalive_interval": INTERVAL,
                              "keepalive_timeout": TIMEOUT, "login_timeout": LOGIN_TIMEOUT}
                          for b in self.backends},
            "workers": [{"name": n, "password": f"pw-{n}", "protocols": [b], "builders": ["soak"]}
                        for n, b in self.workers.items()],
        }))
        self.master = Master(load_config(str(config)), REACTOR)
        await self.master.start()
        for b, where in self.master.addresses().items():
            self.ports[b] = int(where["port"])
            relay = TCPRelay(REACTOR, "127.0.0.1", int(where["port"]))
            await relay.start()
            self.relays[b] = relay
        # A link blackholed while logging in is found by the login timeout (keepalive starts after it).
        options = LinkOptions(keepalive_interval=INTERVAL, keepalive_timeout=TIMEOUT, login_timeout=LOGIN_TIMEOUT)
        for name, b in self.workers.items():
            runtime = WorkerRuntime(str(self.tmp / name), REACTOR, lost_link_grace=5.0)
            connector = load_backend(b).create_connector(
                runtime, self.relays[b].address, name, f"pw-{name}", options, REACTOR,
                Backoff(initial=0.1, maximum=1.0, jitter=0.5))
            self.runtimes[name] = runtime
            self.connectors[name] = connector
            connector.start()
        for name in self.workers:
            await bounded(self.master.whenAttached(name), WAIT, f"{name} to attach")

    # -- the command loop of one worker ---------------------------------------------

    async def commands(self, name: str, deadline: float) -> None:
        n = 0
        while REACTOR.seconds() < deadline and n < 5_000:
            n += 1
            conn = await bounded(self.master.whenAttached(name), WAIT, f"{name} to be attached again "
                                 f"({self.describe(name)})")
            bulk = n % 2 == 0
            if bulk:
                args = {"command": ["seq", "1", str(BULK_LINES)]}
                expected = "".join(f"{i}\n" for i in range(1, BULK_LINES + 1))
            else:
                args = {"command": ["sh", "-c", STREAM]}
                expected = "".join(f"line {i}\n" for i in range(1, STREAM_LINES + 1))
            args.update(workdir="build", logEnviron=False)
            rec = Recorder()
            cid = f"{name}-{n}"
            try:
                await bounded(conn.remoteStartCommand(rec, "soak", cid, "shell", args), WAIT, f"start of {cid}")
            except ConnectionLost:
                self.outcomes["start lost"] += 1
                if conn.isConnected:
                    self.problems.append(f"{cid}: the start failed with ConnectionLost on a connection "
                                         "that still says it is connected")
                await bounded(self.disconnected(conn), WAIT, f"{name}'s lost connection to be reported")
                continue
            except Exception as e:
                self.problems.append(f"{cid}: the start failed with {type(e).__name__}: {e}")
                continue
            await bounded(rec.done, WAIT, f"command {cid} to end")
            self.check(cid, rec, expected)

    def describe(self, name: str) -> str:
        c = self.connectors[name]
        return (f"worker connected: {c.isConnected}, last error: {c.last_error!r}, "
                f"master side: {self.master.connection(name)!r}")

    def disconnected(self, conn: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        conn.notifyOnDisconnect(lambda: None if d.called else d.callback(None))
        return d

    def check(self, cid: str, rec: Recorder, expected: str) -> None:
        out = "".join(rec.stdout)
        failure = rec.completions[0]
        if len(rec.completions) != 1:
            self.problems.append(f"{cid}: {len(rec.completions)} completions")
        if failure is None:
            if out != expected or rec.rc != 0:
                self.problems.append(f"{cid}: completed with rc {rec.rc} and {len(out)} of {len(expected)} "
                                     "characters of output, or out of order")
            else:
                self.outcomes["completed"] += 1
        elif failure.check(ConnectionLost):
            if not expected.startswith(out):
                self.problems.append(f"{cid}: lost, and its output so far is not a prefix of the expected output")
            else:
                self.outcomes["lost"] += 1
        else:
            self.problems.append(f"{cid}: failed with {failure.type.__name__}: {failure.getErrorMessage()}")

    # -- the chaos --------------------------------------------------------------------

    async def chaos(self, until_: float, max_faults: int) -> None:
        while REACTOR.seconds() < until_ and sum(self.faults.values()) < max_faults:
            await sleep(self.rng.uniform(0.15, 0.5))
            relay = self.relays[self.rng.choice(self.backends)]
            links = relay.live_links()
            if not links:
                continue
            link = self.rng.choice(links)
            if self.rng.random() < 0.75:
                link.abort()
                self.faults["abort"] += 1
            else:
                link.blackhole()
                self.faults["blackhole"] += 1

    # -- the end state ----------------------------------------------------------------

    def unsettled(self) -> str | None:
        """Why the end state is not reached yet (None: it is)."""
        down = [n for n, c in self.connectors.items() if not c.isConnected]
        if down:
            return f"workers not connected: {', '.join(down)}"
        missing = [n for n in self.workers if self.master.connection(n) is None]
        if missing:
            return f"workers without a connection on the master: {', '.join(missing)}"
        per_backend = {b: list(self.workers.values()).count(b) for b in self.backends}
        for b in self.backends:
            conns = self.master._listeners[b].connections()
            if len(conns) != per_backend[b]:
                return f"{b}: {len(conns)} connections on the master for {per_backend[b]} workers: {conns}"
            sockets = established_on(self.ports[b])
            if sockets != per_backend[b]:
                return f"{b}: {sockets} established sockets on the master's port for {per_backend[b]} workers"
        return None

    async def settle(self) -> None:
        deadline = REACTOR.seconds() + WAIT
        while (why := self.unsettled()) is not None:
            if REACTOR.seconds() > deadline:
                raise AssertionError(f"the end state was not reached within {WAIT:g} s: {why}")
            await sleep(0.05)

    async def stop(self) -> None:
        for connector in self.connectors.values():
            await bounded(connector.stop(), WAIT, "a worker connector to stop")
        for runtime in self.runtimes.values():
            await runtime.interrupt_all("the soak is over", timeout=5)
        if self.master is not None:
            await bounded(ensureDeferred(self.master.stop()), WAIT, "the master to stop")
        for relay in self.relays.values():
            await relay.close()


@pytest_twisted.ensureDeferred
async def test_soak_links_dropped_at_random_lose_no_command_and_leak_nothing(tmp_path: Path) -> None:
    backends = network_backends()
    if not backends:
        pytest.fail("needs a network backend")
    errors: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("isError") or "log_failure" in event:
            f = event.get("log_failure")
            errors.append(f"{event.get('log_format')}: {f.getErrorMessage() if f is not None else ''}")

    await _warm_up_process_spawning()
    fds_before = fd_count()
    soak = Soak(tmp_path, backends)
    globalLogPublisher.addObserver(observe)
    started = time.monotonic()
    try:
        await soak.start()
        end = REACTOR.seconds() + SOAK_SECONDS
        chaos = soak.chaos(end - min(5.0, SOAK_SECONDS / 4), max_faults=int(4 * SOAK_SECONDS))
        loops = [soak.commands(name, end) for name in soak.workers]
        try:
            await gatherResults([ensureDeferred(c) for c in [chaos, *loops]], consumeErrors=True)
        except FirstError as e:
            e.subFailure.raiseException()
        await soak.settle()
        print(f"\nsoak over {', '.join(backends)}: {len(soak.workers)} workers, "
              f"{time.monotonic() - started:.1f} s; faults {soak.faults}; commands {soak.outcomes}; "
              f"fds before {fds_before}, at the end while connected {fd_count()}")
    finally:
        await soak.stop()
        globalLogPublisher.removeObserver(observe)
    await until(lambda: fd_count() <= fds_before + FD_SLACK, "file descriptors to be released", timeout=10)
    assert not soak.problems, "\n".join(soak.problems[:20])
    assert sum(soak.faults.values()) > 0, "the chaos broke nothing"
    assert soak.outcomes["completed"] >= len(soak.workers), soak.outcomes
    if SOAK_SECONDS >= 10:  # a shortened run may be too short for a fault to land on a command
        assert soak.outcomes["lost"] + soak.outcomes["start lost"] > 0, "no command was hit by a fault"
    assert not errors, "errors were logged:\n" + "\n".join(errors[:20])
    print(f"fds after stopping everything: {fd_count()} (before: {fds_before})")
