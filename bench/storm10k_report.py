"""The ``## 10,000 workers on one master`` section of docs/benchmarks.md
(issue 18), from :func:`bench.storm10k.run`'s figures."""

from __future__ import annotations

from typing import Any

from .storm10k_findings import FINDINGS, PROFILED

__all__ = ["storm10k_section"]


def _n(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def _guard(g: dict[str, int] | None) -> str:
    if not g:
        return "—"
    keys = ("accepted", "waited", "closed_at_cap", "timed_out", "wait_timed_out")
    return ", ".join(f"{k} {g.get(k, 0):,}" for k in keys if g.get(k))


def _busy(fig: dict[str, Any]) -> str:
    busy = fig.get("master_cpu_busy_pct")
    return "" if busy is None else f" (master busy {busy:.0f} %)"


def storm10k_section(r: dict[str, Any]) -> list[str]:
    lines = ["", "## 10,000 workers on one master (issue 18)", ""]
    if "error" in r:
        return lines + [f"Not measured in this run: {r['error']}"]
    st, m = r["settings"], r["machine"]
    lines += [
        f"`{r['command']}` — {st['workers']:,} workers from {st['clients']} client processes against one master "
        f"process per backend, all on 127.0.0.1; one run (no repetitions: ~4 minutes per backend), "
        f"{m['date']}, load average at start {', '.join(str(x) for x in m['loadavg_at_start'])} on {m['nproc']} "
        f"cores; took {r['elapsed_s']:.0f} s.",
        "",
        f"Round 1, keepalive every {st['interval']:g} s (timeout {st['timeout']:g} s): every worker starts its "
        "login at once (the clients' connectors, default options and backoff); *attached* is from the first "
        "client's start to the master's last attach (`time.monotonic()` across processes); RSS per connection "
        "is the master's VmRSS after all attached minus after the registrations, over the workers; *master busy* "
        "is its CPU time from its first attach to its last, over that time (near 100 %: the master was the limit; well below: workers were waiting, "
        "e.g. in backoff after the login guard closed them at a cap); idle CPU is "
        "the master's user + system time over "
        + (f"{st['idle_window']:g} s" if st.get("idle_window") else "one whole interval (every connection pings "
           "and is pinged once in it)")
        + "; then the master is killed (SIGKILL) and started again on the same port: *back* is from the kill "
        "(and from the new master listening with every worker registered) to its last attach. "
        f"Round 2, keepalive every {st['stress_interval']:g} s (timeout {st['stress_timeout']:g} s), fresh "
        f"processes: master CPU and misses over {st['stress_window']:g} s. A miss is a round trip answered "
        "later than the timeout or a link lost in the window, counted by the master and by every worker "
        "(`workerwire.observe` hooks, disconnect notices).",
        "",
        "| backend | logged in | attached (s) | master RSS/conn (KiB) | idle CPU (% of a core) | misses (idle) "
        f"| CPU at {st['stress_interval']:g} s | misses at {st['stress_interval']:g} s (master / workers) "
        "| back after restart (s from kill / from listening) | login guard, storm | login guard, rejoin |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, f in r["backends"].items():
        if "error" in f:
            lines.append(f"| `{name}` | {f['error']} |" + " |" * 9)
            continue
        a, i, rs, s = f["attach"], f["idle"], f["restart"], f["stress"]
        stress_misses = "—" if "error" in s else (f"{s['misses']} ({s['master_late'] + s['master_lost']} / "
                                                  f"{s['worker_late'] + s['worker_lost']})")
        lines.append(
            f"| `{name}` | {a['connected']:,} / {a['workers']:,} | {_n(a['seconds'], 2)}{_busy(a)} | "
            f"{_n(a['master_rss_per_conn_kib'], 2)} | {_n(i.get('master_cpu_pct'), 2)} | {i.get('misses', '—')} | "
            f"{_n(s.get('master_cpu_pct'), 2)} | {stress_misses} | "
            f"{_n(rs['seconds_from_kill'], 1)} / {_n(rs['seconds_from_ready'], 1)}{_busy(rs)}"
            + ("" if rs["back"] == rs["workers"] else f" ({rs['back']:,} back)")
            + f" | {_guard(a['guard'])} | {_guard(rs['guard'])} |")
    for name, why in r.get("not_measured", {}).items():
        lines.append(f"| `{name}` | not measured: {why} |" + " |" * 9)
    lines += ["", "| target (issue 18) | backend | measured | needed | met |", "| --- | --- | ---: | --- | --- |"]
    for v in r.get("targets", []):
        met = "—" if v["met"] is None else ("met" if v["met"] else "**not met**")
        note = f" ({v['note']})" if v.get("note") else ""
        digits = 2 if v["measured"] is not None and abs(v["measured"]) < 100 else 0
        lines.append(f"| {v['target']} | `{v['subject']}` | {_n(v['measured'], digits)} | {v['needed']} | "
                     f"{met}{note} |")
    missed = [v for v in r.get("targets", []) if v["met"] is not True]
    if missed:
        lines += ["", f"Why (profiled {PROFILED}):", ""]
        seen: set[str] = set()
        for v in missed:
            text = FINDINGS.get((v["target"], v["subject"])) or FINDINGS.get((v["target"], "*"))
            key = f"{v['target']}|{text}"
            if key in seen:
                continue
            seen.add(key)
            lines.append(f"* **{v['target']}, `{v['subject']}`** — " + (text or "not profiled yet."))
    return lines
