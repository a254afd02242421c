"""Keeps the amqp benchmark working: ``python -m bench --smoke --only raw-pika,amqp``
starts its own private broker (``$WORKERWIRE_AMQP_URL`` unset), measures the amqp
backend beside raw pika, and reports every figure.  No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from workerwire_amqp.private_broker import URL_ENV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_measures_amqp_beside_raw_pika_on_a_broker_it_starts(tmp_path: Path) -> None:
    results_path, page_path = tmp_path / "results.json", tmp_path / "benchmarks.md"
    env = {k: v for k, v in os.environ.items() if k != URL_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "raw-pika,amqp", "--json", str(results_path),
         "--markdown", str(page_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "private RabbitMQ broker for raw-pika, amqp started" in proc.stderr
    results = json.loads(results_path.read_text())
    subjects = results["subjects"]
    assert set(subjects) == {"raw-pika", "amqp"}
    assert subjects["amqp"]["baseline"] == "raw-pika" and subjects["amqp"]["storm"]
    for sid in subjects:
        assert not subjects[sid]["errors"], subjects[sid]["errors"]
    runs = {key: run[key] for run in subjects["amqp"]["runs"] for key in ("stream", "storm") if key in run}
    storm = runs["storm"]
    assert storm["connected"] == storm["workers"] and not storm["in_process"], storm
    assert runs["stream"]["worker_rss_start_kib"], "the amqp worker ran in its own process"
    judged = {v["target"] for v in results["targets"] if v["subject"] == "amqp" and v["baseline"] is not None}
    assert "output streaming vs own transport" in judged, results["targets"]
    page = page_path.read_text()
    assert "`raw-pika`" in page and "`amqp`" in page
