"""One retry policy for every part of StreamHouse that retries.

Attempt ``i`` (from 0) that fails waits a random time in
``[0, min(max_delay, base_delay * 2**i)]`` before the next: capped
exponential backoff with "full jitter", which spreads the retries of many
clients that failed at once instead of synchronising them.

Two helpers put the policy to work. :class:`Backoff` is the state of one
burst of failures for an actor that retries for as long as it lives (a
consumer's reader: it never gives up, it reports). :class:`BurstLog` says so
in the log, once when a burst starts (with its cause) and once when it ends,
never once per attempt: an outage of an hour is two lines, not thousands.
:func:`retry_call` retries one call a bounded number of times.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import attrs

from ._errors import RetriableError

__all__ = ["Backoff", "BurstLog", "RetryPolicy", "retry_call"]

T = TypeVar("T")


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry a failing request.

    Args:
        attempts: tries in all, the first included (for bounded retries;
            actors that retry for as long as they live ignore it).
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
        # The exponent is capped so that a long outage cannot overflow it.
        cap = min(self.max_delay, self.base_delay * 2 ** min(attempt, 60))
        return self.rng.uniform(0, cap)


class Backoff:
    """The failures of one burst, and the waits between them, by a policy.

    Owned by one task. ``failures`` counts the attempts that failed since
    the last success; :meth:`succeeded` starts a new burst.
    """

    __slots__ = ("failures", "policy")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0

    async def wait(self) -> None:
        """Sleep the policy's delay after one more failure."""
        delay = self.policy.delay(self.failures)
        self.failures += 1
        await anyio.sleep(delay)

    def succeeded(self) -> bool:
        """Start afresh; True when this ended a burst of failures."""
        ended = self.failures > 0
        self.failures = 0
        return ended


class BurstLog:
    """A WARNING when a burst of failures starts, with its cause, and one when it ends.

    Nothing is logged per attempt. ``what`` names the work in the lines,
    e.g. "reading t[0]" or "auto-commit of group g".
    """

    __slots__ = ("_failures", "_logger", "_since", "what")

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self.what = what
        self._failures = 0
        self._since = 0.0

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def failed(self, cause: BaseException) -> None:
        if self._failures == 0:
            self._since = anyio.current_time()
            self._logger.warning("%s failed, retrying: %s", self.what, cause)
        self._failures += 1

    def succeeded(self) -> None:
        if self._failures:
            self._logger.warning(
                "%s works again after %d failures in %.1f s",
                self.what,
                self._failures,
                anyio.current_time() - self._since,
            )
        self._failures = 0


async def retry_call(
    call: Callable[[], Awaitable[T]], policy: RetryPolicy, log: BurstLog | None = None
) -> T:
    """Await ``call()``, retrying RetriableErrors up to ``policy.attempts`` tries in all.

    Raises:
        RetriableError: the last failure, once every attempt has failed.
    """
    backoff = Backoff(policy)
    while True:
        try:
            result = await call()
        except RetriableError as exc:
            if log is not None:
                log.failed(exc)
            if backoff.failures + 1 >= policy.attempts:
                raise
            await backoff.wait()
        else:
            if log is not None:
                log.succeeded()
            return result
