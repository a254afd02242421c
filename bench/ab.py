"""``python -m bench.ab REV [bench options]``: this tree against revision REV, on the same bench, interleaved.

Each round runs ``python -m bench`` twice, first with REV's packages (``git archive REV`` unpacked into a
temporary directory, its packages put first on ``PYTHONPATH`` through links named as ``setup.cfg``'s
``package_dir`` names them), then with this tree's; the bench code, the raw baselines and the machine are the
same for both.  What is compared is each backend's figure as a ratio to its raw baseline measured in the same
run (so a change of load between runs cancels out), as the median over the rounds, beside the absolute medians.

Example: ``python -m bench.ab a07bfd8 --rounds 2 -- --quick --only amp,raw-amp,pb,raw-pb --scenarios rtt,stream``
(everything after ``--`` goes to ``python -m bench``; ``--json``/``--markdown`` are set here, to a temporary
directory: bench/results.json and docs/benchmarks.md are never written).
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from .runner import REPO

__all__ = ["main", "ratios"]

#: (scenario, metric, higher is better) compared per backend.
COMPARED: tuple[tuple[str, str, bool], ...] = (
    ("rtt", "calls_per_s", True),
    ("pipelined", "calls_per_s", True),
    ("stream", "mb_per_s", True),
    ("stream", "master_cpu_s_per_gb", False),
    ("stream", "worker_cpu_s_per_gb", False),
)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def unpack(rev: str) -> str:
    """A directory whose entries are REV's top-level packages (links into its unpacked sources)."""
    sha = _git("rev-parse", "--verify", rev + "^{commit}")
    base = os.path.join(tempfile.gettempdir(), f"workerwire-ab-{sha[:12]}")
    src, overlay = os.path.join(base, "src"), os.path.join(base, "packages")
    if not os.path.isdir(overlay):
        os.makedirs(src, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
        config = configparser.ConfigParser()
        config.read(os.path.join(src, "setup.cfg"))
        os.makedirs(overlay + ".partial", exist_ok=True)
        for line in config["options"]["package_dir"].strip().splitlines():
            name, _, path = (part.strip() for part in line.partition("="))
            if "." not in name:
                os.symlink(os.path.join(src, path), os.path.join(overlay + ".partial", name))
        os.rename(overlay + ".partial", overlay)
    return overlay


def _bench(bench_args: list[str], packages: str | None, out: str, cwd: str = REPO) -> dict[str, Any]:
    env = dict(os.environ)
    if packages is not None:
        env["PYTHONPATH"] = packages + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    where = subprocess.run([sys.executable, "-c", "import workerwire_amp, workerwire_pb; print(workerwire_pb.__file__)"],
                           env=env, cwd=REPO, capture_output=True, text=True).stdout.strip()
    expected = packages if packages is not None else REPO
    if not where.startswith(expected):
        raise SystemExit(f"bench.ab: the backends import from {where!r}, not from {expected!r}")
    done = subprocess.run([sys.executable, "-m", "bench", *bench_args, "--json", out + ".json",
                           "--markdown", out + ".md"], cwd=cwd, env=env, check=False)
    if not os.path.exists(out + ".json"):
        raise SystemExit(f"bench.ab: python -m bench in {cwd} ended with status {done.returncode} and no results "
                         "(a revision whose backends the bench code cannot drive: try --rev-bench)")
    with open(out + ".json", encoding="utf-8") as f:
        results: dict[str, Any] = json.load(f)
    return results


def _median(results: dict[str, Any], subject: str, scenario: str, metric: str) -> float | None:
    summary = results["subjects"].get(subject, {}).get("summary", {}).get(scenario, {}).get(metric)
    return None if not summary else summary["median"]


def ratios(results: dict[str, Any]) -> dict[tuple[str, str, str], tuple[float, float]]:
    """``{(backend, scenario, metric): (median, median / its baseline's median)}`` of one bench run."""
    out = {}
    for sid, subject in results["subjects"].items():
        base = subject.get("baseline")
        if subject.get("kind") != "backend" or not base:
            continue
        for scenario, metric, _ in COMPARED:
            value, reference = _median(results, sid, scenario, metric), _median(results, base, scenario, metric)
            if value is not None and reference:
                out[(sid, scenario, metric)] = (value, value / reference)
    return out


def _table(rev: str, before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    rows = ["| backend | figure | before: median (x raw) | after: median (x raw) | after / before (x raw) |",
            "| --- | --- | ---: | ---: | ---: |"]
    runs = [[ratios(r) for r in before], [ratios(r) for r in after]]
    keys = sorted({k for side in runs for run in side for k in run})
    better = {(s, m): hi for s, m, hi in COMPARED}
    for key in keys:
        cells = []
        for side in runs:
            got = [run[key] for run in side if key in run]
            cells.append(None if not got else (statistics.median(v for v, _ in got),
                                               statistics.median(x for _, x in got)))
        b, a = cells
        text = [f"{v:,.2f} ({x:.2f}x)" if v is not None else "—" for v, x in (c or (None, None) for c in (b, a))]
        change = "—"
        if a and b and b[1]:
            change = f"{a[1] / b[1]:.2f}" + ("" if better[key[1:]] else " (lower is better)")
        rows.append(f"| {key[0]} | {key[1]} {key[2]} | {text[0]} | {text[1]} | {change} |")
    return f"before = {rev}, after = this tree; {len(before)} + {len(after)} bench runs, interleaved\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rev", help="the revision to compare this tree against (e.g. main, a07bfd8)")
    p.add_argument("--rounds", type=int, default=2, help="before/after pairs to run (default 2)")
    p.add_argument("--rev-bench", action="store_true",
                   help="run REV's own bench code for REV (for a revision older than this bench's API); its raw "
                   "baselines may be defined otherwise than this tree's: compare the absolute medians then")
    p.add_argument("--save", help="also write the comparison (Markdown) to this file")
    args = p.parse_args(own)
    packages = unpack(args.rev)
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="workerwire-ab-") as tmp:
        for n in range(args.rounds):
            print(f"bench.ab: round {n + 1}/{args.rounds}: {args.rev}", file=sys.stderr, flush=True)
            before.append(_bench(bench_args, packages, os.path.join(tmp, f"before{n}"),
                                 os.path.dirname(packages) + "/src" if args.rev_bench else REPO))
            print(f"bench.ab: round {n + 1}/{args.rounds}: this tree", file=sys.stderr, flush=True)
            after.append(_bench(bench_args, None, os.path.join(tmp, f"after{n}")))
    table = _table(args.rev, before, after)
    print(table)
    if args.save:
        with open(args.save, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
