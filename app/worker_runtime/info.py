"""What ``getWorkerInfo`` answers (the keys a Buildbot master reads)."""

from __future__ import annotations

import os
import platform
import socket
from typing import Any, Mapping

__all__ = ["worker_info"]


def _info_files(basedir: str) -> dict[str, str]:
    """``basedir/info/*`` files, as ``buildbot-worker`` reads them (``admin``, ``host``, ...)."""
    out: dict[str, str] = {}
    info_dir = os.path.join(basedir, "info")
    if not os.path.isdir(info_dir):
        return out
    for name in sorted(os.listdir(info_dir)):
        path = os.path.join(info_dir, name)
        if name.startswith(".") or name.endswith("~") or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                out[name] = f.read().strip()
        except OSError:
            continue
    return out


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and key and not key.startswith("#"):
                    out["os_" + key.lower()] = value.strip().strip("\"'")
    except OSError:
        pass
    return out


def worker_info(basedir: str, version: str, commands: Mapping[str, str]) -> dict[str, Any]:
    """The worker-info dict: ``version``, ``worker_commands``, ``basedir``,
    ``system``, ``host``, ``admin``, ``access_uri``, ``environ``, ``numcpus``,
    the ``os_*`` keys of /etc/os-release and any other ``info/`` file."""
    info: dict[str, Any] = {}
    info.update(_os_release())
    info.update(_info_files(basedir))
    info.setdefault("admin", "")
    info.setdefault("host", socket.gethostname())
    info.setdefault("access_uri", "")
    info.update({
        "version": version,
        "worker_commands": dict(commands),
        "basedir": basedir,
        "system": os.name,
        "platform": platform.platform(),
        "environ": dict(os.environ),
        "numcpus": os.cpu_count() or 1,
        "delete_leftover_dirs": False,
    })
    return info
