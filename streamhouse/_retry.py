"""One retry policy, one retry loop and one way of logging outages, for every
part of StreamHouse that retries.

Backoff: attempt ``i`` (from 0) that fails waits a random time in
``[0, min(max_delay, base_delay * 2**i)]`` before the next: capped
exponential backoff with "full jitter", which spreads the retries of many
clients that failed at once instead of synchronising them.

Deadlines: a caller that must be done by a time (the producer's delivery
timeout) runs its calls inside :func:`deadline_at`; every :func:`retry_call`
below it stops retrying at that time, and stores that bound their own
requests (S3) shorten the last request to fit. It is a context variable, so
it reaches through the ObjectStore protocol without a parameter on every
method, and a task's deadline is its own.

Actors that retry for as long as they live (a consumer's reader never gives
up, it reports) keep a :class:`Backoff`: the failures of the current burst
and the waits between them, by the same policy.

Logging: an outage is one *burst* of failures, logged as two WARNING lines,
one when the first failure comes (with its cause) and one when the first
success after it comes (how many failures, over how long), never a line per
attempt. A :class:`RetryBurst` belongs to one thing that can be out (an S3
endpoint, a producer's metadata store), so the many requests that fail
together during one outage make two lines, not two per request.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import anyio
import attrs

from ._errors import InvalidArgumentError, RetriableError

__all__ = [
    "Backoff",
    "RetryBurst",
    "RetryPolicy",
    "current_deadline",
    "deadline_at",
    "retry_call",
]

T = TypeVar("T")

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "streamhouse_deadline", default=None
)


@contextlib.contextmanager
def deadline_at(when: float) -> Iterator[None]:
    """Bound the retries and requests of the calls made in this block by ``when``.

    ``when`` is in ``anyio.current_time()`` seconds; an outer, earlier
    deadline still applies.
    """
    outer = _deadline.get()
    token = _deadline.set(when if outer is None else min(outer, when))
    try:
        yield
    finally:
        _deadline.reset(token)


def current_deadline() -> float | None:
    """The deadline of the innermost :func:`deadline_at` around the caller, if any."""
    return _deadline.get()


def _check_attempts(_instance: object, _attribute: object, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidArgumentError(f"attempts must be an int >= 1 or None, not {value!r}")


def _check_delay(_instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidArgumentError(
            f"{attribute.name} must be a finite number of seconds >= 0, not {value!r}"
        )


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry a failing request.

    Args:
        attempts: tries in all, the first included; None retries until a
            deadline (the caller's) or for ever.
        base_delay: seconds of the first backoff's cap, doubling after.
        max_delay: the largest cap.
        rng: the random source of the jitter; tests pass a seeded
            ``random.Random`` (or any object with ``uniform``) to assert
            delays exactly.
    """

    attempts: int | None = attrs.field(default=5, validator=_check_attempts)
    base_delay: float = attrs.field(default=0.05, validator=_check_delay)
    max_delay: float = attrs.field(default=2.0, validator=_check_delay)
    rng: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 0)."""
        # min() first: 2**attempt grows without bound when attempts is None.
        cap = self.max_delay if attempt >= 64 else min(self.max_delay, self.base_delay * 2**attempt)
        return self.rng.uniform(0, cap)

    def gives_up_after(self, attempt: int) -> bool:
        """Whether failed attempt ``attempt`` (from 0) was the last one allowed."""
        return self.attempts is not None and attempt + 1 >= self.attempts


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


@attrs.define(eq=False)
class RetryBurst:
    """Logs an outage of one thing as it starts and as it ends (see the module docstring).

    Args:
        logger: where the two lines go.
        what: the thing that fails, as a reader would name it, e.g.
            ``"S3 at http://127.0.0.1:9000"``; never a credential.
    """

    logger: logging.Logger
    what: str
    _started: float | None = attrs.field(init=False, default=None)
    _failures: int = attrs.field(init=False, default=0)

    @property
    def active(self) -> bool:
        """Whether failures came since the last success."""
        return self._started is not None

    def failed(self, error: BaseException) -> None:
        """Count a failed attempt; the first of a burst logs a WARNING with its cause."""
        self._failures += 1
        if self._started is None:
            self._started = anyio.current_time()
            self.logger.warning("%s failing, retrying with backoff: %s", self.what, error)

    def succeeded(self) -> None:
        """End the burst, if there is one, with a WARNING saying how long it lasted."""
        if self._started is not None:
            seconds = anyio.current_time() - self._started
            self.logger.warning(
                "%s recovered after %d failed attempts over %.1f s",
                self.what, self._failures, seconds,
            )  # fmt: skip
            self._started = None
            self._failures = 0


async def retry_call(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    burst: RetryBurst | None = None,
    retriable: type[BaseException] | tuple[type[BaseException], ...] = RetriableError,
    deadline: float | None = None,
    expired: Callable[[BaseException], BaseException] | None = None,
) -> T:
    """Await ``call()`` until it succeeds, retrying ``retriable`` errors.

    Gives up, raising the last error as it is, after ``policy.attempts``
    attempts, or when the next attempt would start at or after the deadline
    (``deadline`` or the :func:`deadline_at` around the caller, whichever
    comes first, in ``anyio.current_time()`` seconds); then ``expired``, if
    given, makes the error to raise instead (chained to the last one). The
    deadline only stops retries: an attempt in flight is never cancelled
    here, so a caller that may abandon one wraps this call in a cancel scope,
    and a caller that must not (a commit whose outcome it has to know) does
    not. Other errors propagate at once. Failures and the recovery are logged
    through ``burst``, if given.
    """
    outer = current_deadline()
    if outer is not None:
        deadline = outer if deadline is None else min(outer, deadline)
    attempt = 0
    while True:
        try:
            result = await call()
        except retriable as exc:
            if burst is not None:
                burst.failed(exc)
            if policy.gives_up_after(attempt):
                raise
            delay = policy.delay(attempt)
            if deadline is not None and anyio.current_time() + delay >= deadline:
                if expired is None:
                    raise
                raise expired(exc) from exc
            await anyio.sleep(delay)
            attempt += 1
        else:
            if burst is not None:
                burst.succeeded()
            return result
