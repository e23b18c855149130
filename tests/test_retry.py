"""The one retry policy and its helpers: exact delays, bounded attempts, two log lines a burst."""

from __future__ import annotations

import logging
import random

import pytest
import trio
import trio.testing

from streamhouse import CorruptDataError, MetadataUnavailableError, RetryPolicy
from streamhouse._retry import Backoff, RetryBurst, retry_call

pytestmark = pytest.mark.anyio


class Highest(random.Random):
    """A random source that always draws the top of the range: the cap itself."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_delays_double_up_to_the_cap_and_draw_from_the_source() -> None:
    """Attempt i waits uniform(0, min(max_delay, base_delay * 2**i)), from the given source."""
    policy = RetryPolicy(base_delay=0.05, max_delay=2.0, rng=Highest())
    assert [policy.delay(i) for i in range(8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert policy.delay(10_000) == 2.0  # an outage of any length cannot overflow it
    seeded = RetryPolicy(rng=random.Random(7))
    expected = random.Random(7)
    assert [seeded.delay(i) for i in range(4)] == [
        expected.uniform(0, cap) for cap in (0.05, 0.1, 0.2, 0.4)
    ]


async def test_a_backoff_sleeps_the_policys_delays_on_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Backoff.wait sleeps exactly the policy's delays; success starts a new burst."""
    backoff = Backoff(RetryPolicy(base_delay=1.0, max_delay=3.0, rng=Highest()))
    start = trio.current_time()
    for _ in range(3):
        await backoff.wait()
    assert trio.current_time() - start == 1.0 + 2.0 + 3.0
    assert backoff.succeeded() is True
    assert backoff.succeeded() is False
    await backoff.wait()
    assert trio.current_time() - start == 7.0


async def test_a_burst_logs_twice_however_many_attempts_fail(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """One WARNING with the cause when a burst starts, one when it ends, none per attempt."""
    caplog.set_level(logging.WARNING, logger="streamhouse")
    log = RetryBurst(logging.getLogger("streamhouse.test"), "reading t[0]")
    log.succeeded()
    for i in range(50):
        log.failed(MetadataUnavailableError(f"locked #{i}"))
        await trio.sleep(0.1)
    log.succeeded()
    log.succeeded()
    assert [r.getMessage() for r in caplog.records] == [
        "reading t[0] failing, retrying with backoff: locked #0",
        "reading t[0] recovered after 50 failed attempts over 5.0 s",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


async def test_retry_call_retries_only_retriable_errors_and_only_so_often(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Transient failures are retried up to attempts in all; others are raised at once."""
    policy = RetryPolicy(attempts=3, base_delay=1.0, rng=Highest())
    calls: list[float] = []

    async def flaky(failures: int, error: Exception) -> str:
        calls.append(trio.current_time())
        if len(calls) <= failures:
            raise error
        return "done"

    start = trio.current_time()
    done = await retry_call(lambda: flaky(2, MetadataUnavailableError("x")), policy=policy)
    assert done == "done"
    assert [t - start for t in calls] == [0.0, 1.0, 3.0]
    calls.clear()
    with pytest.raises(MetadataUnavailableError):
        await retry_call(lambda: flaky(3, MetadataUnavailableError("x")), policy=policy)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(CorruptDataError):
        await retry_call(lambda: flaky(1, CorruptDataError("k", 0, "bad")), policy=policy)
    assert len(calls) == 1
