"""open_admin: topics described, group lag, offset resets, orphan cleanup."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from streamhouse import (
    InvalidArgumentError,
    LocalObjectStore,
    MetadataStore,
    ObjectStore,
    SQLiteMetadataStore,
    StorageError,
    TopicNotFoundError,
    TopicPartition,
    open_admin,
    open_producer,
)

from ..helpers import make_s3_store, read_partition
from ..servers.seaweed import S3Server

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


async def test_create_topic_checks_the_bucket_before_recording_anything(
    s3_server: S3Server, s3_prefix: str, meta: SQLiteMetadataStore
) -> None:
    """A missing bucket fails create_topic with one StorageError naming it; no topic is made."""
    store = make_s3_store(s3_server, s3_prefix, bucket="no-bucket-for-topics")
    async with open_admin(storage=store, metadata=meta) as admin:
        with pytest.raises(StorageError, match="'no-bucket-for-topics' does not exist at"):
            await admin.create_topic("t")
        assert await admin.list_topics() == []
    await store.aclose()


async def test_create_topic_refuses_an_unwritable_directory(
    tmp_path: Path, meta: SQLiteMetadataStore
) -> None:
    """A local store whose directory cannot be made fails create_topic before recording it."""
    (tmp_path / "file").write_bytes(b"in the way")
    async with open_admin(storage=f"file://{tmp_path}/file/objects", metadata=meta) as admin:
        with pytest.raises(StorageError, match="file/objects"):
            await admin.create_topic("t")
        assert await admin.list_topics() == []


async def test_delete_orphans_also_removes_stale_temporaries(
    tmp_path: Path, meta: SQLiteMetadataStore
) -> None:
    """Temporaries a killed put left behind go once older than the grace; young ones stay."""
    store = LocalObjectStore(tmp_path / "objects")
    async with open_admin(storage=store, metadata=meta) as admin:
        await admin.create_topic("t")
        async with open_producer(storage=store, metadata=meta, linger=0) as producer:
            await producer.send("t", b"kept")
        data = tmp_path / "objects" / "data"
        old = time.time() - 7200
        (data / ".tmp-killed").write_bytes(b"x" * 1000)
        os.utime(data / ".tmp-killed", (old, old))
        (data / ".tmp-young").write_bytes(b"x")
        assert await admin.delete_orphans(grace=3600) == ["data/.tmp-killed"]
        assert sorted(p.name for p in data.iterdir() if p.name.startswith(".tmp-")) == [
            ".tmp-young"
        ]
        assert [row[3] for row in await read_partition(store, meta, "t", 0)] == [b"kept"]
        with pytest.raises(InvalidArgumentError, match="grace"):
            await admin.delete_orphans(grace=float("nan"))


async def test_group_members_and_owners_are_described(tmp_path: Path) -> None:
    """describe_group_members lists each member and what it owns; describe_group
    names each partition's owner."""
    from streamhouse import open_consumer

    storage = LocalObjectStore(tmp_path / "objects")
    meta = SQLiteMetadataStore(tmp_path / "meta.db")
    async with open_admin(storage=storage, metadata=meta) as admin:
        await admin.create_topic("t", partitions=2)
        async with open_consumer("t", group_id="g", storage=storage, metadata=meta,
                                 heartbeat_interval=0.05) as consumer:  # fmt: skip
            await consumer.commit({TopicPartition("t", 0): 0})
            (member,) = await admin.describe_group_members("g")
            assert member.assignment == frozenset({TopicPartition("t", 0), TopicPartition("t", 1)})
            assert member.instance_id is None
            assert member.epoch > 0
            assert member.last_heartbeat > time.time() - 60
            rows = await admin.describe_group("g")
            assert [(r.partition, r.member_id) for r in rows] == [(0, member.member_id)]
        assert await admin.describe_group_members("g") == []
        assert [r.member_id for r in await admin.describe_group("g")] == [None, None]
    await storage.aclose()
    await meta.aclose()


class _StaleMembers:
    """A metadata store whose describe_group_members answers as before a member joined."""

    def __init__(self, inner: MetadataStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def describe_group_members(self, group_id: str) -> list[Any]:
        return []


async def test_a_member_joining_after_the_check_still_stops_a_reset_or_a_deletion(
    tmp_path: Path, meta: SQLiteMetadataStore
) -> None:
    """Admin's check sees no member (one joins right after it): the store,
    checking again in the write's transaction, refuses and writes nothing."""
    from streamhouse import GroupNotEmptyError
    from streamhouse._metadata.groups import HeartbeatRequest

    storage = LocalObjectStore(tmp_path / "objects")
    tp = TopicPartition("t", 0)
    await meta.create_topic("t", 1)
    await meta.commit_offsets("g", {tp: 0})
    await meta.heartbeat("g", HeartbeatRequest("late", 0, ("t",), 30.0))
    async with open_admin(storage=storage, metadata=_StaleMembers(meta)) as admin:  # type: ignore[arg-type]
        with pytest.raises(GroupNotEmptyError, match=r"\(late\).*from outside it"):
            await admin.reset_offsets("g", "t", "latest")
        with pytest.raises(GroupNotEmptyError, match=r"\(late\).*deleting it"):
            await admin.delete_group("g")
    assert (await meta.fetch_offsets("g"))[tp].offset == 0
    await storage.aclose()


async def test_a_running_group_is_neither_reset_nor_deleted(
    tmp_path: Path, meta: SQLiteMetadataStore
) -> None:
    """While the group has a live member, reset_offsets and delete_group raise
    GroupNotEmptyError naming it and change nothing; once it left, both work."""
    from streamhouse import GroupNotEmptyError, open_consumer

    storage = LocalObjectStore(tmp_path / "objects")
    tp = TopicPartition("t", 0)
    async with open_admin(storage=storage, metadata=meta) as admin:
        await admin.create_topic("t")
        async with open_producer(storage=storage, metadata=meta, linger=0) as producer:
            await producer.send_batch("t", [b"x"] * 5)
        options = {"offset_reset": "earliest", "heartbeat_interval": 0.05}
        async with open_consumer("t", group_id="g", storage=storage, metadata=meta,
                                 **options) as consumer:  # fmt: skip
            assert len(await consumer.poll(timeout=5)) == 5
            await consumer.commit()
            (member,) = await admin.describe_group_members("g")
            named = rf"group 'g' has 1 live member\(s\) \({member.member_id}\)"
            with pytest.raises(GroupNotEmptyError, match=named + ".*resetting its offsets"):
                await admin.reset_offsets("g", "t", "earliest")
            with pytest.raises(GroupNotEmptyError, match=named + ".*deleting it"):
                await admin.delete_group("g")
            assert (await meta.fetch_offsets("g"))[tp].offset == 5
        assert await admin.reset_offsets("g", "t", "earliest") == {tp: 0}
        await admin.delete_group("g")
        assert await meta.fetch_offsets("g") == {}
    await storage.aclose()
