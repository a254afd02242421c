"""The amqp backend beside raw pika, on one broker: ``python -m bench.sides.amqp_bench``.

Scenarios (each figure the median of ``--reps`` runs, all in one process and
on one broker so they compare):

* **rtt**: sequential round trips. Raw pika: the master publishes a ping to the
  worker's queue, the worker publishes a pong to the master's; workerwire:
  ``Connection.remotePrint`` (which also pays publisher confirms both ways).
* **stream**: worker-to-master output. Raw pika: the worker publishes 1 MiB
  messages with publisher confirms, at most 16 unconfirmed, the master consumes
  them (prefetch 64); workerwire: a ``produce`` command of the bench bot
  (:mod:`bench.bot`) into a counting target.
* **storm** (``--storm N``): two master processes on one pool, N workers in
  worker processes of 250 connectors each: time until all logged in, the
  spread over the masters, and each master's RSS growth per connection.

The broker is ``$WORKERWIRE_AMQP_URL``, or a private one (``workerwire_amqp.private_broker``)
started for the run.  This runs apart from ``python -m bench``: that harness
has no broker to give its trials.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import pika
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ClientCreator

from workerwire import Backoff, LinkOptions, load_backend
from workerwire_amqp.address import URL_ENV, BrokerURL

from ..procfs import cpu_seconds, raise_fd_limit, rss_kib
from ..profiling import profiled

REACTOR: Any = _reactor
MiB = 1024 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PER_PROCESS = 250


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


async def _pika(url: str) -> Any:
    broker = BrokerURL(url)
    proto = await ClientCreator(REACTOR, TwistedProtocolConnection, broker.parameters()).connectTCP(
        broker.host, broker.port)
    await proto.ready
    return proto


# -- raw pika ---------------------------------------------------------------------


async def raw_rtt(url: str, calls: int) -> float:
    master, worker = await _pika(url), await _pika(url)
    mch, wch = await master.channel(), await worker.channel()
    mq = (await mch.queue_declare("", exclusive=True)).method.queue
    wq = (await wch.queue_declare("", exclusive=True)).method.queue
    m_in, _ = await mch.basic_consume(mq, auto_ack=True)
    w_in, _ = await wch.basic_consume(wq, auto_ack=True)

    async def echo() -> None:
        while True:
            msg = await w_in.get()
            wch.basic_publish("", msg.properties.reply_to, b"pong")

    ensureDeferred(echo()).addErrback(lambda f: None)
    props = pika.BasicProperties(reply_to=mq)
    start = time.perf_counter()
    for _ in range(calls):
        mch.basic_publish("", wq, b"bench ping", props)
        await m_in.get()
    took = time.perf_counter() - start
    master.close()
    worker.close()
    return took / calls * 1e6


async def raw_stream(url: str, nbytes: int, chunk: int = MiB, window: int = 16) -> float:
    master, worker = await _pika(url), await _pika(url)
    mch, wch = await master.channel(), await worker.channel()
    await wch.confirm_delivery()
    mq = (await mch.queue_declare("", exclusive=True)).method.queue
    await mch.basic_qos(prefetch_count=64)
    m_in, _ = await mch.basic_consume(mq, auto_ack=True)
    body = b"x" * chunk
    count = -(-nbytes // chunk)
    received = [0]
    done: Deferred[None] = Deferred()

    async def consume() -> None:
        while received[0] < count:
            await m_in.get()
            received[0] += 1
        done.callback(None)

    ensureDeferred(consume())
    start = time.perf_counter()
    outstanding: list[Deferred[Any]] = []
    for _ in range(count):
        outstanding.append(wch.basic_publish("", mq, body))
        if len(outstanding) >= window:
            await outstanding.pop(0)
    await done
    took = time.perf_counter() - start
    master.close()
    worker.close()
    return count * chunk / took / 1e6


# -- workerwire amqp --------------------------------------------------------------


async def ww_link(tmp: str) -> tuple[Any, Any, Any]:
    from bench.bot import BenchBot
    from bench.sides.ww import PASSWORD, BenchMaster

    backend = load_backend("amqp")
    master = BenchMaster()
    listener = backend.create_listener(master, LinkOptions(), REACTOR)
    reg = await listener.updateRegistration("bench", PASSWORD, backend.loopback_port())
    connector = backend.create_connector(BenchBot(tmp, REACTOR), reg.getAddress(), "bench", PASSWORD, LinkOptions(),
                                         REACTOR, Backoff(initial=0.05, maximum=1.0))
    connector.start()
    conn = await master.whenConnection("bench")
    await conn.remoteSetBuilderList([("b1", "b1")])
    return listener, connector, conn


async def ww_rtt(conn: Any, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await conn.remotePrint("bench ping")
    return (time.perf_counter() - start) / calls * 1e6


async def ww_stream(conn: Any, nbytes: int, serial: int) -> float:
    from bench.sides.ww import CountingTarget

    target = CountingTarget()
    start = time.perf_counter()
    await conn.remoteStartCommand(target, "b1", f"s{serial}", "produce", {"size": nbytes, "chunk": 64 * 1024})
    got = await target.done
    took = time.perf_counter() - start
    assert got == nbytes, (got, nbytes)
    return nbytes / took / 1e6


# -- storm ------------------------------------------------------------------------


def _spawn(argv: list[str]) -> Any:
    import subprocess

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    return subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _readline(proc: Any, prefix: str, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError(f"no {prefix!r} line within {timeout:g} s")
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"process exited ({proc.wait()}) before {prefix!r}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()
    finally:
        sel.close()


def storm(url: str, workers: int, timeout: float, broker_cpu: Any = None) -> dict[str, Any]:
    """N workers over two master processes; *broker_cpu()* (if given) is the broker's CPU seconds so far."""
    pool = f"storm-{os.getpid()}-{int(time.time())}"
    me = [sys.executable, "-m", "bench.sides.amqp_bench"]
    masters = {name: _spawn([*me, "master", url, pool, name, str(workers)]) for name in ("sa", "sb")}
    try:
        base = {name: json.loads(_readline(p, "READY", 120)) for name, p in masters.items()}
        address = f"amqp:url={BrokerURL(url).escaped()}:pool={pool}"
        broker_cpu0 = broker_cpu() if broker_cpu is not None else None
        start = time.monotonic()
        fleets = [_spawn([*me, "workers", address, str(i), str(min(PER_PROCESS, workers - i))])
                  for i in range(0, workers, PER_PROCESS)]
        try:
            fleet_cpu = 0.0
            failed: dict[str, int] = {}
            timeline: list[tuple[float, list[float]]] = []
            for f in fleets:
                report = json.loads(_readline(f, "ALL", timeout))
                fleet_cpu += report["cpu_s"]
                timeline.append((report["began"], report["logged_in"]))
                for why, n in report["failed_logins"].items():
                    failed[why] = failed.get(why, 0) + n
            took = time.monotonic() - start
            out: dict[str, Any] = {"workers": workers, "seconds": round(took, 2), "masters": {},
                                   "cpu_s": {"worker processes": round(fleet_cpu, 1)},
                                   "failed_logins": failed}
            wall0 = time.time() - took
            connecting = min(b for b, _ in timeline)
            # From the first connector's start: the worker processes' own start-up (interpreter,
            # imports, under load seconds) is not part of the storm.
            out["seconds_from_first_connect"] = round(time.time() - connecting, 2)
            out["worker_processes"] = [
                {"connecting_after_s": round(b - wall0, 2), "first_login_s": round(ts[0] - wall0, 2),
                 "median_login_s": round(ts[len(ts) // 2] - wall0, 2), "last_login_s": round(ts[-1] - wall0, 2)}
                for b, ts in timeline if ts]
            if broker_cpu0 is not None:
                out["cpu_s"]["broker"] = round(broker_cpu() - broker_cpu0, 1)
            for name, p in masters.items():
                p.stdin.write("report\n")
                p.stdin.flush()
                count, rss, cpu = json.loads(_readline(p, "REPORT", 60))
                grown = (rss - base[name]["rss"]) * 1024
                out["cpu_s"][f"master {name}"] = round(cpu - base[name]["cpu"], 1)
                out["masters"][name] = {"workers": count, "rss_mib": round(rss / 1024, 1),
                                        "bytes_per_connection": round(grown / count) if count else None}
            counts = [m["workers"] for m in out["masters"].values()]
            out["spread"] = f"{max(counts) / workers:.0%}/{min(counts) / workers:.0%}"
            out["logins_per_second"] = round(workers / took, 1)
            return out
        finally:
            for f in fleets:
                f.stdin.close()
                f.wait(timeout=60)
    finally:
        for p in masters.values():
            p.stdin.close()
            p.wait(timeout=60)


def run_master(url: str, pool: str, name: str, workers: int) -> None:
    """A bench master of the storm: registers w0..w{N-1} on the pool; answers ``report``."""
    from twisted.internet import stdio
    from twisted.protocols.basic import LineReceiver

    from bench.sides.ww import PASSWORD, BenchMaster

    raise_fd_limit()
    backend = load_backend("amqp")
    master = BenchMaster()
    listener = backend.create_listener(master, LinkOptions(keepalive_interval=None), REACTOR)
    port = f"amqp:url={BrokerURL(url).escaped()}:pool={pool}:master={name}"

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            if line.strip() == b"report":
                print("REPORT " + json.dumps([len(listener.connections()), rss_kib(), cpu_seconds()]), flush=True)

        def connectionLost(self, reason: Any = None) -> None:
            if REACTOR.running:
                REACTOR.stop()

    async def register() -> None:
        for i in range(workers):
            await listener.updateRegistration(f"w{i}", PASSWORD, port)
        print("READY " + json.dumps({"rss": rss_kib(), "cpu": cpu_seconds()}), flush=True)

    stdio.StandardIO(Control())
    REACTOR.callWhenRunning(lambda: ensureDeferred(register()).addErrback(lambda f: (f.printTraceback(),
                                                                                     REACTOR.stop())))
    REACTOR.run()


def run_workers(address: str, first: int, count: int) -> None:
    """Connectors w{first}..: prints ``ALL`` once every one has logged in."""
    from twisted.internet import stdio
    from twisted.internet.protocol import Protocol

    from bench.bot import BenchBot
    from bench.sides.ww import PASSWORD

    from twisted.logger import globalLogPublisher

    raise_fd_limit()
    cpu0 = cpu_seconds() or 0.0
    #: Why login attempts failed (the connectors' retry log lines), by the first words of the reason.
    failures: dict[str, int] = {}

    def count_failures(event: dict[str, Any]) -> None:
        why = event.get("why")
        if why is not None and "retrying" in event.get("log_format", ""):
            key = " ".join(str(why).split()[:6])
            failures[key] = failures.get(key, 0) + 1

    globalLogPublisher.addObserver(count_failures)
    backend = load_backend("amqp")
    tmp = tempfile.mkdtemp(prefix="workerwire-amqp-storm-")
    waits = []
    logged_in: list[float] = []
    began = time.time()
    for i in range(first, first + count):
        c = backend.create_connector(BenchBot(tmp, REACTOR), address, f"w{i}", PASSWORD,
                                     LinkOptions(keepalive_interval=None), REACTOR, Backoff(initial=0.2, maximum=2.0))
        c.start()
        waits.append(c.whenConnected().addCallback(lambda _: logged_in.append(time.time())))

    class Control(Protocol):
        def connectionLost(self, reason: Any = None) -> None:
            if REACTOR.running:
                REACTOR.stop()

    async def all_in() -> None:
        for d in waits:
            try:
                await d
            except Exception:
                pass  # a refused first try retries; whenConnected of the retry is awaited below
        print("ALL " + json.dumps({"rss": rss_kib(), "cpu_s": (cpu_seconds() or 0.0) - cpu0,
                                   "failed_logins": failures, "began": began,
                                   "logged_in": sorted(logged_in)}), flush=True)

    stdio.StandardIO(Control())
    ensureDeferred(all_in())
    REACTOR.run()


# -- main ---------------------------------------------------------------------------


async def links(url: str, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[float]] = {"raw-pika rtt_us": [], "amqp rtt_us": [], "raw-pika stream_MBps": [],
                                       "amqp stream_MBps": []}
    tmp = tempfile.mkdtemp(prefix="workerwire-amqp-bench-")
    listener, connector, conn = await ww_link(tmp)
    try:
        for rep in range(args.reps):
            results["raw-pika rtt_us"].append(await raw_rtt(url, args.calls))
            results["amqp rtt_us"].append(await ww_rtt(conn, args.calls))
            results["raw-pika stream_MBps"].append(await raw_stream(url, args.stream_mib * MiB))
            results["amqp stream_MBps"].append(await ww_stream(conn, args.stream_mib * MiB, rep))
            _log(f"rep {rep + 1}/{args.reps}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in results.items()))
    finally:
        await connector.stop()
        await listener.stopListening()
    return {k: round(statistics.median(v), 1) for k, v in results.items()}


def main(argv: list[str]) -> int:
    if argv and argv[0] == "master":
        profiled(f"amqp-storm-master-{argv[3]}", lambda: run_master(*argv[1:4], int(argv[4])))
        return 0
    if argv and argv[0] == "workers":
        profiled("amqp-storm-workers", lambda: run_workers(argv[1], int(argv[2]), int(argv[3])))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.sides.amqp_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--stream-mib", type=int, default=64)
    p.add_argument("--storm", type=int, default=0, help="workers of the two-master storm (0: no storm)")
    p.add_argument("--storm-timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    broker = None
    url = os.environ.get(URL_ENV)
    if not url:
        from workerwire_amqp.private_broker import PrivateBroker

        broker = PrivateBroker().start()
        url = os.environ[URL_ENV] = broker.url
    try:
        out: dict[str, Any] = {"machine_cpus": os.cpu_count()}
        if args.reps:
            box: dict[str, Any] = {}

            def go() -> None:
                d = ensureDeferred(links(url, args))
                d.addCallbacks(box.update, lambda f: box.setdefault("error", f.getTraceback()))
                d.addBoth(lambda _: REACTOR.stop())

            REACTOR.callWhenRunning(go)
            REACTOR.run()
            out["links"] = box
        if args.storm:
            out["storm"] = storm(url, args.storm, args.storm_timeout,
                                 broker.cpu_seconds if broker is not None else None)
        print(json.dumps(out, indent=2))
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
