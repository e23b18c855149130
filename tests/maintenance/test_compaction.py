"""Key compaction, on both metadata stores and both object stores: the newest
record of each key stays at its offset, tombstones go after their time, and
producers refuse keyless records."""

from __future__ import annotations

import pytest

from streamhouse import Admin, InvalidArgumentError

from ..helpers import Stores
from .support import flushes, log, object_keys, referenced_keys

pytestmark = pytest.mark.anyio


async def test_compaction_keeps_the_newest_record_of_each_key(stores: Stores) -> None:
    """Older records of a key go; offsets stay; the last segment is left alone."""
    admin = Admin(*stores)
    await admin.create_topic("t", cleanup_policy="compact")
    await flushes(
        stores,
        "t",
        0,
        [
            [(b"a", b"a0"), (b"b", b"b0"), (b"a", b"a1")],  # offsets 0-2
            [(b"c", b"c0"), (b"b", b"b1")],  # 3-4
            [(b"a", b"a2"), (b"a", b"a3")],  # 5-6: the last segment
        ],
    )
    report = await admin.maintain(grace=0, target_bytes=1)
    # Only the first segment loses records (a0, b0); the second stays as it is.
    assert (report.segments_compacted, report.records_removed, report.objects_written) == (1, 2, 1)
    # a1 stays: its newer values are in the last segment, which is not cleaned.
    assert await log(stores, "t") == [
        (2, b"a", b"a1"), (3, b"c", b"c0"), (4, b"b", b"b1"), (5, b"a", b"a2"), (6, b"a", b"a3"),
    ]  # fmt: skip
    (first, second, last) = await stores.meta.list_segments("t", 0)
    assert (first.base_offset, first.end_offset, first.record_count) == (0, 3, 1)
    assert (second.base_offset, last.base_offset) == (3, 5)
    # Once more data arrives, the old last segment is cleaned too (c0 stays
    # while c1 is in the new last segment).
    await flushes(stores, "t", 0, [[(b"c", b"c1")]])
    report = await admin.maintain(grace=0, target_bytes=1)
    assert await log(stores, "t") == [
        (3, b"c", b"c0"), (4, b"b", b"b1"), (6, b"a", b"a3"), (7, b"c", b"c1"),
    ]  # fmt: skip
    assert report.records_removed == 2
    assert await object_keys(stores.storage) == await referenced_keys(stores.meta, "t", 1)
    # Nothing new: the next pass reads nothing and rewrites nothing.
    again = await admin.maintain(grace=0, target_bytes=1)
    assert (again.segments_compacted, again.bytes_rewritten) == (0, 0)


async def test_tombstones_stay_for_their_time_then_go(stores: Stores) -> None:
    """A tombstone removes its key's older records at once, and itself after its retention."""
    admin = Admin(*stores)
    await admin.create_topic("t", cleanup_policy="compact", delete_retention_seconds=3600)
    await flushes(stores, "t", 0, [[(b"a", b"1"), (b"b", b"2")], [(b"a", None)], [(b"z", b"9")]])
    await admin.maintain(grace=0, target_bytes=1)
    assert await log(stores, "t") == [(1, b"b", b"2"), (2, b"a", None), (3, b"z", b"9")]
    await admin.alter_topic("t", delete_retention_seconds=0)
    report = await admin.maintain(grace=0, target_bytes=1)
    assert report.records_removed == 1
    assert await log(stores, "t") == [(1, b"b", b"2"), (3, b"z", b"9")]


async def test_recent_segments_wait_for_the_grace(stores: Stores) -> None:
    """Segments committed within the grace are not compacted yet."""
    admin = Admin(*stores)
    await admin.create_topic("t", cleanup_policy="compact")
    await flushes(stores, "t", 0, [[(b"a", b"1")], [(b"a", b"2")], [(b"a", b"3")]])
    report = await admin.maintain(grace=3600, target_bytes=1)
    assert report.segments_compacted == 0
    assert len(await log(stores, "t")) == 3


async def test_a_compacted_topic_refuses_records_without_a_key(stores: Stores) -> None:
    """send and send_batch of a keyless record to a compacted topic raise InvalidArgumentError."""
    admin = Admin(*stores)
    await admin.create_topic("c", cleanup_policy="compact")
    await admin.create_topic("d")
    async with stores.producer(linger=0) as producer:
        with pytest.raises(InvalidArgumentError, match="compacted topic 'c' needs a key"):
            await producer.send("c", b"v")
        with pytest.raises(InvalidArgumentError, match="record 1 has no key"):
            await producer.send_batch("c", [b"v", b"w"], keys=[b"k", None])
        with pytest.raises(InvalidArgumentError, match="needs a key"):
            await producer.send_batch("c", [b"v"])
        await producer.send("c", None, key=b"k")  # a tombstone has a key
        await producer.send("d", b"v")
    assert await log(stores, "c") == [(0, b"k", None)]


async def test_keyless_records_from_before_are_kept(stores: Stores) -> None:
    """Records written before the topic became compacted, without keys, are never removed."""
    admin = Admin(*stores)
    await admin.create_topic("t")
    await flushes(stores, "t", 0, [[(None, b"x"), (b"a", b"1")], [(b"a", b"2")], [(None, b"y")]])
    await admin.alter_topic("t", cleanup_policy="compact")
    await admin.maintain(grace=0, target_bytes=1)
    assert await log(stores, "t") == [(0, None, b"x"), (2, b"a", b"2"), (3, None, b"y")]
