"""A logged-in worker that sends without reading cannot grow a real master (issue 12).

A real ``workerwire master`` process listens on 127.0.0.1 with two legitimate
``workerwire worker`` processes running job loops.  From this test process an
attacker logs in with valid credentials (the backend's own connector), takes
its link over (``Backend.raw_frames``), stops reading and sends requests the
master must answer as fast as the master takes them, for
``WORKERWIRE_FLOOD_SECONDS`` (default 25).  The connector reconnects after
every drop, and the attack starts again on the new link.  Each request names
a command id of ``WORKERWIRE_FLOOD_NAME`` characters (default 80) that is not
running, so each is answered with an error about it.  The master runs with
``send_queue_limit`` 1 MiB and ``send_queue_timeout`` 5 s
(``WORKERWIRE_FLOOD_LIMIT``, ``WORKERWIRE_FLOOD_TIMEOUT``).

It reads the master's memory from ``/proc/PID/status`` and checks that the
master's peak RSS stayed within its RSS before the attack plus
``send_queue_limit`` plus a margin, that every attacking link was dropped
(counted in the master's log), and that both legitimate workers finished
jobs all along and were never disconnected.

``WORKERWIRE_FLOOD_MASTER=/path/to/other/venv/bin/workerwire`` runs the
master from another installation (the code before this fix: the "before"
figures of docs/hostile-clients.md, whose config knows no ``send_queue_*``
keys); that run checks that the attack did grow that master past the bound,
so the bound is what the budget holds, not all the attack could reach.  The
figures of that page::

    WORKERWIRE_FLOOD_SECONDS=60 .venv/bin/pytest -q -s tests/test_unread_flood.py
    WORKERWIRE_FLOOD_SECONDS=60 WORKERWIRE_FLOOD_NAME=60000 WORKERWIRE_FLOOD_MASTER=/tmp/ww-before/.venv/bin/workerwire \
        .venv/bin/pytest -q -s tests/test_unread_flood.py
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from workerwire import LinkOptions, load_backend
from workerwire.backoff import Backoff
from workerwire.conformance import ScriptedWorker
from workerwire.conformance.harness import within

from test_app_support import REACTOR, EventLog, Processes, network_backends, processes, to_toml, until  # noqa: F401

SECONDS = float(os.environ.get("WORKERWIRE_FLOOD_SECONDS", "25"))
NAME = int(os.environ.get("WORKERWIRE_FLOOD_NAME", "80"))
MASTER_PROGRAM = os.environ.get("WORKERWIRE_FLOOD_MASTER")
BUDGET = MASTER_PROGRAM is None
SEND_QUEUE_LIMIT = int(os.environ.get("WORKERWIRE_FLOOD_LIMIT", str(1024 * 1024)))
SEND_QUEUE_TIMEOUT = float(os.environ.get("WORKERWIRE_FLOOD_TIMEOUT", "5"))
#: The master's peak RSS may exceed its RSS before the attack by the queue
#: it may hold plus this (allocator slack, one read of answers, the jobs).
MARGIN_MIB = 32
#: The attack stops once the master grew this much (a master without the
#: budget would grow until the machine runs out of memory).
SAFETY_KIB = 2 * 1024 * 1024
N_JOBS = 4000
ECHO = shutil.which("echo") or "/bin/echo"
KiB = 1024
MiB = 1024 * KiB


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == field:
            return int(value.split()[0])
    raise KeyError(field)


def _params() -> list[Any]:
    names = network_backends()
    return names or [pytest.param(None, marks=pytest.mark.skip(reason="no network backend is installed"))]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the master's memory from /proc")
@pytest.mark.parametrize("backend_name", _params())
@pytest_twisted.ensureDeferred
async def test_a_worker_that_sends_without_reading_cannot_grow_the_master(
        backend_name: str, tmp_path: Path, processes: Processes) -> None:
    backend = load_backend(backend_name)
    good = ["good-1", "good-2"]
    config = tmp_path / "master.toml"
    config.write_text(to_toml({
        "protocols": {backend_name: {"port": "tcp:port=0:interface=127.0.0.1", **({
            "send_queue_limit": SEND_QUEUE_LIMIT, "send_queue_resume": SEND_QUEUE_LIMIT // 4,
            "send_queue_timeout": SEND_QUEUE_TIMEOUT} if BUDGET else {})}},
        "workers": [{"name": name, "password": f"secret-{name}"} for name in [*good, "rogue"]],
        "jobs": [{"name": f"{name}-j{i}", "command": [ECHO, f"job {i}"], "workers": [name], "builder": "echo"}
                 for name in good for i in range(N_JOBS)],
    }))
    events_path = tmp_path / "events.jsonl"
    master = processes.start(["master", "-c", str(config), "--events", str(events_path)], name="master",
                             program=None if MASTER_PROGRAM is None else [MASTER_PROGRAM])
    events = EventLog(events_path, master)
    ready = await events.wait("ready")
    address = ready["protocols"][backend_name]["address"]
    assert master.pid is not None
    pid = master.pid
    for name in good:
        (tmp_path / f"{name}.pw").write_text(f"secret-{name}\n")
        processes.start(["worker", "--backend", backend_name, "--master", address, "--name", name,
                         "--password-file", str(tmp_path / f"{name}.pw"), "--basedir", str(tmp_path / name)],
                        name=name)
    for name in good:
        await events.wait("job_finished", worker=name, count=5)

    bot = ScriptedWorker(str(tmp_path / "rogue"), REACTOR)
    os.makedirs(bot.basedir, exist_ok=True)
    rogue = backend.create_connector(bot, address, "rogue", "secret-rogue",
                                     LinkOptions(keepalive_interval=None), REACTOR,
                                     Backoff(initial=0.2, maximum=1.0, jitter=0.1))
    before = proc_kib(pid, "VmRSS")
    jobs_before = {name: len(events.matching("job_finished", worker=name)) for name in good}
    rogue.start()
    links = 0
    sent = 0
    peak = before
    t0 = time.time()
    try:
        while time.time() - t0 < SECONDS and peak - before < SAFETY_KIB:
            await within(rogue.whenConnected(), REACTOR, what="the attacker to log in")
            raw = backend.raw_frames(rogue)
            links += 1
            lost: Deferred[None] = Deferred()
            bot.on_link_lost = lambda: None if lost.called else lost.callback(None)
            raw.stop_reading()
            frame = raw.request("flood-" + "x" * (NAME - 6))
            while not lost.called and time.time() - t0 < SECONDS and peak - before < SAFETY_KIB:
                for _ in range(8192):
                    if raw.unsent() >= 256 * KiB:
                        break
                    raw.write(frame)
                    sent += len(frame)
                peak = max(peak, proc_kib(pid, "VmRSS"))
                await deferLater(REACTOR, 0.002, lambda: None)  # pacing the flood, not a wait for an event
    finally:
        await within(rogue.stop(), REACTOR, what="the attacker to stop")
    t1 = time.time()
    hwm = proc_kib(pid, "VmHWM")
    drops = [line for line in master.text_err.splitlines() if "misbehaved" in line]
    during = {name: len([e for e in events.matching("job_finished", worker=name) if t0 <= e["time"] <= t1])
              for name in good}
    setting = (f"send_queue_limit {SEND_QUEUE_LIMIT / MiB:g} MiB, timeout {SEND_QUEUE_TIMEOUT:g} s" if BUDGET
               else f"master {MASTER_PROGRAM}")
    print(f"\n[{backend_name}] unread flood for {t1 - t0:.0f} s ({setting}), names of {NAME} characters: "
          f"{sent / MiB:.1f} MiB sent over {links} links, {len(drops)} dropped")
    print(f"[{backend_name}] master pid {pid} RSS before {before / 1024:.1f} MiB, peak during the attack "
          f"{peak / 1024:.1f} MiB (+{(peak - before) / 1024:.1f}), VmHWM {hwm / 1024:.1f} MiB, "
          f"at the end {proc_kib(pid, 'VmRSS') / 1024:.1f} MiB; jobs finished during it: {during}")
    bound_kib = SEND_QUEUE_LIMIT / KiB + MARGIN_MIB * 1024
    if not BUDGET:
        assert peak - before > bound_kib, "without the budget the attack should have grown the master"
        return
    assert peak - before < bound_kib, f"master RSS grew by {(peak - before) / 1024:.1f} MiB"
    assert hwm - before < bound_kib, f"master peak RSS (VmHWM) {(hwm - before) / 1024:.1f} MiB over the start"
    # Every link but the last (cut short by the end of the run) was dropped.  Requests
    # with long names are answered in a few bytes each, so the master's queue fills
    # slowly: with the default short names the first drop comes within the run.
    assert len(drops) >= links - 1 and (drops or NAME > 1000), (links, drops[:3], [l for l in master.text_err.splitlines() if "job" not in l][-20:])
    assert all("rogue" in line for line in drops)
    assert all(during[name] >= 1 for name in good), during
    assert all(len(events.matching("job_finished", worker=n)) > jobs_before[n] for n in good)
    assert not [e for e in events.matching("disconnected") if e.get("worker") in good]
    finished = [e for n in good for e in events.matching("job_finished", worker=n)]
    assert all(e["rc"] == 0 and e["failure"] is None for e in finished)
