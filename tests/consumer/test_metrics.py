"""Client metrics: their values after real produce, consume and commit."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from streamhouse import InvalidArgumentError, TopicPartition, open_consumer, open_producer
from streamhouse._consumer.messages import Assign, PartitionStart, Revoke

from ..helpers import Stores, poll_until

pytestmark = pytest.mark.anyio


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_producer_metrics_count_records_bytes_and_requests(stores: Stores) -> None:
    """A producer's records, bytes, flushes, PUTs and commits are counted once each."""
    await stores.meta.create_topic("t", 2)
    registry = CollectorRegistry()
    async with stores.producer(linger=0, client_id="p1", metrics_registry=registry) as producer:
        await producer.send_batch("t", [b"a" * 100] * 6, partition=0)
        await producer.send_batch("t", [b"b" * 100] * 4, partition=1)
    segments = [s for p in (0, 1) for s in await stores.meta.list_segments("t", p, 0)]
    objects = {s.object_key for s in segments}
    stored = sum(s.length for s in segments)
    p1 = {"client_id": "p1"}
    assert value(registry, "streamhouse_producer_records_total", **p1, topic="t") == 10
    assert value(registry, "streamhouse_producer_bytes_total", **p1, topic="t") == stored
    assert value(registry, "streamhouse_producer_errors_total", **p1, topic="t") is None
    flushes = value(registry, "streamhouse_producer_flush_latency_seconds_count", **p1)
    assert flushes == len(objects)
    puts = {"operation": "put", "outcome": "ok"}
    assert value(registry, "streamhouse_storage_requests_total", **p1, **puts) == len(objects)
    written = value(registry, "streamhouse_storage_bytes_total", **p1, direction="written")
    assert written == stored
    commits = value(
        registry, "streamhouse_metadata_transaction_latency_seconds_count",
        **p1, operation="commit_segments",
    )  # fmt: skip
    assert commits == len(objects)


async def test_consumer_metrics_count_reads_commits_and_lag(stores: Stores) -> None:
    """A consumer's reads, cache, commits and lag gauges hold the values of what it did."""
    await stores.meta.create_topic("t", 2)
    hour_ago = time.time_ns() // 1_000_000 - 3_600_000
    async with stores.producer(linger=0) as producer:
        await producer.send_batch("t", [b"x" * 50] * 10, partition=0, timestamps=hour_ago)
        await producer.send_batch("t", [b"y" * 50] * 5, partition=1)
    segments = [s for p in (0, 1) for s in await stores.meta.list_segments("t", p, 0)]
    registry = CollectorRegistry()
    c1 = {"client_id": "c1"}
    lag0 = {**c1, "group": "g", "topic": "t", "partition": "0"}
    async with stores.consumer(
        "t", group_id="g", offset_reset="earliest", auto_commit=False, max_poll_records=5,
        client_id="c1", metrics_registry=registry, cache_first_reads=True,
    ) as consumer:  # fmt: skip
        got = await poll_until(consumer, 15)
        assert len(got) == 15
        await consumer.commit()
        assert set((await consumer.lags()).values()) == {0}
        read = {**c1, "group": "g", "topic": "t"}
        assert value(registry, "streamhouse_consumer_records_total", **read) == 15
        assert value(registry, "streamhouse_consumer_bytes_total", **read) == sum(
            s.length for s in segments
        )
        assert value(registry, "streamhouse_commit_latency_seconds_count", **c1) == 1
        commits = value(
            registry, "streamhouse_metadata_transaction_latency_seconds_count",
            **c1, operation="commit_offsets",
        )  # fmt: skip
        assert commits == 1
        assert value(registry, "streamhouse_consumer_lag", **lag0) == 0
        assert value(registry, "streamhouse_consumer_lag_seconds", **lag0) == 0
        assert value(registry, "streamhouse_consumer_rebalances_total", **c1, group="g") == 0
        gets = value(
            registry, "streamhouse_storage_requests_total", **c1, operation="get", outcome="ok"
        )
        assert gets == len(segments)
        assert value(registry, "streamhouse_cache_misses_total", **c1) == len(segments)
        assert value(registry, "streamhouse_cache_hits_total", **c1) == 0
        read_bytes = value(registry, "streamhouse_storage_bytes_total", **c1, direction="read")
        assert read_bytes == sum(s.length for s in segments)
        assert value(registry, "streamhouse_cache_bytes", **c1) == read_bytes
        fetches = value(registry, "streamhouse_consumer_fetch_latency_seconds_count", **c1)
        assert fetches == len(segments)
    # Gauges of a closed consumer are gone; its counters stay.
    assert value(registry, "streamhouse_consumer_lag", **lag0) is None
    assert value(registry, "streamhouse_cache_bytes", **c1) is None
    assert value(registry, "streamhouse_consumer_records_total", **read) == 15


async def test_lag_seconds_is_the_age_of_the_oldest_unconsumed_record(stores: Stores) -> None:
    """Behind by records an hour old, lag is their count and lag_seconds about an hour."""
    await stores.meta.create_topic("t", 1)
    hour_ago = time.time_ns() // 1_000_000 - 3_600_000
    async with stores.producer(linger=0) as producer:
        await producer.send_batch("t", [b"x"] * 10, partition=0, timestamps=hour_ago)
    registry = CollectorRegistry()
    labels = {"client_id": "c2", "group": "", "topic": "t", "partition": "0"}
    async with stores.consumer(
        "t", offset_reset="earliest", max_poll_records=3, client_id="c2",
        metrics_registry=registry,
    ) as consumer:  # fmt: skip
        assert len(await poll_until(consumer, 3)) == 3
        assert list((await consumer.lags()).values()) == [7]
        assert value(registry, "streamhouse_consumer_lag", **labels) == 7
        age = value(registry, "streamhouse_consumer_lag_seconds", **labels)
        assert age is not None
        assert 3599 < age < 3700


async def test_client_id_and_registry_are_checked_at_open(stores: Stores) -> None:
    """A bad client_id or metrics_registry is refused at open, naming the argument."""
    with pytest.raises(InvalidArgumentError, match="client_id"):
        async with open_producer(storage=stores.storage, metadata=stores.meta, client_id="a b"):
            pass
    with pytest.raises(InvalidArgumentError, match="metrics_registry"):
        async with open_consumer(
            "t",
            storage=stores.storage,
            metadata=stores.meta,
            metrics_registry=object(),  # type: ignore[arg-type]
        ):
            pass


async def test_a_revoked_partitions_lag_series_go_and_rebalances_count(stores: Stores) -> None:
    """Revoking a partition removes its lag series; each assignment change is a rebalance."""
    await stores.meta.create_topic("t", 2)
    async with stores.producer(linger=0) as producer:
        for p in (0, 1):
            await producer.send_batch("t", [b"x"] * 5, partition=p)
    registry = CollectorRegistry()
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    lag = {"client_id": "c3", "group": "", "topic": "t"}
    async with stores.consumer(
        [tp0], offset_reset="earliest", client_id="c3", metrics_registry=registry
    ) as consumer:
        assert await consumer.lags() == {tp0: 5}
        assert value(registry, "streamhouse_consumer_lag", **lag, partition="0") == 5
        # What group membership will send (issue 13); here, by hand.
        await consumer._ask(lambda r: Assign(r, {tp1: PartitionStart(1, None, 0, 5)}))
        await consumer._ask(lambda r: Revoke(r, frozenset({tp0})))
        assert await consumer.lags() == {tp1: 4}
        assert value(registry, "streamhouse_consumer_lag", **lag, partition="0") is None
        assert value(registry, "streamhouse_consumer_lag_seconds", **lag, partition="0") is None
        assert value(registry, "streamhouse_consumer_lag", **lag, partition="1") == 4
        rebalances = value(
            registry, "streamhouse_consumer_rebalances_total", client_id="c3", group=""
        )
        assert rebalances == 2
