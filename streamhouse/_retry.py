"""One retry policy for every part of StreamHouse that retries.

Attempt ``i`` (from 0) that fails waits a random time in
``[0, min(max_delay, base_delay * 2**i)]`` before the next: capped
exponential backoff with "full jitter", which spreads the retries of many
clients that failed at once instead of synchronising them.
"""

from __future__ import annotations

import random

import attrs

__all__ = ["RetryPolicy"]


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry a failing request.

    Args:
        attempts: tries in all, the first included.
        base_delay: seconds of the first backoff's cap, doubling after.
        max_delay: the largest cap.
        rng: the random source of the jitter; tests pass a seeded
            ``random.Random`` (or any object with ``uniform``) to assert
            delays exactly.
    """

    attempts: int = 5
    base_delay: float = 0.05
    max_delay: float = 2.0
    rng: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 0)."""
        return self.rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
