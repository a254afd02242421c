"""Keeps the benchmark command working: ``python -m bench --quick`` (the mode the
README offers for a quick look, ~40 s on 2 cores) runs to the end and reports
every figure for every installed backend.  No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from workerwire.registry import backend_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_reports_every_figure(tmp_path: Path) -> None:
    results_path, page_path = tmp_path / "results.json", tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(results_path), "--markdown", str(page_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,  # ~100 s quiet; several times that under load
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads(results_path.read_text())

    sys.path.insert(0, REPO)
    try:
        from bench.cli import missing_figures
    finally:
        sys.path.remove(REPO)
    assert missing_figures(results) == []

    subjects = results["subjects"]
    for baseline in ("floor", "raw-tcp", "raw-pb", "raw-amp"):
        assert baseline in subjects
    from bench.plan import BROKER_SUBJECTS

    for name in backend_names():
        if name in BROKER_SUBJECTS:
            continue  # measured by --quick only when asked for (tests/test_amqp_bench.py)
        assert name in subjects, f"installed backend {name!r} was not benchmarked"
        assert not subjects[name]["errors"], subjects[name]["errors"]
    if "pb" in subjects:
        assert "pb/shell" in subjects and "buildbot-worker" in subjects
    assert results["targets"], "no target was judged"
    assert all(v["met"] is not None for v in results["targets"]), [
        v for v in results["targets"] if v["met"] is None]

    page = page_path.read_text()
    for sid in subjects:
        assert f"`{sid}`" in page
    for key in ("nproc", "cpu_model", "python", "twisted", "date"):
        assert results["machine"][key]
