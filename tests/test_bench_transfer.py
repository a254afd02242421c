"""Keeps the transfer scenario of ``python -m bench`` working: a small real
run of ``python -m bench.transfer`` (raw TCP child and the in-process null
backend, 4 MiB each way) writes every figure into its JSON, and the page's
transfer section shows them with ratios to raw TCP.  No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_transfer_writes_figures_the_page_shows(tmp_path: Path) -> None:
    out = tmp_path / "transfer.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.transfer", "--size-mib", "4", "--reps", "1", "--subjects", "raw-tcp,ww-null",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    figures = json.loads(out.read_text())
    assert figures["size_mib"] == 4 and figures["reps"] == 1
    assert set(figures["subjects"]) == {"raw-tcp", "ww-null"}
    for sid, per in figures["subjects"].items():
        for kind in ("upload", "download"):
            f = per[kind]
            assert f["mb_per_s"] and f["mb_per_s"] > 0, (sid, kind, f)
            assert f["x_raw"] is not None and f["master_rss_mib"] is not None, (sid, kind, f)
            assert len(f["runs"]) == 1
    assert figures["subjects"]["raw-tcp"]["upload"]["x_raw"] == 1.0

    sys.path.insert(0, REPO)
    try:
        from bench.report import _transfer_section
    finally:
        sys.path.remove(REPO)
    page = "\n".join(_transfer_section(figures))
    assert "## File transfer" in page
    assert "| `ww-null` | upload |" in page and "| `raw-tcp` | download |" in page
    assert "≥ 0.5× raw TCP, best backend" in page
