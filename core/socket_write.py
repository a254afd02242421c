"""Moved to :mod:`workerwire.speedups.socket_write` (not part of the backend API).

This module only re-exports it; importing a name from it warns with a
``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from typing import Any

from .speedups import socket_write as _moved

__all__ = list(_moved.__all__)


def __getattr__(name: str) -> Any:
    value = getattr(_moved, name)  # AttributeError for a name it never had
    warnings.warn(f"workerwire.socket_write.{name} moved to workerwire.speedups.socket_write.{name} "
                  "(speed-ups are not part of the backend API)", DeprecationWarning, stacklevel=2)
    return value
