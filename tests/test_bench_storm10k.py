"""Keeps the 10,000-worker storm's machinery working (issue 18) at 200 workers
from 2 client processes: ``python -m bench --smoke --scenarios storm10k`` runs
a master process, the clients, a SIGKILL and restart of the master, and the
keepalive rounds, and the figures reach the results file and the page.  No
timing is asserted; the 10,000-worker run is the coordinator's
``python -m bench --scenarios storm10k``."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("pb", "amp")


def test_storm10k_machinery_at_200_workers(tmp_path: Path) -> None:
    results_path, page_path = tmp_path / "results.json", tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--scenarios", "storm10k", "--backends", ",".join(BACKENDS),
         "--json", str(results_path), "--markdown", str(page_path)],
        cwd=REPO, capture_output=True, text=True, timeout=420,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads(results_path.read_text())
    storm = results["storm10k"]
    assert storm["settings"]["workers"] == 200 and storm["settings"]["clients"] == 2
    assert "amqp" in storm["not_measured"]
    for name in BACKENDS:
        fig = storm["backends"][name]
        assert "error" not in fig, fig
        assert fig["attach"]["connected"] == 200 and fig["attach"]["clients"] == 2
        assert fig["attach"]["master_rss_per_conn_kib"] is not None
        assert fig["attach"]["guard"]["accepted"] >= 200
        assert fig["idle"]["master_cpu_pct"] is not None
        assert fig["restart"]["back"] == 200 and fig["restart"]["worker_links_lost"] >= 200
        assert fig["restart"]["guard"]["accepted"] >= 200  # the new master's guard
        assert fig["stress"]["master_pings_answered"] > 0 and fig["stress"]["worker_pings_answered"] > 0
    judged = {(v["target"], v["subject"]) for v in storm["targets"]}
    assert len(judged) == 6 * len(BACKENDS), judged
    page = page_path.read_text()
    assert "## 10,000 workers on one master (issue 18)" in page
    for name in BACKENDS:
        assert f"| `{name}` | 200 / 200 |" in page


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))


def test_a_client_whose_open_files_limit_is_too_low_says_so_and_exits() -> None:
    """Instead of hanging with connections it cannot make."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.storm10k_client", "amp", "tcp:host=127.0.0.1:port=9", "0", "500", "60", "30",
         "10"], cwd=REPO, capture_output=True, text=True, timeout=60, preexec_fn=_low_limit,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "open-files limit is 200" in proc.stderr and "500 workers" in proc.stderr, proc.stderr[-3000:]


def test_a_master_whose_open_files_limit_is_too_low_says_so_and_exits() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.storm10k_master", "amp", "tcp:port=0:interface=127.0.0.1", "500", "60", "30"],
        cwd=REPO, capture_output=True, text=True, timeout=60, preexec_fn=_low_limit, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "open-files limit is 200" in proc.stderr and "500 workers" in proc.stderr, proc.stderr[-3000:]
