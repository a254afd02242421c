"""One trial: a fresh master process that measures one subject and prints ``RESULT {json}``.

``python -m bench.trial SPEC_JSON``; the spec is built by :mod:`bench.plan`.
Worker sides are spawned from here with ``reactor.spawnProcess`` and ended
before the process exits.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
from typing import Any

from twisted.internet.defer import ensureDeferred

from .loops import RssSampler, pipelined, rtt_figures, sequential
from .procfs import cpu_seconds, hwm_kib, raise_fd_limit, rss_kib
from .profiling import profiled
from .sides.base import Link, python_argv, spawn, within

WARMUP_CALLS = 50


async def open_subject(reactor: Any, spec: dict[str, Any]) -> Link:
    subject, timeout, chunk, window = spec["subject"], spec["timeout"], spec["chunk"], spec["window"]
    if subject == "floor":
        from .sides.floor import FloorLink

        return FloorLink(reactor, chunk)
    if subject in ("raw-tcp", "raw-pb", "raw-amp", "raw-ws"):
        return await _open_raw(reactor, subject, chunk, window, timeout)
    if subject == "raw-pika":  # the broker is the one bench.cli started ($WORKERWIRE_AMQP_URL)
        import os

        from workerwire_amqp.address import URL_ENV

        from .sides import raw_pika

        return await raw_pika.open_link(reactor, os.environ[URL_ENV], chunk, window, timeout)
    if subject == "bbw":
        from .sides.bbw import open_bbw_link

        return await open_bbw_link(reactor, timeout, spec.get("backend", "pb"))
    if subject == "app":
        from .sides.app_worker import open_app_link

        return await open_app_link(reactor, spec["backend"], timeout)
    from .sides import ww
    from .sides.bbw import printer_argv

    name = spec["backend"]
    if spec.get("variant") == "shell":
        command, args_for = "shell", lambda n: {"command": printer_argv(n)}
    else:
        command, args_for = "produce", lambda n: {"size": n, "chunk": chunk}

    def spawn_worker(address: str) -> Any:
        return spawn(f"{name} worker", python_argv("bench.peer", "ww", name, address, "bench", ww.PASSWORD))

    return await ww.open_link(reactor, name, chunk, command, args_for, spawn_worker, timeout)


async def _open_raw(reactor: Any, subject: str, chunk: int, window: int, timeout: float) -> Link:
    from twisted.internet.defer import Deferred

    first: Deferred[Any]
    factory: Any
    if subject == "raw-tcp":
        from .sides import raw_tcp

        factory, port = raw_tcp.listen(reactor, chunk)
        first = factory.first
    elif subject == "raw-pb":
        from .sides import raw_pb

        root, port = raw_pb.listen(reactor, chunk, window)
        first = root.first
    elif subject == "raw-ws":
        from .sides import raw_ws

        factory, port = raw_ws.listen(reactor, chunk, window)
        first = factory.first
    else:
        from .sides import raw_amp

        factory, port = raw_amp.listen(reactor, chunk, window)
        first = factory.first
    child = spawn(subject + " worker", python_argv("bench.peer", subject, "127.0.0.1", str(port.getHost().port)))
    link = await within(first, reactor, timeout, f"the {subject} worker to connect")
    link.worker_pid = child.pid
    inner_close = link.close

    def close() -> Any:
        inner_close()
        port.stopListening()
        return child.terminate()

    link.close = close  # type: ignore[method-assign]
    return link


async def run_link(reactor: Any, spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    link = await open_subject(reactor, spec)
    timeout = spec["timeout"]
    try:
        if "rtt" in spec["scenarios"] or "pipelined" in spec["scenarios"]:
            await within(sequential(link.call, WARMUP_CALLS, timeout), reactor, timeout, "warm-up calls")
        if "rtt" in spec["scenarios"]:
            out["rtt"] = await _scenario(reactor, "rtt", timeout, _rtt(link, spec))
        if "pipelined" in spec["scenarios"]:
            out["pipelined"] = await _scenario(reactor, "pipelined", timeout, _pipelined(link, spec))
        if "stream" in spec["scenarios"]:
            out["stream"] = await _scenario(reactor, "stream", timeout, _stream(reactor, link, spec))
    finally:
        try:
            await within(ensureDeferred(_maybe(link.close())), reactor, 30, "the link to close")
        except Exception:
            traceback.print_exc()
    return out


async def _scenario(reactor: Any, name: str, timeout: float, coro: Any) -> dict[str, Any]:
    try:
        return await within(ensureDeferred(coro), reactor, timeout, name)
    except Exception as e:
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"}


async def _rtt(link: Link, spec: dict[str, Any]) -> dict[str, Any]:
    cpu0 = _cpu(link)
    latencies = await sequential(link.call, spec["rtt_calls"], spec["timeout"])
    return {**rtt_figures(latencies), "calls": len(latencies), **_cpu_per_call(link, cpu0, len(latencies))}


async def _pipelined(link: Link, spec: dict[str, Any]) -> dict[str, Any]:
    n = spec["pipe_calls"]
    cpu0 = _cpu(link)
    seconds = await pipelined(link.call, n, spec["pipe_window"], spec["timeout"])
    return {"calls_per_s": n / seconds, "calls": n, "outstanding": spec["pipe_window"],
            **_cpu_per_call(link, cpu0, n)}


def _cpu(link: Link) -> tuple[float, float | None]:
    return time.process_time(), None if link.worker_pid is None else cpu_seconds(link.worker_pid)


def _cpu_per_call(link: Link, cpu0: tuple[float, float | None], calls: int) -> dict[str, float | None]:
    """CPU µs (user + system) each process spent per call: less sensitive to
    other load on the machine than calls/s (the worker's in 10 ms ticks)."""
    cpu1 = _cpu(link)
    worker = None if cpu0[1] is None or cpu1[1] is None else (cpu1[1] - cpu0[1]) / calls * 1e6
    return {"master_cpu_us_per_call": (cpu1[0] - cpu0[0]) / calls * 1e6, "worker_cpu_us_per_call": worker}


async def _stream(reactor: Any, link: Link, spec: dict[str, Any]) -> dict[str, Any]:
    nbytes = spec["stream_bytes"]
    gc.collect()
    sampler = RssSampler({"master": None, "worker": link.worker_pid})
    sampler.start()
    in_process = link.worker_pid is None
    cpu0 = (time.process_time(), None if in_process else cpu_seconds(link.worker_pid))
    t0 = time.perf_counter()
    try:
        received = await link.stream(nbytes)
    finally:
        sampler.stop()
    seconds = time.perf_counter() - t0
    cpu1 = (time.process_time(), None if in_process else cpu_seconds(link.worker_pid))
    gb = max(received, 1) / 1e9
    return {
        "mb_per_s": received / seconds / 1e6,
        "bytes": received, "expected_bytes": nbytes, "seconds": seconds,
        "master_rss_start_kib": sampler.start_values.get("master"),
        "master_peak_rss_kib": sampler.peaks.get("master"),
        "master_hwm_kib": hwm_kib(None),
        "worker_rss_start_kib": None if in_process else sampler.start_values.get("worker"),
        "worker_peak_rss_kib": None if in_process else sampler.peaks.get("worker"),
        "worker_hwm_kib": None if in_process else hwm_kib(link.worker_pid),
        "master_cpu_s_per_gb": (cpu1[0] - cpu0[0]) / gb,
        "worker_cpu_s_per_gb": None if cpu0[1] is None or cpu1[1] is None else (cpu1[1] - cpu0[1]) / gb,
        "in_process": in_process,
    }


async def run_storm(reactor: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from .storm import PASSWORD, storm, worker_name

    subject, count, deadline = spec["subject"], spec["storm_workers"], spec["storm_deadline"]
    names = [worker_name(i) for i in range(count)]
    counter: dict[str, Any] = {"n": 0, "last": None}

    def on_login() -> None:
        counter["n"] += 1
        counter["last"] = time.monotonic()

    cleanup: list[Any] = []
    in_process = False
    argv: list[str]
    obj: Any
    guard: Any = None
    if subject in ("raw-tcp", "raw-pb", "raw-amp"):
        if subject == "raw-tcp":
            from .sides import raw_tcp

            obj, port = raw_tcp.listen(reactor, 1024)
        elif subject == "raw-pb":
            from .sides import raw_pb

            obj, port = raw_pb.listen_storm(reactor, names, PASSWORD)
        else:
            from .sides import raw_amp

            obj, port = raw_amp.listen(reactor, 1024, 1)
        obj.on_login = on_login
        cleanup.append(port.stopListening)
        argv = python_argv("bench.storm", subject, str(count), str(deadline), "127.0.0.1", str(port.getHost().port))
    else:
        from .sides.ww import start_listener

        backend, master, listener = start_listener(spec["backend"], reactor)
        master.on_connection = on_login
        guard = getattr(listener, "login_guard", None)
        cleanup.append(listener.stopListening)
        port_str = backend.loopback_port()
        address = None
        for name in names:
            reg = await listener.updateRegistration(name, PASSWORD, port_str)
            assert reg is not None
            address = address or reg.getAddress()
        in_process = backend.in_process
        argv = python_argv("bench.storm", "ww", str(count), str(deadline), spec["backend"], str(address))
    gc.collect()
    rss_before = rss_kib(None) or 0
    connectors: list[Any] = []
    try:
        if in_process:
            from collections import Counter

            from .storm import storm as run, ww_connect_factory

            errors: Counter[str] = Counter()
            connect_one = ww_connect_factory(reactor, spec["backend"], str(address), deadline, connectors, errors)
            outcome = await run(reactor, connect_one, count, deadline, errors)
        else:
            child = spawn("storm client", argv)
            cleanup.append(child.terminate)
            line = await within(child.whenLine("DONE "), reactor, deadline + 60, "the storm client")
            outcome = json.loads(line)
        # Let the master finish attaching what the client already saw as connected.
        settle = time.monotonic() + 2.0
        while counter["n"] < outcome["connected"] and time.monotonic() < settle:
            await _sleep(reactor, 0.02)
        gc.collect()
        rss_after = rss_kib(None) or 0
    finally:
        for c in connectors:
            try:
                await within(c.stop(), reactor, 10, "a connector to stop")
            except Exception:
                pass
        for step in reversed(cleanup):
            try:
                await within(ensureDeferred(_maybe(step())), reactor, 30, "storm cleanup")
            except Exception:
                pass
    master_n = counter["n"]
    all_in = outcome["connected"] == count and master_n >= count
    last = max(x for x in (outcome["t_last"], counter["last"]) if x is not None) if master_n else None
    return {"storm": {
        "workers": count, "connected": min(outcome["connected"], master_n), "client_connected": outcome["connected"],
        "master_connections": master_n, "failed": count - min(outcome["connected"], master_n),
        "seconds": (last - outcome["t_start"]) if (all_in and last is not None) else None,
        "deadline": deadline, "master_rss_before_kib": rss_before, "master_rss_after_kib": rss_after,
        "master_rss_per_conn_kib": (rss_after - rss_before) / master_n if master_n else None,
        "attempt_errors": outcome.get("errors", {}), "in_process": in_process,
        # What the listener's login guard did: how many waited for a slot, were closed at a cap...
        "master_guard": {k: guard.stats[k] for k in ("accepted", "waited", "closed_at_cap", "timed_out",
                                                     "wait_timed_out")} if guard is not None else None,
    }}


async def _maybe(value: Any) -> Any:
    from twisted.internet.defer import Deferred

    if isinstance(value, Deferred):
        return await value
    return value


def _sleep(reactor: Any, seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


def main(argv: list[str]) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    raise_fd_limit()
    spec = json.loads(argv[0])
    outcome: dict[str, Any] = {}

    async def go() -> None:
        try:
            if spec["scenarios"] == ["storm"]:
                outcome.update(await run_storm(reactor, spec))
            else:
                outcome.update(await run_link(reactor, spec))
        except Exception as e:
            traceback.print_exc()
            outcome["error"] = f"{type(e).__name__}: {e}"
        finally:
            reactor.callLater(0, reactor.stop)

    reactor.callWhenRunning(lambda: ensureDeferred(go()))
    label = spec.get("backend", spec["subject"]) + ("-" + spec["variant"] if spec.get("variant") else "")
    profiled(f"master-{label}-{'-'.join(spec['scenarios'])}", reactor.run)
    sys.stdout.write("RESULT " + json.dumps(outcome) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
