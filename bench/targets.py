"""The issue's targets, judged as ratios against baselines measured in the same run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .aggregate import median
from .plan import BBW_MSGPACK, Profile, Subject

__all__ = ["Verdict", "judge"]

Summaries = dict[str, dict[str, dict[str, Any]]]

KiB = 1024


@dataclass
class Verdict:
    target: str
    subject: str
    measured: float | None
    baseline: float | None
    ratio: float | None
    needed: str
    met: bool | None  # None: could not be judged (a figure is missing)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _at_least(target: str, subject: str, a: float | None, base: float | None, need: float,
              base_name: str, unit: str) -> Verdict:
    r = _ratio(a, base)
    return Verdict(target, subject, a, base, r, f">= {need:g}x {base_name} ({unit})",
                   None if r is None else r >= need)


def judge(subjects: list[Subject], s: Summaries, profile: Profile) -> list[Verdict]:
    out: list[Verdict] = []
    backends = [x for x in subjects if x.kind == "backend"]
    network = [x for x in backends if x.baseline != "floor"]
    for b in network:
        if b.baseline in ("raw-pb", "raw-amp", "raw-ws"):
            out.append(_at_least("call round trip overhead", b.id, median(s.get(b.id, {}), "rtt", "calls_per_s"),
                                 median(s.get(b.baseline, {}), "rtt", "calls_per_s"), 0.9, b.baseline, "calls/s"))
    for b in network:
        out.append(_at_least("output streaming vs own transport", b.id,
                             median(s.get(b.id, {}), "stream", "mb_per_s"),
                             median(s.get(b.baseline or "raw-tcp", {}), "stream", "mb_per_s"), 1.0,
                             b.baseline or "raw-tcp", "MB/s"))
    if network:
        rates = {b.id: median(s.get(b.id, {}), "stream", "mb_per_s") for b in network}
        known = {k: v for k, v in rates.items() if v is not None}
        best = max(known, key=lambda k: known[k]) if known else network[0].id
        v = _at_least("fastest backend streaming vs raw TCP", best, known.get(best),
                      median(s.get("raw-tcp", {}), "stream", "mb_per_s"), 0.5, "raw-tcp", "MB/s")
        out.append(v)
    n = profile.storm_workers
    for b in network:
        st = s.get(b.id, {}).get("storm")
        connected = median(s.get(b.id, {}), "storm", "connected")
        failed_max = st["failed"]["max"] if st and st.get("failed") else None
        out.append(Verdict("storm: all logged in", b.id, connected, n, _ratio(connected, n),
                           f"{n} of {n} in every repetition", None if failed_max is None else failed_max == 0))
        secs = st["seconds"] if st else None
        worst = secs["max"] if secs else None
        if failed_max:  # some repetition never got every worker in: that time is unbounded
            out.append(Verdict("storm: time until all connected", b.id, None, None, None,
                               "< 3 s (slowest repetition)", False,
                               f"not every worker connected within the {profile.storm_deadline:g} s deadline"))
        else:
            out.append(Verdict("storm: time until all connected", b.id, worst, None, None,
                               "< 3 s (slowest repetition)", None if worst is None else worst < 3.0))
        per = median(s.get(b.id, {}), "storm", "master_rss_per_conn_kib")
        out.append(Verdict("storm: master RSS per connection", b.id, per, None, None, "<= 12 KiB",
                           None if per is None else per <= 12.0))
    for b in backends:
        if b.baseline == "floor":
            for scen in ("rtt", "pipelined"):
                out.append(_at_least(f"in-process delivery ({scen})", b.id,
                                     median(s.get(b.id, {}), scen, "calls_per_s"),
                                     median(s.get("floor", {}), scen, "calls_per_s"), 0.8, "floor", "calls/s"))
    ids = {x.id for x in subjects}
    if "buildbot-worker" in ids:
        for peer in ("pb/app-worker", "pb/shell"):
            if peer in ids:
                out.append(_at_least("pb worker vs buildbot-worker streaming", peer,
                                     median(s.get(peer, {}), "stream", "mb_per_s"),
                                     median(s.get("buildbot-worker", {}), "stream", "mb_per_s"), 5.0,
                                     "buildbot-worker", "MB/s"))
    if BBW_MSGPACK in ids:
        for peer in ("msgpack/app-worker", "msgpack/shell"):
            if peer in ids:
                out.append(_at_least("msgpack worker vs buildbot-worker streaming", peer,
                                     median(s.get(peer, {}), "stream", "mb_per_s"),
                                     median(s.get(BBW_MSGPACK, {}), "stream", "mb_per_s"), 5.0,
                                     BBW_MSGPACK, "MB/s"))
    bound = max(16 * 1024, profile.stream_bytes // KiB // 8)  # KiB
    for x in subjects:
        if x.kind == "baseline" or "stream" not in x.scenarios:
            continue
        for role in ("master", "worker"):
            st = s.get(x.id, {}).get("stream", {}).get(f"{role}_growth_kib")
            if st is None and role == "worker" and x.baseline == "floor":
                continue  # in-process: one process, judged as the master
            worst = st["max"] if st else None
            out.append(Verdict(f"flat memory while streaming ({role})", x.id,
                               None if worst is None else worst / 1024, None, None,
                               f"RSS growth <= {bound // 1024} MiB (MiB, max over reps)",
                               None if worst is None else worst <= bound))
    return out


#: Issue 18's targets for the 10,000-worker storm (:mod:`bench.storm10k`).
STORM10K_ATTACH_S = 10.0
STORM10K_RSS_KIB = 8.0
STORM10K_IDLE_CPU_PCT = 5.0
STORM10K_REJOIN_S = 60.0
#: The backends the issue names; the others measured are shown, not judged.
STORM10K_JUDGED = ("pb", "amp")


def judge_storm10k(results: dict[str, Any]) -> list[Verdict]:
    """Issue 18's targets from :func:`bench.storm10k.run`'s figures: per judged
    backend, all logged in, all attached within 10 s, <= 8 KiB master RSS per
    connection, idle master CPU <= 5 % of one core at a 60 s keepalive
    interval, 0 keepalive deadline misses at 5 s, all back within 60 s of a
    master restart (from the SIGKILL)."""
    out: list[Verdict] = []
    for name, fig in results.get("backends", {}).items():
        if name not in STORM10K_JUDGED:
            continue
        if "idle" not in fig and "error" not in fig:
            continue  # a --tracemalloc / --only-attach diagnosis: nothing to judge
        if "error" in fig:
            out.append(Verdict("storm10k: measured", name, None, None, None, "a complete run", False, fig["error"]))
            continue
        att, idle, rst, stress = fig["attach"], fig["idle"], fig["restart"], fig["stress"]
        n = att["workers"]
        out.append(Verdict("storm10k: all logged in", name, att["connected"], n, _ratio(att["connected"], n),
                           f"{n} of {n}", att["connected"] == n))
        secs = att["seconds"]
        out.append(Verdict("storm10k: time until all attached", name, secs, None, None,
                           f"<= {STORM10K_ATTACH_S:g} s", None if secs is None else secs <= STORM10K_ATTACH_S,
                           "" if secs is not None else "not all attached"))
        per = att["master_rss_per_conn_kib"]
        out.append(Verdict("storm10k: master RSS per connection", name, per, None, None,
                           f"<= {STORM10K_RSS_KIB:g} KiB", None if per is None else per <= STORM10K_RSS_KIB))
        cpu = idle.get("master_cpu_pct")
        out.append(Verdict(f"storm10k: idle master CPU, keepalive {fig['settings_interval']:g} s", name, cpu, None,
                           None, f"<= {STORM10K_IDLE_CPU_PCT:g} % of one core",
                           None if cpu is None else cpu <= STORM10K_IDLE_CPU_PCT, idle.get("error", "")))
        misses = stress.get("misses")
        out.append(Verdict(f"storm10k: keepalive misses at {stress['interval_s']:g} s", name, misses,
                           None, None, "0 (master and workers)",
                           None if misses is None else misses == 0 and stress["live_at_end"] == n,
                           stress.get("error", "")))
        back = rst["seconds_from_kill"]
        out.append(Verdict("storm10k: all back after a master restart", name, back, None, None,
                           f"<= {STORM10K_REJOIN_S:g} s from the SIGKILL",
                           False if back is None else back <= STORM10K_REJOIN_S,
                           "" if back is not None else f"{rst['back']} of {n} back within {rst['limit_s']:g} s"))
    return out
