"""Run one trial process, bounded in time, and collect its ``RESULT`` line.

Each trial runs in its own session (process group); whatever it leaves
behind (a worker, a storm client, buildbot-worker and its children) is killed
with the group when the trial ends or times out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

from .sides.base import child_env

__all__ = ["run_trial"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return


def run_trial(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``python -m bench.trial SPEC``; return its result (with ``error`` on failure)."""
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.trial", json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=REPO, env=child_env(),
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, _ = proc.communicate()
            timed_out = True
        finally:
            _kill_group(proc.pid)
        log.seek(0)
        stderr = log.read()
    result: dict[str, Any] = {}
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if timed_out:
        result.setdefault("error", f"trial timed out after {timeout:g} s")
    elif not result:
        result["error"] = f"trial exited with {proc.returncode} and no result"
    if "error" in result or any(isinstance(v, dict) and "error" in v for v in result.values()):
        result["log_tail"] = stderr[-3000:]
    return result
