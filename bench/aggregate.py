"""Turn per-repetition trial results into medians with min and max."""

from __future__ import annotations

from typing import Any

from .stats import Summary, summarize

__all__ = ["METRICS", "aggregate", "median"]

#: The figures summarized per scenario (every one must be present in a run).
METRICS: dict[str, tuple[str, ...]] = {
    "rtt": ("calls_per_s", "mean_us", "p99_us"),
    "pipelined": ("calls_per_s",),
    "stream": ("mb_per_s", "master_peak_rss_kib", "master_growth_kib", "worker_peak_rss_kib", "worker_growth_kib",
               "master_cpu_s_per_gb", "worker_cpu_s_per_gb"),
    "storm": ("connected", "failed", "seconds", "master_rss_per_conn_kib"),
}


def _derived(scenario: str, run: dict[str, Any]) -> dict[str, Any]:
    run = dict(run)
    if scenario == "stream":
        for role in ("master", "worker"):
            peak, start = run.get(f"{role}_peak_rss_kib"), run.get(f"{role}_rss_start_kib")
            run[f"{role}_growth_kib"] = peak - start if peak is not None and start is not None else None
    return run


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, Summary | None]]:
    """``{scenario: {metric: summary}}`` over the repetitions of one subject."""
    out: dict[str, dict[str, Summary | None]] = {}
    for scenario, metrics in METRICS.items():
        per = [_derived(scenario, r[scenario]) for r in runs
               if isinstance(r.get(scenario), dict) and "error" not in r[scenario]]
        if not per:
            continue
        out[scenario] = {m: summarize(p[m] for p in per if p.get(m) is not None) for m in metrics}
    return out


def median(summary: dict[str, dict[str, Summary | None]], scenario: str, metric: str) -> float | None:
    s = summary.get(scenario, {}).get(metric)
    return None if s is None else s["median"]
