"""Flow control of command output (section 6 of the dialect).

The window itself is protocol-neutral and lives in core
(:mod:`workerwire.flow`); this is it with the amp worker's error translation
and its own batch size.
"""

from __future__ import annotations

from typing import Any

from workerwire import flow
from workerwire.flow import DEFAULT_WINDOW

from .errors import translate_failure

__all__ = ["SendWindow", "DEFAULT_WINDOW", "BATCH"]

#: Most bytes of updates merged into one ``Update`` box (core's default is
#: 288 KiB).  Per box the worker and the master each pay AMP's framing, a
#: Deferred, an answer and a wake-up of the other process; with 1 MiB boxes
#: (the window holds four) both spent about half the CPU per GB of 288 KiB
#: ones.  The master's allocator no longer makes larger boxes dearer (see
#: ``workerwire.speedups.allocator.prime_allocator``); 1.5 and 1.8 MiB were slower again
#: (fewer boxes in flight).
BATCH = 1024 * 1024


class SendWindow(flow.SendWindow):
    """:class:`workerwire.flow.SendWindow` translating amp's native failures."""

    def __init__(self, limit: int = DEFAULT_WINDOW, **kwargs: Any):
        kwargs.setdefault("translate", translate_failure)
        kwargs.setdefault("name", "amp worker")
        kwargs.setdefault("batch_limit", BATCH)
        super().__init__(limit, **kwargs)
