"""open_admin: topics described, group lag, offset resets, orphan cleanup."""

from __future__ import annotations

import time

import pytest

from streamhouse import (
    InvalidArgumentError,
    ObjectStore,
    SQLiteMetadataStore,
    TopicNotFoundError,
    TopicPartition,
    open_admin,
    open_producer,
)

pytestmark = pytest.mark.anyio


async def test_topics_are_described_with_bounds_and_sizes(
    store: ObjectStore, meta: SQLiteMetadataStore
) -> None:
    """describe_topic gives each partition's bounds, segment count and bytes."""
    async with open_admin(storage=store, metadata=meta) as admin:
        await admin.create_topic("t", partitions=2)
        async with open_producer(storage=store, metadata=meta, linger=0) as producer:
            await producer.send_batch("t", [b"x"] * 10, partition=1)
            await producer.send_batch("t", [b"y"] * 5, partition=1)
        described = await admin.describe_topic("t")
        assert [t.name for t in await admin.list_topics()] == ["t"]
        p0, p1 = described.partitions
        assert (p0.high_watermark, p0.segments, p0.bytes) == (0, 0, 0)
        assert (p1.log_start_offset, p1.high_watermark, p1.segments) == (0, 15, 2)
        assert p1.bytes > 0
        await admin.delete_topic("t")
        with pytest.raises(TopicNotFoundError):
            await admin.describe_topic("t")


async def test_group_lag_and_resets(store: ObjectStore, meta: SQLiteMetadataStore) -> None:
    """describe_group shows committed, high watermark and lag; resets move the offsets."""
    async with open_admin(storage=store, metadata=meta) as admin:
        await admin.create_topic("t", partitions=2)
        async with open_producer(storage=store, metadata=meta, linger=0) as producer:
            await producer.send_batch("t", [b"x"] * 10, partition=0)
            await producer.send_batch("t", [b"x"] * 4, partition=1)
        await meta.commit_offsets("g", {TopicPartition("t", 0): 3})
        rows = await admin.describe_group("g")
        assert [(r.topic, r.partition, r.committed, r.high_watermark, r.lag) for r in rows] == [
            ("t", 0, 3, 10, 7),
        ]  # fmt: skip
        assert await admin.list_groups() == ["g"]
        latest = await admin.reset_offsets("g", "t", "latest")
        assert latest == {TopicPartition("t", 0): 10, TopicPartition("t", 1): 4}
        assert all(r.lag == 0 for r in await admin.describe_group("g"))
        await admin.reset_offsets("g", "t", "earliest", partitions=[1])
        assert [r.lag for r in await admin.describe_group("g")] == [0, 4]
        await admin.reset_offsets("g", "t", 2)
        assert [r.committed for r in await admin.describe_group("g")] == [2, 2]
        with pytest.raises(InvalidArgumentError, match="outside partition 1"):
            await admin.reset_offsets("g", "t", 5)
        with pytest.raises(InvalidArgumentError, match="no partition"):
            await admin.reset_offsets("g", "t", "latest", partitions=[7])
        with pytest.raises(TopicNotFoundError):
            await admin.reset_offsets("g", "missing", "latest")
        await admin.delete_group("g")
        assert await admin.list_groups() == []


async def test_orphans_past_the_grace_period_are_deleted(
    store: ObjectStore, meta: SQLiteMetadataStore
) -> None:
    """Uncommitted objects older than the grace period go; committed and young ones stay."""
    async with open_admin(storage=store, metadata=meta) as admin:
        await admin.create_topic("t")
        async with open_producer(storage=store, metadata=meta, linger=0) as producer:
            await producer.send("t", b"kept")
        old_ms = int((time.time() - 7200) * 1000)
        old_orphan = f"data/{old_ms:013d}-0123456789abcdef.seg"
        young_orphan = f"data/{int(time.time() * 1000):013d}-fedcba9876543210.seg"
        await store.put(old_orphan, b"crashed between PUT and commit")
        await store.put(young_orphan, b"maybe still committing")
        await store.put("elsewhere/x", b"not ours")
        before = {info.key async for info in store.list()}
        assert await admin.delete_orphans(grace=3600) == [old_orphan]
        after = {info.key async for info in store.list()}
        assert after == before - {old_orphan}
        with pytest.raises(InvalidArgumentError):
            await admin.delete_orphans(grace=-1)
