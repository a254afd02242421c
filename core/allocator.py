"""Moved to :mod:`workerwire.speedups.allocator` (not part of the backend API).

This module only re-exports it; importing a name from it warns with a
``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from typing import Any

from .speedups import allocator as _moved

__all__ = list(_moved.__all__)


def __getattr__(name: str) -> Any:
    value = getattr(_moved, name)  # AttributeError for a name it never had
    warnings.warn(f"workerwire.allocator.{name} moved to workerwire.speedups.allocator.{name} "
                  "(speed-ups are not part of the backend API)", DeprecationWarning, stacklevel=2)
    return value
