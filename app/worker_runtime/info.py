"""What ``getWorkerInfo`` answers: the same keys and types as ``buildbot-worker`` 4.3.

``buildbot-worker`` sends every file of ``BASEDIR/info/`` as it is (so
``admin`` and ``host`` keep their trailing newline), the ``os_*`` keys of
``/etc/os-release``, then ``environ``, ``system``, ``basedir``, ``numcpus``,
``version``, ``worker_commands`` and ``delete_leftover_dirs`` (``0``: its
``create-worker`` writes the unset flag as an int).  The workerwire contract
also promises ``admin``, ``host`` and ``access_uri``: when their file is
missing they are None, which is what a Buildbot master reads for a missing key.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from twisted.logger import Logger

__all__ = ["worker_info", "OS_RELEASE"]

_log = Logger()

OS_RELEASE = "/etc/os-release"


def _info_files(basedir: str) -> dict[str, str]:
    """``basedir/info/*`` files, as ``buildbot-worker`` reads them (whole, undecodable ones skipped)."""
    out: dict[str, str] = {}
    info_dir = os.path.join(basedir, "info")
    if not os.path.isdir(info_dir):
        return out
    for name in sorted(os.listdir(info_dir)):
        path = os.path.join(info_dir, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                out[name] = f.read()
        except (OSError, UnicodeDecodeError) as e:
            _log.warn("worker info file {path} is not sent: {why}", path=path, why=e)
    return out


def _os_release(path: str = OS_RELEASE) -> dict[str, str]:
    """``os_<key>`` for each ``KEY=value`` line with a value, quotes stripped, as ``buildbot-worker`` does."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip("\r\n")
                if not line or line.startswith("#"):
                    continue
                key, sep, value = line.partition("=")
                if sep and value:
                    out[f"os_{key.lower()}"] = value.strip('"')
    except OSError:
        pass
    return out


def worker_info(basedir: str, version: str, commands: Mapping[str, str]) -> dict[str, Any]:
    """The worker-info dict (see the module docstring)."""
    info: dict[str, Any] = {"admin": None, "host": None, "access_uri": None}
    info.update(_info_files(basedir))
    info.update(_os_release())
    info.update({
        "environ": dict(os.environ),
        "system": os.name,
        "basedir": basedir,
        "numcpus": os.cpu_count() or 1,
        "version": version,
        "worker_commands": dict(commands),
        "delete_leftover_dirs": 0,
    })
    return info
