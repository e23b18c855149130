"""Small-object merging, on both metadata stores and both object stores: runs of
small segments become larger ones with identical records and offsets."""

from __future__ import annotations

import pytest

from streamhouse import Admin

from ..helpers import Stores, read_partition
from .support import flushes, object_keys, referenced_keys

pytestmark = pytest.mark.anyio


async def test_small_segments_merge_into_larger_ones(stores: Stores) -> None:
    """Twenty small flushes become segments of about the target size, records unchanged."""
    admin = Admin(*stores)
    await admin.create_topic("t", partitions=2)
    batches = [[(b"k%d" % i, b"v" * 200)] * 3 for i in range(20)]
    await flushes(stores, "t", 0, batches)
    await flushes(stores, "t", 1, batches[:1])
    before = await read_partition(stores.storage, stores.meta, "t", 0)
    target = sum(s.length for s in (await stores.meta.list_segments("t", 0))[:8])
    report = await admin.maintain(grace=0, target_bytes=target)
    segments = await stores.meta.list_segments("t", 0)
    assert 2 <= len(segments) <= 4
    assert report.segments_merged >= 19
    assert report.objects_written == len(segments)
    assert report.bytes_rewritten > 0
    assert report.bytes_written > 0
    assert await read_partition(stores.storage, stores.meta, "t", 0) == before
    # Partition 1's lone segment has nothing to merge with.
    assert len(await stores.meta.list_segments("t", 1)) == 1
    # The old objects went (grace 0); only what the catalogue points at is left.
    assert await object_keys(stores.storage) == await referenced_keys(stores.meta, "t", 2)
    assert report.objects_deleted == 20


async def test_merging_keeps_offset_gaps_and_headers(stores: Stores) -> None:
    """Compacted segments merge with their gaps; headers and timestamps come through."""
    admin = Admin(*stores)
    await admin.create_topic("t", cleanup_policy="compact")
    async with stores.producer(linger=0) as producer:
        for i in range(6):
            await producer.send_batch(
                "t", [b"%d" % i] * 2, keys=[b"a", b"b%d" % i],
                headers=[[("h", b"%d" % i)], None], timestamps=1000 + i,
            )  # fmt: skip
    # Compaction only: "a" at 0, 2, 4, 6 goes (its newest cleanable is 8).
    await admin.maintain(grace=0, target_bytes=1)
    compacted = await read_partition(stores.storage, stores.meta, "t", 0)
    assert [row[0] for row in compacted] == [1, 3, 5, 7, 8, 9, 10, 11]
    report = await admin.maintain(grace=0, target_bytes=1 << 20)
    assert report.segments_merged == 6
    assert await read_partition(stores.storage, stores.meta, "t", 0) == compacted
    assert [(s.base_offset, s.end_offset) for s in await stores.meta.list_segments("t", 0)] == [
        (0, 12),
    ]


async def test_recent_and_large_segments_are_left_alone(stores: Stores) -> None:
    """Segments within the grace, or already large, are not rewritten."""
    admin = Admin(*stores)
    await admin.create_topic("t")
    await flushes(stores, "t", 0, [[(b"k", b"v" * 100)]] * 4)
    assert (await admin.maintain(grace=3600)).segments_merged == 0
    assert (await admin.maintain(grace=0, target_bytes=100)).segments_merged == 0
    assert len(await stores.meta.list_segments("t", 0)) == 4
