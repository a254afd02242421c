"""Flow control of command output (section 6 of the dialect).

The window itself is protocol-neutral and lives in core
(:mod:`workerwire.flow`); this is it with the amp worker's error translation.
"""

from __future__ import annotations

from typing import Any

from workerwire import flow
from workerwire.flow import DEFAULT_WINDOW

from .errors import translate_failure

__all__ = ["SendWindow", "DEFAULT_WINDOW"]


class SendWindow(flow.SendWindow):
    """:class:`workerwire.flow.SendWindow` translating amp's native failures."""

    def __init__(self, limit: int = DEFAULT_WINDOW, **kwargs: Any):
        kwargs.setdefault("translate", translate_failure)
        kwargs.setdefault("name", "amp worker")
        super().__init__(limit, **kwargs)
