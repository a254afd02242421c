"""The worker runtime: a :class:`~workerwire.WorkerBot` that runs real commands.

:class:`WorkerRuntime` manages builder directories under a base directory and
runs the commands ``buildbot-worker`` 4.3 runs (``shell``, ``uploadFile``,
``uploadDirectory``, ``downloadFile``, ``mkdir``, ``rmdir``, ``cpdir``,
``stat``, ``listdir``, ``glob``, ``rmfile``), with the same arguments and
updates, sent by a master through any backend.
"""

from .bot import COMMANDS, DEFAULT_LOST_LINK_GRACE, WorkerRuntime
from .paths import PathNotAllowed, PathPolicy

__all__ = ["WorkerRuntime", "COMMANDS", "DEFAULT_LOST_LINK_GRACE", "PathPolicy", "PathNotAllowed"]
