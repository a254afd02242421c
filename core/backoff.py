"""Capped, jittered exponential backoff for reconnecting workers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays before reconnect attempts: fast first, then doubling up to a cap.

    ``delay(n)`` for the n-th consecutive failure (0-based) is
    ``min(maximum, initial * factor**n)`` scaled down by a random factor in
    ``[1 - jitter, 1]``, so a fleet of workers does not reconnect in lockstep.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.factor >= 1 and self.maximum >= self.initial):
            raise ValueError("backoff needs initial > 0, factor >= 1 and maximum >= initial")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter must be in [0, 1)")

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return base * (1 - self.jitter * self.rng.random())
