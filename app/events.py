"""A machine-readable event log: one JSON object per line.

``workerwire master --events FILE`` appends a line for everything an operator
or a monitoring script may want to react to::

    {"time": 1700000000.123, "event": "connected", "worker": "w1",
     "backend": "pb", "peer": "10.0.0.5:51234"}

Events: ``ready`` (listening; ``protocols`` maps each protocol to its ``port``
and ``address``), ``connected``, ``disconnected``, ``refused`` (a duplicate
login), ``attached`` (worker info read, builders set), ``job_started``,
``job_finished`` (``rc``, ``failure``, ``output_tail``), ``reloaded``,
``reload_failed``, ``stopping``, ``stopped``.  Passwords never appear.
Each line is flushed as it is written, so a reader polling the file sees
complete lines.
"""

from __future__ import annotations

import json
import time
from typing import IO, Any

__all__ = ["EventLog"]


class EventLog:
    """Appends JSON lines to *path* (``None``: events are dropped)."""

    def __init__(self, path: str | None):
        self.path = path
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None

    def emit(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        record = {"time": round(time.time(), 6), "event": event, **fields}
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
