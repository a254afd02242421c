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

    ``delay_after_loss()`` is the wait before the first attempt after a link
    that was up is lost: uniformly random in ``[0, loss_spread]`` ("full
    jitter").  A master that restarts loses every worker at the same instant;
    with this they come back spread over ``loss_spread`` seconds instead of all
    within ``[initial * (1 - jitter), initial]``, which would fill the
    master's login caps (``LinkOptions.max_unauthenticated``, the waiting
    room) and send most of them into the longer backoff of a failed attempt.
    ``loss_spread`` defaults to ``min(maximum, 10 * initial)`` (5 s for the
    defaults).
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)
    loss_spread: float | None = None

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.factor >= 1 and self.maximum >= self.initial):
            raise ValueError("backoff needs initial > 0, factor >= 1 and maximum >= initial")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter must be in [0, 1)")
        if self.loss_spread is None:
            self.loss_spread = min(self.maximum, 10 * self.initial)
        elif not 0 <= self.loss_spread <= self.maximum:
            raise ValueError(f"backoff loss_spread must be in [0, maximum={self.maximum:g}], not {self.loss_spread!r}")

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return base * (1 - self.jitter * self.rng.random())

    def delay_after_loss(self) -> float:
        """Seconds before the first reconnect after an established link was lost."""
        spread = self.loss_spread
        assert spread is not None
        return spread * self.rng.random()
