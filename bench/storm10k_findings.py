"""Why a storm10k target is missed, from profiles (shown in docs/benchmarks.md
only while the target is missed in the run on the page)."""

from __future__ import annotations

__all__ = ["FINDINGS", "PROFILED"]

PROFILED = "2026-12-06, under a load average of 5-10 on 2 cores"

#: (target, backend) -> explanation; ``*`` matches any backend.
FINDINGS: dict[tuple[str, str], str] = {}
