"""Bad input hurts only its caller: a clear error at once, and the consumer carries on."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from streamhouse import (
    Consumer,
    InvalidArgumentError,
    LocalObjectStore,
    SQLiteMetadataStore,
    TopicPartition,
)
from streamhouse._consumer.messages import Commit, Lags, Seek

from ..helpers import Stores, poll_until, produce

pytestmark = pytest.mark.anyio

TP = TopicPartition("t", 0)

BAD_CALLS: list[tuple[str, Callable[[Consumer], Awaitable[Any]], str]] = [
    ("commit-names", lambda c: c.commit({"t": 1}), "TopicPartition objects"),
    ("commit-tuple-keys", lambda c: c.commit({("t", 0): 1}), "TopicPartition objects"),
    ("commit-list", lambda c: c.commit([(TP, 1)]), "offsets must be a mapping"),
    ("commit-negative", lambda c: c.commit({TP: -1}), "int >= 0, not -1"),
    ("commit-bool", lambda c: c.commit({TP: True}), "int >= 0, not True"),
    ("commit-float", lambda c: c.commit({TP: 1.5}), "int >= 0, not 1.5"),
    ("seek-negative", lambda c: c.seek("t", 0, -1), "offset must be an int >= 0"),
    ("seek-str-offset", lambda c: c.seek("t", 0, "5"), "offset must be"),
    ("seek-str-partition", lambda c: c.seek("t", "0", 5), "partition must be"),
    ("seek-bad-topic", lambda c: c.seek("t/x", 0, 5), "topic name"),
    ("seek-unassigned", lambda c: c.seek("t", 7, 5), r"t\[7\] is not assigned"),
    ("pause-tuple", lambda c: c.pause(("t", 0)), "TopicPartition objects"),
    ("resume-str", lambda c: c.resume("t"), "TopicPartition objects"),
    ("seek-to-beginning-tuple", lambda c: c.seek_to_beginning(("t", 0)), "TopicPartition"),
    ("position-bool", lambda c: c.position("t", True), "partition must be"),
    ("lag-int-topic", lambda c: c.lag(5, 0), "topic must be a str, not 5"),
    ("poll-nan", lambda c: c.poll(timeout=math.nan), "timeout must be a number"),
    ("poll-negative", lambda c: c.poll(timeout=-1), "timeout must be >= 0"),
    ("poll-zero-records", lambda c: c.poll(max_records=0), "max_records must be an int >= 1"),
    ("poll-float-records", lambda c: c.poll(max_records=2.5), "max_records"),
    ("batches-bool", lambda c: c.poll_batches(max_batches=True), "max_batches"),
    ("batches-nan", lambda c: c.poll_batches(timeout=math.nan), "timeout"),
]

BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"max_poll_records": 0}, "max_poll_records must be an int >= 1"),
    ({"max_poll_records": True}, "max_poll_records"),
    ({"max_poll_records": 1.5}, "max_poll_records"),
    ({"prefetch_batches": 0}, "prefetch_batches"),
    ({"cache_size_bytes": -1}, "cache_size_bytes must be an int >= 0"),
    ({"cache_size_bytes": 1e6}, "cache_size_bytes"),
    ({"cache_first_reads": "yes"}, "cache_first_reads must be True or False"),
    ({"auto_commit_interval": math.nan}, "auto_commit_interval must be a number"),
    ({"auto_commit_interval": math.inf}, "auto_commit_interval must be > 0 and finite"),
    ({"auto_commit_interval": 0}, "auto_commit_interval must be > 0"),
    ({"metadata_refresh_interval": math.nan}, "metadata_refresh_interval"),
    ({"metadata_refresh_interval": -0.5}, "metadata_refresh_interval"),
    ({"stall_timeout": 0}, "stall_timeout must be > 0"),
    ({"stall_timeout": math.nan}, "stall_timeout"),
    ({"close_timeout": -1}, "close_timeout must be >= 0"),
    ({"close_timeout": math.nan}, "close_timeout"),
    ({"cache_dir": 5}, "cache_dir must be a path"),
    ({"auto_commit": "yes"}, "auto_commit must be True or False"),
    ({"retry": 3}, "retry must be a RetryPolicy"),
    ({"group_id": ""}, "group id must not be empty"),
    ({"offset_reset": "sometimes"}, "offset reset must be"),
    ({"topics": 5}, "topics must be names or TopicPartitions"),
    ({"topics": [("t", 0)]}, "topics must be names or TopicPartitions"),
    ({"topics": []}, "at least one topic"),
    ({"topics": "t/x"}, "topic name"),
    ({"topics": TopicPartition("t", -1)}, "partition must be an int >= 0"),
]


@pytest.fixture
async def local(tmp_path: Path, meta: SQLiteMetadataStore) -> Stores:
    """A local store and SQLite, with topic "t" holding 20 records."""
    stores = Stores(LocalObjectStore(tmp_path / "objects"), meta)
    await meta.create_topic("t", 1)
    await produce(stores, "t", 0, 20)
    return stores


async def test_every_bad_call_is_refused_clearly_and_the_consumer_carries_on(local: Stores) -> None:
    """Each hostile call raises InvalidArgumentError naming what was wrong; nothing else changes."""
    async with local.consumer("t", group_id="g", offset_reset="earliest",
                              auto_commit=False) as consumer:  # fmt: skip
        for name, call, message in BAD_CALLS:
            with pytest.raises(InvalidArgumentError, match=message):
                await call(consumer)
            assert await consumer.position("t", 0) == 0, name
        records = await poll_until(consumer, 20)
        await consumer.commit()
        assert await consumer.committed("t", 0) == 20
    assert [r.offset for r in records] == list(range(20))


async def test_bad_requests_reaching_the_coordinator_are_answered_not_fatal(local: Stores) -> None:
    """Malformed requests sent past the facade get an error back; the coordinator goes on."""
    async with local.consumer("t", group_id="g", offset_reset="earliest",
                              auto_commit=False) as consumer:  # fmt: skip
        bad: list[Callable[[Any], Any]] = [
            lambda r: Commit(r, {"t": 1}),  # the metadata store fails on it in a thread
            lambda r: Seek(r, {TopicPartition("t", 9): 0}),
            lambda r: Lags(r, frozenset({TopicPartition("nope", 0)})),
        ]
        for make in bad:
            with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever it is, it is answered
                await consumer._ask(make)
            assert not isinstance(caught.value, BaseExceptionGroup)
        records = await poll_until(consumer, 20)
        await consumer.commit()
        assert await consumer.committed("t", 0) == 20
    assert [r.offset for r in records] == list(range(20))


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=lambda v: str(v)[:40])
async def test_bad_options_are_refused_at_open(
    local: Stores, options: dict[str, Any], message: str
) -> None:
    """Each bad option to open_consumer raises InvalidArgumentError before anything starts."""
    options = dict(options)  # shared by the backends' runs
    topics = options.pop("topics", "t")
    with pytest.raises(InvalidArgumentError, match=message):
        async with local.consumer(topics, **options):
            pass


async def test_zero_and_infinity_are_allowed_where_they_mean_something(local: Stores) -> None:
    """close_timeout=0 and inf, stall_timeout=inf, cache_size_bytes=0 and poll(timeout=0) work."""
    for options in ({"close_timeout": 0.0}, {"close_timeout": math.inf, "stall_timeout": math.inf}):
        async with local.consumer("t", offset_reset="earliest", cache_size_bytes=0,
                                  **options) as consumer:  # fmt: skip
            assert len(await poll_until(consumer, 20)) == 20
            assert await consumer.poll(timeout=0) == []
