"""Moved to :mod:`workerwire.speedups.allocator` (not part of the backend API).

This module only re-exports it; importing a name from it warns with a
``DeprecationWarning``.
"""

from __future__ import annotations

from .api_compat import moved_module
from .speedups import allocator as _moved

__all__ = list(_moved.__all__)

__getattr__ = moved_module("workerwire.allocator", _moved, "speed-ups are not part of the backend API")
