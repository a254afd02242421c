"""Memory figures from /proc and a description of the machine."""

from __future__ import annotations

import os
import platform
import resource
import sys
from datetime import datetime, timezone
from typing import Any

__all__ = ["status_kib", "rss_kib", "hwm_kib", "cpu_seconds", "machine_info", "raise_fd_limit"]


def status_kib(pid: int | None, field: str) -> int | None:
    """The ``field`` (e.g. ``VmRSS``, ``VmHWM``) of /proc/PID/status in KiB, or None."""
    path = f"/proc/{pid if pid is not None else 'self'}/status"
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(field.encode() + b":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_kib(pid: int | None = None) -> int | None:
    return status_kib(pid, "VmRSS")


def hwm_kib(pid: int | None = None) -> int | None:
    return status_kib(pid, "VmHWM")


def cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds used so far by *pid* (None: this process), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid if pid is not None else 'self'}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one (connection storms need fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    import twisted

    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }
