"""Keeps the msgpack worker comparison of the benchmark working: ``python -m
bench --smoke`` with the workerwire msgpack worker (bench worker and the
``workerwire worker`` daemon) and a stock ``buildbot-worker`` created with
``--protocol msgpack_experimental_v7``, each running the same shell command
into a workerwire msgpack master, reports their streaming figures and judges
the issue's ">= 5x stock buildbot-worker over msgpack" target.  ``--quick``
(tests/test_bench_quick.py) leaves these subjects out to stay as fast as it
was.  No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ("msgpack/app-worker", "msgpack/shell", "buildbot-worker/msgpack")


def test_bench_smoke_compares_msgpack_workers_with_stock_buildbot_worker(tmp_path: Path) -> None:
    results_path, page_path = tmp_path / "results.json", tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", ",".join(PEERS), "--json", str(results_path),
         "--markdown", str(page_path)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads(results_path.read_text())
    subjects = results["subjects"]
    assert sorted(subjects) == sorted(PEERS)
    for sid in PEERS:
        assert not subjects[sid]["errors"], subjects[sid]["errors"]
        # buildbot-worker over msgpack sends whole lines: it ends the printer's
        # partial last line with "\n" (one byte more than was printed).
        extra = 1 if sid == "buildbot-worker/msgpack" else 0
        for run in subjects[sid]["runs"]:
            assert run["stream"]["expected_bytes"] == 1024 * 1024, (sid, run)
            assert run["stream"]["bytes"] == 1024 * 1024 + extra, (sid, run)
    sys.path.insert(0, REPO)
    try:
        from bench.cli import missing_figures
    finally:
        sys.path.remove(REPO)
    assert missing_figures(results) == []
    judged = {v["subject"]: v for v in results["targets"] if v["target"] == "msgpack worker vs buildbot-worker streaming"}
    assert sorted(judged) == ["msgpack/app-worker", "msgpack/shell"]
    for v in judged.values():
        assert v["met"] is not None and v["baseline"] is not None, v
    page = page_path.read_text()
    for sid in PEERS:
        assert f"`{sid}`" in page
