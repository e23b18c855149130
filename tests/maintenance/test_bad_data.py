"""A partition whose own data cannot be read (a corrupt segment, a missing
object) is skipped and named; the pass maintains every other partition."""

from __future__ import annotations

import pytest

from streamhouse import Admin

from ..helpers import Stores, read_partition
from .support import flushes, log

pytestmark = pytest.mark.anyio


async def test_a_corrupt_or_missing_segment_costs_its_partition_only(stores: Stores) -> None:
    """a[0] has a corrupt segment and b[0] a missing object: the pass reports
    both, leaves them as they were, and merges a[1] and c[0]; the next pass
    reports them again."""
    admin = Admin(*stores)
    batches = [[(b"k%d" % i, b"v" * 200)] * 3 for i in range(12)]
    for topic, partitions in (("a", 2), ("b", 1), ("c", 1)):
        await admin.create_topic(topic, partitions=partitions)
        for p in range(partitions):
            await flushes(stores, topic, p, batches)
    bad = (await stores.meta.list_segments("a", 0))[3]
    data = bytearray(await stores.storage.get(bad.object_key))
    data[bad.position + 60] ^= 0xFF  # inside the first block's payload
    await stores.storage.put(bad.object_key, bytes(data))
    gone = (await stores.meta.list_segments("b", 0))[5]
    await stores.storage.delete(gone.object_key)
    good = {(t, p): await read_partition(stores.storage, stores.meta, t, p)
            for t, p in (("a", 1), ("c", 0))}  # fmt: skip
    before = {t: await stores.meta.list_segments(t, 0) for t in ("a", "b")}

    report = await admin.maintain(grace=0, target_bytes=1 << 20)

    assert len(report.problems) == 2
    corrupt, missing = sorted(report.problems)
    assert corrupt.startswith("merging of a[0] skipped: corrupt data in")
    assert bad.object_key in corrupt
    assert missing.startswith("merging of b[0] skipped:")
    assert gone.object_key in missing
    assert {t: await stores.meta.list_segments(t, 0) for t in ("a", "b")} == before
    assert report.segments_merged == 24  # a[1] and c[0], 12 each
    for (topic, p), records in good.items():
        assert len(await stores.meta.list_segments(topic, p)) == 1
        assert await read_partition(stores.storage, stores.meta, topic, p) == records
    again = await admin.maintain(grace=0, target_bytes=1 << 20)
    assert sorted(again.problems) == [corrupt, missing]


async def test_a_corrupt_segment_stops_the_compaction_of_its_partition_only(
    stores: Stores,
) -> None:
    """In a compacted topic, partition 0's corrupt segment leaves it as it
    was, named; partition 1 is compacted in the same pass."""
    admin = Admin(*stores)
    await admin.create_topic("t", partitions=2, cleanup_policy="compact")
    batches = [[(b"a", b"a0"), (b"a", b"a1")], [(b"b", b"b0")], [(b"a", b"a2")]]
    for p in (0, 1):
        await flushes(stores, "t", p, batches)
    bad = (await stores.meta.list_segments("t", 0))[0]
    data = bytearray(await stores.storage.get(bad.object_key))
    data[bad.position + 60] ^= 0xFF
    await stores.storage.put(bad.object_key, bytes(data))
    before = await stores.meta.list_segments("t", 0)

    report = await admin.maintain(grace=0, target_bytes=1)

    (problem,) = report.problems
    assert problem.startswith("compaction of t[0] skipped: corrupt data in")
    assert await stores.meta.list_segments("t", 0) == before
    assert report.records_removed == 1  # partition 1's a0
    assert [key for _, key, _ in await log(stores, "t", 1)] == [b"a", b"b", b"a"]
