"""The S3 store under faults: time limits, exact backoff, outages that speak.

Scripted transports (httpx's seam) run on trio's virtual clock, so the
times asserted are exact; one test uses a real loopback socket that accepts
connections and never answers.
"""

from __future__ import annotations

import itertools
import logging
import random
import socket

import anyio
import httpx
import pytest
import trio
import trio.testing

from streamhouse import S3ObjectStore, StorageError, StorageUnavailableError
from streamhouse._retry import RetryBurst, RetryPolicy, retry_call

from ..helpers import NeverAnswers

pytestmark = pytest.mark.anyio


def _store(transport: httpx.AsyncBaseTransport, policy: RetryPolicy, **kw: float) -> S3ObjectStore:
    return S3ObjectStore(
        bucket="b", prefix="p", endpoint="http://s3.test", region="us-east-1",
        access_key="a", secret_key="s", retry=policy, transport=transport, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _expected_delays(seed: int, caps: list[float]) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0, cap) for cap in caps]


async def test_an_endpoint_that_never_answers_times_out_per_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each attempt against a silent endpoint ends after `timeout` seconds in all."""
    transport = NeverAnswers()
    policy = RetryPolicy(attempts=3, base_delay=1.0, max_delay=1.5, rng=random.Random(7))
    store = _store(transport, policy, timeout=30.0)
    start = trio.current_time()
    with pytest.raises(StorageUnavailableError) as caught:
        await store.put("k", b"")
    assert "no answer from http://s3.test within 30 s" in str(caught.value)
    assert "gave up after 3 attempts" in str(caught.value)
    d0, d1 = _expected_delays(7, [1.0, 1.5])
    sent = [t - start for t in transport.requests]
    assert sent == pytest.approx([0, 30 + d0, 60 + d0 + d1], abs=1e-9)
    assert trio.current_time() - start == pytest.approx(90 + d0 + d1, abs=1e-9)
    await store.aclose()


async def test_the_check_at_open_takes_at_most_timeout_in_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """check() runs as a client opens: a silent endpoint fails it within `timeout` in all."""
    transport = NeverAnswers()
    store = _store(transport, RetryPolicy(attempts=5, base_delay=0.1), timeout=30.0)
    start = trio.current_time()
    with pytest.raises(StorageUnavailableError, match="within 30 s"):
        await store.check()
    assert trio.current_time() - start == pytest.approx(30, abs=1e-9)
    assert len(transport.requests) == 1  # no second attempt starts past the deadline
    await store.aclose()


async def test_a_large_body_earns_more_time(autojump_clock: trio.testing.MockClock) -> None:
    """An attempt gets one more second per MiB it sends, so big objects survive slow links."""
    transport = NeverAnswers()
    store = _store(transport, RetryPolicy(attempts=1), timeout=30.0)
    start = trio.current_time()
    with pytest.raises(StorageUnavailableError, match="within 94 s"):
        await store.put("k", bytes(64 * 2**20))
    assert trio.current_time() - start == pytest.approx(94, abs=1e-9)
    await store.aclose()


async def test_a_loopback_socket_that_never_answers_times_out() -> None:
    """A real server that accepts and never answers fails the request after the time limit."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # connections complete in the backlog; nobody reads
        port = listener.getsockname()[1]
        store = S3ObjectStore(
            bucket="b", prefix="", endpoint=f"http://127.0.0.1:{port}", region="us-east-1",
            access_key="a", secret_key="s", timeout=0.3, connect_timeout=0.2,
            retry=RetryPolicy(attempts=2, base_delay=0.01),
        )  # fmt: skip
        start = trio.current_time()
        with pytest.raises(StorageUnavailableError, match="gave up after 2 attempts"):
            await store.put("k", b"x" * 1000)
        # Two attempts of 0.3 s and a short backoff; far below httpx's default
        # of 5 s per socket operation, and nothing like the 150 s of old.
        assert trio.current_time() - start < 10
        await store.aclose()


async def test_backoff_delays_are_the_policys_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Retries wait exactly the seeded policy's capped, jittered delays."""
    times: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) <= 5:
            return httpx.Response(503, content=b"<Error><Code>SlowDown</Code></Error>")
        return httpx.Response(200, content=b"payload")

    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0, rng=random.Random(42))
    store = _store(httpx.MockTransport(handle), policy)
    assert await store.get("k") == b"payload"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx(_expected_delays(42, [0.5, 1.0, 2.0, 3.0, 3.0]), abs=1e-9)
    await store.aclose()


async def test_an_outage_logs_once_as_it_starts_and_once_as_it_ends(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Many requests failing together make one WARNING with the cause and one on recovery."""
    failures = {"left": 40}

    def handle(request: httpx.Request) -> httpx.Response:
        if failures["left"]:
            failures["left"] -= 1
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, content=b"ok")

    policy = RetryPolicy(attempts=None, base_delay=0.1, max_delay=1.0, rng=random.Random(1))
    store = _store(httpx.MockTransport(handle), policy)
    caplog.set_level(logging.DEBUG, logger="streamhouse")
    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(store.get, f"k{i}")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["streamhouse.storage"] * 2
    assert "S3 at http://s3.test failing" in warnings[0].getMessage()
    assert "connection refused" in warnings[0].getMessage()
    assert "recovered after 40 failed attempts" in warnings[1].getMessage()
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 10  # one per answered request, none per failed attempt
    await store.aclose()


async def test_the_package_logger_is_silent_by_default() -> None:
    """The streamhouse logger has a NullHandler, so nothing prints until the app configures it."""
    handlers = logging.getLogger("streamhouse").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


async def test_retry_call_stops_at_the_deadline_without_cancelling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """retry_call starts no attempt at or past the deadline, and lets one in flight finish."""
    calls: list[float] = []

    async def slow_then_fail() -> None:
        calls.append(trio.current_time())
        await trio.sleep(4)  # an attempt that runs past the deadline
        raise StorageUnavailableError("scripted")

    burst = RetryBurst(logging.getLogger("test"), "thing")
    policy = RetryPolicy(attempts=None, base_delay=1.0, max_delay=1.0, rng=random.Random(3))
    start = trio.current_time()
    with pytest.raises(StorageUnavailableError, match="scripted"):
        await retry_call(slow_then_fail, policy=policy, burst=burst, deadline=start + 5)
    (d0,) = _expected_delays(3, [1.0])
    # attempt 1 at 0 ends at 4, waits d0; attempt 2 at 4 + d0 (< 5) runs to 8 + d0;
    # no third attempt, since the deadline has passed.
    assert [t - start for t in calls] == pytest.approx([0, 4 + d0], abs=1e-9)
    assert trio.current_time() - start == pytest.approx(8 + d0, abs=1e-9)
    assert burst.active


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 2.5}, "attempts"),
        ({"base_delay": float("nan")}, "base_delay"),
        ({"max_delay": float("inf")}, "max_delay"),
        ({"base_delay": -1}, "base_delay"),
    ],
)
def test_retry_policy_refuses_bad_settings(kwargs: dict[str, object], message: str) -> None:
    """RetryPolicy names the setting that is out of range."""
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [httpx.DecodingError("bad gzip"), httpx.TooManyRedirects("loop")],
)
async def test_other_httpx_errors_are_storage_errors(error: Exception) -> None:
    """An httpx error that is not a transport failure becomes StorageError, cause kept."""

    def handle(request: httpx.Request) -> httpx.Response:
        raise error

    store = _store(httpx.MockTransport(handle), RetryPolicy(attempts=2))
    with pytest.raises(StorageError) as caught:
        await store.get("k")
    assert caught.value.__cause__ is error
    await store.aclose()
