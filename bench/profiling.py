"""Optional cProfile of every bench process: ``python -m bench --profile DIR``.

Sets ``BENCH_PROFILE_DIR`` for the trial processes, which pass it on to their
workers; each process writes ``DIR/<role>-<subject>-<pid>.prof`` (read them
with ``python -m pstats``).  Profiling slows everything: figures from a
profiled run are not benchmark results.
"""

from __future__ import annotations

import cProfile
import os
from typing import Any, Callable

__all__ = ["ENV", "profiled"]

ENV = "BENCH_PROFILE_DIR"


def profiled(role: str, run: Callable[[], Any]) -> Any:
    """Run *run()*, under cProfile when ``BENCH_PROFILE_DIR`` is set."""
    where = os.environ.get(ENV)
    if not where:
        return run()
    os.makedirs(where, exist_ok=True)
    prof = cProfile.Profile()
    prof.enable()
    try:
        return run()
    finally:
        prof.disable()
        prof.dump_stats(os.path.join(where, f"{role}-{os.getpid()}.prof"))
