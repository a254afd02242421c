"""workerwire for Buildbot: ``worker.WorkerwireWorker`` in a stock ``master.cfg``.

Installed with ``pip install 'workerwire[buildbot]'``; Buildbot finds
:class:`WorkerwireWorker` through its ``buildbot.worker`` entry-point group, so
``from buildbot.plugins import worker; worker.WorkerwireWorker(...)`` works.
See ``docs/buildbot.md``.
"""

from .connection import BuildbotConnection
from .hub import WorkerwireHub
from .options import SettingsError, WorkerSettings
from .worker import WorkerwireRegistration, WorkerwireWorker

__all__ = [
    "BuildbotConnection",
    "SettingsError",
    "WorkerSettings",
    "WorkerwireHub",
    "WorkerwireRegistration",
    "WorkerwireWorker",
]
