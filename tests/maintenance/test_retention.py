"""Time and size retention, on both metadata stores and both object stores:
the oldest segments go, the log start moves, objects wait out the grace."""

from __future__ import annotations

import anyio
import pytest

from streamhouse import Admin, ObjectNotFoundError

from ..helpers import Stores
from .support import DAY_MS, flushes, log, now_ms, object_keys, referenced_keys

pytestmark = pytest.mark.anyio

# target_bytes=1 keeps merging out of these tests: no segment is small.


async def test_segments_older_than_the_retention_go(stores: Stores) -> None:
    """A segment whose newest record is older than retention_seconds goes; the rest stays."""
    admin = Admin(*stores)
    await admin.create_topic("t", retention_seconds=3600)
    old = now_ms() - DAY_MS
    await flushes(stores, "t", 0, [[(b"a", b"1")], [(b"b", b"2")]], timestamp=old)
    await flushes(stores, "t", 0, [[(b"c", b"3")], [(b"d", b"4")]])
    before = await object_keys(stores.storage)
    report = await admin.maintain(grace=0, target_bytes=1)
    assert (report.segments_deleted, report.objects_deleted) == (2, 2)
    assert report.bytes_deleted > 0
    assert await log(stores, "t") == [(2, b"c", b"3"), (3, b"d", b"4")]
    (p0,) = (await admin.describe_topic("t")).partitions
    assert (p0.log_start_offset, p0.high_watermark, p0.segments) == (2, 4, 2)
    after = await object_keys(stores.storage)
    assert after == await referenced_keys(stores.meta, "t", 1)
    assert len(before - after) == 2
    # Nothing more to do: a second pass changes nothing.
    again = await admin.maintain(grace=0, target_bytes=1)
    assert (again.segments_deleted, again.objects_deleted, again.skipped) == (0, 0, False)


async def test_the_oldest_segments_go_while_a_partition_holds_too_much(stores: Stores) -> None:
    """Size retention removes the oldest segments until the partition is within its bytes."""
    admin = Admin(*stores)
    await admin.create_topic("t", partitions=2)
    await flushes(stores, "t", 0, [[(b"k", b"x" * 1000)]] * 5)
    await flushes(stores, "t", 1, [[(b"k", b"x" * 1000)]])
    sizes = [s.length for s in await stores.meta.list_segments("t", 0)]
    await admin.alter_topic("t", retention_bytes=sum(sizes[-2:]))
    report = await admin.maintain(grace=0, target_bytes=1)
    assert report.segments_deleted == 3
    assert [o for o, _, _ in await log(stores, "t", 0)] == [3, 4]
    assert [o for o, _, _ in await log(stores, "t", 1)] == [0]
    # Zero bytes: everything goes, and the log start reaches the high watermark.
    await admin.alter_topic("t", retention_bytes=0)
    await admin.maintain(grace=0, target_bytes=1)
    states = await stores.meta.partition_states(["t"])
    assert [(s.log_start_offset, s.high_watermark) for s in states] == [(5, 5), (1, 1)]
    assert await object_keys(stores.storage) == set()


async def test_objects_outlive_their_segments_by_the_grace(stores: Stores) -> None:
    """A reader that looked a segment up before it went still reads it within the grace."""
    admin = Admin(*stores)
    await admin.create_topic("t", retention_seconds=60)
    await flushes(stores, "t", 0, [[(b"k", b"old")]], timestamp=now_ms() - DAY_MS)
    await flushes(stores, "t", 0, [[(b"k", b"new")]])
    (looked_up, _) = await stores.meta.list_segments("t", 0)
    report = await admin.maintain(grace=3600, target_bytes=1)
    assert (report.segments_deleted, report.objects_deleted) == (1, 0)
    assert await log(stores, "t") == [(1, b"k", b"new")]
    start, end = looked_up.position, looked_up.position + looked_up.length
    assert len(await stores.storage.get(looked_up.object_key, start, end)) == looked_up.length
    report = await admin.maintain(grace=0, target_bytes=1)
    assert report.objects_deleted == 1
    with pytest.raises(ObjectNotFoundError):
        await stores.storage.get(looked_up.object_key, start, end)


async def test_a_packed_object_stays_while_another_partition_points_into_it(
    stores: Stores,
) -> None:
    """An object holding two partitions goes only once neither points into it."""
    admin = Admin(*stores)
    await admin.create_topic("t", partitions=2, retention_seconds=3600)
    old, new = now_ms() - DAY_MS, now_ms()
    async with stores.producer(linger=0.5) as producer, anyio.create_task_group() as tg:
        # Sent together: one flush, one object, two segments.
        tg.start_soon(lambda: producer.send("t", b"old", partition=0, timestamp=old))
        tg.start_soon(lambda: producer.send("t", b"new", partition=1, timestamp=new))
    (packed,) = await object_keys(stores.storage)
    report = await admin.maintain(grace=0, target_bytes=1)
    assert (report.segments_deleted, report.objects_deleted) == (1, 0)
    assert await object_keys(stores.storage) == {packed}
    assert await log(stores, "t", 1) == [(0, None, b"new")]
    await admin.alter_topic("t", retention_bytes=0)
    report = await admin.maintain(grace=0, target_bytes=1)
    assert (report.segments_deleted, report.objects_deleted) == (1, 1)
    assert await object_keys(stores.storage) == set()


async def test_a_deleted_topics_objects_go_after_the_grace(stores: Stores) -> None:
    """delete_topic releases the topic's objects; a pass deletes them."""
    admin = Admin(*stores)
    await admin.create_topic("gone")
    await admin.create_topic("kept")
    await flushes(stores, "gone", 0, [[(b"k", b"v")]] * 3)
    await flushes(stores, "kept", 0, [[(b"k", b"v")]])
    await admin.delete_topic("gone")
    assert (await admin.maintain(grace=3600, target_bytes=1)).objects_deleted == 0
    assert (await admin.maintain(grace=0, target_bytes=1)).objects_deleted == 3
    assert await object_keys(stores.storage) == await referenced_keys(stores.meta, "kept", 1)
