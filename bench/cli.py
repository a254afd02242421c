"""``python -m bench [--quick | --smoke]``: run every scenario for every installed backend
beside its raw baselines, then write the JSON results and docs/benchmarks.md."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import replace
from typing import Any, Iterator

from .aggregate import METRICS, aggregate
from .plan import BROKER_SUBJECTS, NOT_IN_QUICK, PROFILES, Profile, Subject, plan_subjects, trial_spec
from .procfs import machine_info
from .report import markdown
from .runner import REPO, run_trial
from .targets import judge

__all__ = ["main", "run"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions (under a minute)")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition (a few seconds; for trying changes to the bench code)")
    p.add_argument("--reps", type=int, help="repetitions (default: 5 full, 3 quick, 1 smoke)")
    p.add_argument("--backends", help="comma-separated backend names (default: every installed backend)")
    p.add_argument("--only", help="comma-separated subject ids to run (e.g. raw-pb,pb)")
    p.add_argument("--render", action="store_true",
                   help="measure nothing: rewrite the Markdown page from the results file (e.g. after editing "
                   "bench/findings.py)")
    p.add_argument("--scenarios", help="comma-separated scenarios to run (rtt,pipelined,stream,storm,transfer,"
                   "storm10k; default all but storm10k; transfer only in full mode, 256 MiB each way: minutes; "
                   "storm10k only when named: 10,000 workers against one master per network backend, ~4 min "
                   "each (--quick: 2,000, --smoke: 200). --scenarios transfer or storm10k alone keeps the other "
                   "figures of the results file and page)")
    p.add_argument("--profile", metavar="DIR", help="run every bench process under cProfile, stats into DIR "
                   "(slows everything: for finding hot paths, not for figures)")
    p.add_argument("--json", help="results file (default: bench/results.json; with --profile: in DIR)")
    p.add_argument("--markdown", help="Markdown page (default: docs/benchmarks.md; with --profile: in DIR)")
    return p


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def run(profile: Profile, subjects: list[Subject], installed: list[dict[str, Any]], command: str,
        want_transfer: bool = False, storm10k_backends: list[str] | None = None) -> dict[str, Any]:
    t_start = time.monotonic()
    machine = machine_info()
    runs: dict[str, list[dict[str, Any]]] = {s.id: [] for s in subjects}
    errors: dict[str, list[str]] = {s.id: [] for s in subjects}

    def one(subject: Subject, scenarios: list[str], rep: int) -> None:
        t0 = time.monotonic()
        result = run_trial(trial_spec(subject, profile, scenarios), profile.trial_timeout + 60)
        runs[subject.id].append(result)
        problems = [result["error"]] if "error" in result else []
        problems += [f"{k}: {v['error']}" for k, v in result.items() if isinstance(v, dict) and "error" in v]
        for prob in problems:
            errors[subject.id].append(f"rep {rep + 1} {'/'.join(scenarios)}: {prob}")
            _log(f"  ! {subject.id}: {prob}\n{result.get('log_tail', '')}")
        _log(f"  rep {rep + 1}/{profile.reps} {subject.id:<16} {'/'.join(scenarios):<22} "
             f"{time.monotonic() - t0:5.1f} s  {_brief(result)}")

    for rep in range(profile.reps):
        for subject in subjects:
            link = [s for s in subject.scenarios if s in ("rtt", "pipelined", "stream")]
            if link:
                one(subject, link, rep)
        for subject in subjects:
            if subject.storm:
                one(subject, ["storm"], rep)
    transfer = _transfer(profile) if want_transfer else None
    storm10k = _storm10k(profile, storm10k_backends) if storm10k_backends is not None else None
    summaries = {s.id: aggregate(runs[s.id]) for s in subjects}
    verdicts = judge(subjects, summaries, profile)
    return {
        "command": command,
        "machine": machine,
        "profile": {**profile.__dict__},
        "backends": installed,
        "elapsed_s": time.monotonic() - t_start,
        "subjects": {
            s.id: {"label": s.label, "kind": s.kind, "baseline": s.baseline, "scenarios": list(s.scenarios),
                   "storm": s.storm, "summary": summaries[s.id], "errors": errors[s.id],
                   "runs": [{k: v for k, v in r.items() if k != "log_tail"} for r in runs[s.id]]}
            for s in subjects
        },
        "targets": [v.as_dict() for v in verdicts],
        **({"transfer": transfer} if transfer is not None else {}),
        **({"storm10k": storm10k} if storm10k is not None else {}),
    }


#: Bytes each way of the transfer scenario, in MiB (issue 11 asks for 256).
TRANSFER_MIB = 256


def _transfer(profile: Profile) -> dict[str, Any]:
    """The ``transfer`` scenario: ``python -m bench.transfer`` in its own
    process (it runs its own masters and workers), its figures as
    :func:`bench.transfer.summarize` gives them, or ``{"error": ...}``."""
    import subprocess
    import tempfile

    from .sides.base import child_env

    _log(f"  transfer: {TRANSFER_MIB} MiB each way, {profile.reps} repetitions (minutes)")
    with tempfile.TemporaryDirectory(prefix="workerwire-bench-transfer-") as tmp:
        out = os.path.join(tmp, "transfer.json")
        argv = [sys.executable, "-m", "bench.transfer", "--size-mib", str(TRANSFER_MIB), "--reps", str(profile.reps),
                "--json", out]
        try:
            proc = subprocess.run(argv, cwd=REPO, env=child_env(), capture_output=True, text=True,
                                  timeout=profile.trial_timeout * 2 * profile.reps + 600)
        except subprocess.TimeoutExpired as e:
            return {"error": f"python -m bench.transfer did not finish in {e.timeout:.0f} s"}
        if proc.returncode != 0 or not os.path.exists(out):
            return {"error": f"python -m bench.transfer exited {proc.returncode}: {proc.stderr[-2000:]}"}
        _log(proc.stdout.rstrip())
        with open(out, encoding="utf-8") as f:
            figures: dict[str, Any] = json.load(f)
    figures["command"] = " ".join(["python", *argv[1:-2]])
    return figures


@contextlib.contextmanager
def _broker_for(subjects: list[Subject]) -> Iterator[None]:
    """A private RabbitMQ broker for the run when a subject needs one (its URL in
    ``$WORKERWIRE_AMQP_URL``, which the trials inherit), unless that names one already."""
    from workerwire_amqp.private_broker import URL_ENV, PrivateBroker

    if os.environ.get(URL_ENV) or not any(s.id in BROKER_SUBJECTS for s in subjects):
        yield
        return
    t0 = time.monotonic()
    broker = PrivateBroker().start()
    _log(f"bench: private RabbitMQ broker for {', '.join(s.id for s in subjects if s.id in BROKER_SUBJECTS)} "
         f"started in {time.monotonic() - t0:.1f} s")
    os.environ[URL_ENV] = broker.url
    try:
        yield
    finally:
        del os.environ[URL_ENV]
        broker.stop()


#: ``python -m bench.storm10k`` arguments per mode (full: its defaults, 10,000 workers from 4 clients).
STORM10K_ARGS = {
    "full": [],
    "quick": ["--workers", "2000", "--clients", "2", "--idle-window", "10", "--stress-window", "10"],
    "smoke": ["--workers", "200", "--clients", "2", "--idle-window", "2", "--stress-interval", "1",
              "--stress-timeout", "1", "--stress-window", "3", "--max-seconds", "300"],
}


def _storm10k(profile: Profile, backends: list[str]) -> dict[str, Any]:
    """The ``storm10k`` scenario: ``python -m bench.storm10k`` in its own
    process (it runs its own master and client processes), its figures, or
    ``{"error": ...}``."""
    import subprocess
    import tempfile

    from .sides.base import child_env
    from .storm10k import parser

    argv_tail = STORM10K_ARGS[profile.name] + ["--backends", ",".join(backends)]
    limit = parser().parse_args(argv_tail).max_seconds + 120
    _log(f"  storm10k: python -m bench.storm10k {' '.join(argv_tail)} (up to {limit:.0f} s)")
    with tempfile.TemporaryDirectory(prefix="workerwire-bench-storm10k-") as tmp:
        out = os.path.join(tmp, "storm10k.json")
        argv = [sys.executable, "-m", "bench.storm10k", *argv_tail, "--json", out]
        try:
            proc = subprocess.run(argv, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, timeout=limit, start_new_session=True)
        except subprocess.TimeoutExpired as e:
            return {"error": f"python -m bench.storm10k did not finish in {e.timeout:.0f} s"}
        _log(proc.stderr.rstrip())
        if not os.path.exists(out):
            return {"error": f"python -m bench.storm10k exited {proc.returncode}: {proc.stderr[-2000:]}"}
        with open(out, encoding="utf-8") as f:
            figures: dict[str, Any] = json.load(f)
    return figures


def _brief(result: dict[str, Any]) -> str:
    parts = []
    if "rtt" in result and "calls_per_s" in result["rtt"]:
        parts.append(f"rtt {result['rtt']['calls_per_s']:,.0f}/s")
    if "pipelined" in result and "calls_per_s" in result["pipelined"]:
        parts.append(f"pipe {result['pipelined']['calls_per_s']:,.0f}/s")
    if "stream" in result and "mb_per_s" in result["stream"]:
        parts.append(f"stream {result['stream']['mb_per_s']:,.1f} MB/s")
    if "storm" in result and "connected" in result["storm"]:
        st = result["storm"]
        secs = "—" if st["seconds"] is None else f"{st['seconds']:.2f} s"
        per = "—" if st["master_rss_per_conn_kib"] is None else f"{st['master_rss_per_conn_kib']:.1f} KiB/conn"
        parts.append(f"storm {st['connected']}/{st['workers']} {secs} {per}")
    return ", ".join(parts)


def missing_figures(results: dict[str, Any]) -> list[str]:
    """Figures a complete run must have but this one lacks (used by tests/test_bench_quick.py).

    In-process subjects have no separate worker process, so no worker RSS;
    a storm in which some worker never connected has no "seconds until all
    connected" (its ``failed`` count says why).
    """
    missing = []
    transfer = results.get("transfer")
    if transfer is not None and "error" in transfer:
        missing.append(f"transfer: {transfer['error'][:200]}")
    storm10k = results.get("storm10k")
    if storm10k is not None:
        if "error" in storm10k:
            missing.append(f"storm10k: {storm10k['error'][:200]}")
        for name, fig in storm10k.get("backends", {}).items():
            if "error" in fig:
                missing.append(f"storm10k {name}: {fig['error'][:200]}")
            for part in ("idle", "stress"):
                if "error" in fig.get(part, {}):
                    missing.append(f"storm10k {name} {part}: {fig[part]['error'][:200]}")
    for sid, sub in results["subjects"].items():
        in_process = sid == "floor" or sub["baseline"] == "floor"
        wanted = list(sub["scenarios"]) + (["storm"] if sub["storm"] else [])
        for scen in wanted:
            summary = sub["summary"].get(scen, {})
            for metric in METRICS[scen]:
                if in_process and metric.startswith("worker_"):
                    continue
                if scen == "storm" and metric == "seconds" and (summary.get("failed") or {}).get("max"):
                    continue
                if summary.get(metric) is None:
                    missing.append(f"{sid} {scen} {metric}")
    return missing


def _with_sections(json_path: str, fresh: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The stored results of *json_path* with *fresh*'s figures of the
    sections *keys* (``transfer``, ``storm10k``), or *fresh* itself when
    nothing is stored."""
    try:
        with open(json_path, encoding="utf-8") as f:
            stored: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        return fresh
    for key in keys:
        if key in fresh:
            stored[key] = fresh[key]
    return stored


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = PROFILES[name]
    if args.reps:
        profile = Profile(**{**profile.__dict__, "reps": args.reps})
    only_backends = args.backends.split(",") if args.backends else None
    subjects, installed = plan_subjects(only_backends)
    if name == "quick":
        subjects = [s for s in subjects if s.id not in NOT_IN_QUICK]
    if args.only:
        keep = set(args.only.split(","))
        subjects = [s for s in subjects if s.id in keep]
    want_transfer = name == "full" and (not args.scenarios or "transfer" in args.scenarios.split(","))
    want_storm10k = bool(args.scenarios) and "storm10k" in args.scenarios.split(",")
    storm10k_backends: list[str] | None = None
    if want_storm10k:
        from .storm10k import BACKENDS

        storm10k_backends = [b for b in BACKENDS if only_backends is None or b in only_backends]
    if args.scenarios:
        wanted = set(args.scenarios.split(","))
        subjects = [replace(s, scenarios=tuple(x for x in s.scenarios if x in wanted), storm=s.storm and "storm" in wanted)
                    for s in subjects]
        subjects = [s for s in subjects if s.scenarios or s.storm]
    asked = set((args.backends or "").split(",")) | set((args.only or "").split(","))
    if name != "full":
        # A broker's start (4-5 s idle, 10-17 s under load) and its two subjects (~80 s of
        # --quick under load) are not cheap: --quick/--smoke measure them only when asked.
        subjects = [s for s in subjects if s.id not in BROKER_SUBJECTS or s.id in asked
                    or ("amqp" in asked and s.id == "raw-pika")]
    out_dir = os.path.abspath(args.profile) if args.profile else None
    json_path = args.json or os.path.join(out_dir or os.path.join(REPO, "bench"), "results.json")
    page_path = args.markdown or os.path.join(out_dir or os.path.join(REPO, "docs"), "benchmarks.md")
    if out_dir:
        from .profiling import ENV

        os.environ[ENV] = out_dir
    if args.render:
        with open(json_path, encoding="utf-8") as f:
            stored = json.load(f)
        with open(page_path, "w", encoding="utf-8") as f:
            f.write(markdown(stored))
        _log(f"bench: rewrote {page_path} from {json_path}")
        return 0
    command = "python -m bench" + {"full": "", "quick": " --quick", "smoke": " --smoke"}[name]
    _log(f"bench: {name} mode, {profile.reps} repetitions; subjects: {', '.join(s.id for s in subjects)}")
    with _broker_for(subjects):
        if (want_transfer or want_storm10k) and not subjects:  # alone: keep the stored figures of the others
            results = _with_sections(json_path, run(profile, [], installed, command, want_transfer,
                                                    storm10k_backends), ["transfer", "storm10k"])
        else:
            results = run(profile, subjects, installed, command, want_transfer, storm10k_backends)
            if name == "full" and not want_storm10k:  # storm10k runs only when named: keep its stored figures
                stored = _with_sections(json_path, {}, [])
                if "storm10k" in stored:
                    results["storm10k"] = stored["storm10k"]
    for path, text in ((json_path, json.dumps(results, indent=1) + "\n"), (page_path, markdown(results))):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    _log(f"bench: wrote {json_path} and {page_path} in {results['elapsed_s']:.0f} s")
    missing = missing_figures(results)
    if missing:
        _log("bench: missing figures: " + ", ".join(missing))
        return 1
    return 0
