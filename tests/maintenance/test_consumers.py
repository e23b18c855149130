"""Consumers across maintenance, on both metadata stores and both object stores:
gaps compaction leaves, positions that retention removes (at open and while
reading, objects deleted under a live reader), merges under a live reader."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streamhouse import (
    Admin,
    ObjectNotFoundError,
    OffsetOutOfRangeError,
    TopicPartition,
    open_consumer,
)
from streamhouse._consumer import coalesce

from ..helpers import Stores, poll_until
from .support import flushes

pytestmark = pytest.mark.anyio

TP = TopicPartition("t", 0)


async def compacted(stores: Stores) -> Admin:
    """A compacted partition with a gap between segments and one inside a block.

    Offsets 0-9 in five flushes; compaction removes 2 (the whole second
    segment: c has a newer record) and 6 (e, inside the fourth segment).
    """
    admin = Admin(*stores)
    await admin.create_topic("t", cleanup_policy="compact")
    await flushes(
        stores, "t", 0,
        [
            [(b"a", b"a0"), (b"b", b"b0")],  # 0-1: stays
            [(b"c", b"c0")],  # 2: removed whole, a gap between segments
            [(b"c", b"c1"), (b"d", b"d0")],  # 3-4: stays
            [(b"f", b"f0"), (b"e", b"e0"), (b"e", b"e1")],  # 5-7: 6 goes, a gap in a block
            [(b"a", b"a1"), (b"g", b"g0")],  # 8-9: the last segment, never cleaned
        ],
    )  # fmt: skip
    report = await admin.maintain(grace=0, target_bytes=1)
    assert report.records_removed == 2
    return admin


EXPECTED = [(0, b"a0"), (1, b"b0"), (3, b"c1"), (4, b"d0"), (5, b"f0"), (7, b"e1"),
            (8, b"a1"), (9, b"g0")]  # fmt: skip


async def test_a_consumer_reads_across_offset_gaps(stores: Stores) -> None:
    """poll() and poll_batches() skip the gaps; positions follow the records."""
    await compacted(stores)
    async with stores.consumer("t", offset_reset="earliest", group_id="g") as consumer:
        got = await poll_until(consumer, len(EXPECTED))
        assert [(r.offset, r.value) for r in got] == EXPECTED
        assert await consumer.position("t", 0) == 10
        await consumer.commit()
        await consumer.seek("t", 0, 0)
        batches: list[Any] = []
        while sum(map(len, batches)) < len(EXPECTED):
            batches += await consumer.poll_batches(timeout=5, max_records=3)
        assert [o for b in batches for o in b.offsets] == [o for o, _ in EXPECTED]
        assert all(list(b.offsets) == [r.offset for r in b] for b in batches)
        assert any(b.gapped for b in batches)
        # A seek into a gap reads on from the next record there is.
        await consumer.seek("t", 0, 6)
        (first, *_) = await poll_until(consumer, 1)
        assert (first.offset, first.value) == (7, b"e1")
        await consumer.seek("t", 0, 2)
        (record,) = await consumer.poll(timeout=5, max_records=1)
        assert (record.offset, record.value) == (3, b"c1")
        assert await consumer.position("t", 0) == 4
    assert (await stores.meta.fetch_offsets("g"))[TP].offset == 4


async def test_a_committed_offset_in_a_gap_resumes_at_the_next_record(stores: Stores) -> None:
    """A group whose committed offset fell in a gap resumes after it, without a reset."""
    await compacted(stores)
    await stores.meta.commit_offsets("g", {TP: 2})
    async with stores.consumer("t", group_id="g", offset_reset="none") as consumer:
        got = await poll_until(consumer, len(EXPECTED) - 2)
    assert [r.offset for r in got] == [o for o, _ in EXPECTED if o >= 2]


@pytest.fixture
def one_segment_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers take one segment a batch, as they do segments over 256 KiB:
    these tests need a reader still behind what retention removes, and
    small segments read together (module coalesce) would all be read ahead
    in one batch."""
    monkeypatch.setattr(coalesce, "GROUP_BYTES", 0)


@pytest.mark.usefixtures("one_segment_a_batch")
@pytest.mark.parametrize(("reset", "first"), [("earliest", 8), ("latest", None)])
async def test_retention_under_a_live_reader_applies_offset_reset(
    stores: Stores, reset: str, first: int | None
) -> None:
    """A reader whose next segments retention removed (objects deleted too) resets."""
    admin = Admin(*stores)
    await admin.create_topic("t")
    await flushes(stores, "t", 0, [[(b"k", b"%d" % i)] for i in range(10)])
    async with stores.consumer("t", offset_reset=reset, prefetch_batches=1) as consumer:
        await consumer.seek_to_beginning(TP)
        (record,) = await consumer.poll(timeout=5, max_records=1)
        assert record.offset == 0
        # The reader looked segments up; retention removes all but the last
        # two, and their objects go at once (grace 0).
        sizes = [s.length for s in await stores.meta.list_segments("t", 0)]
        await admin.alter_topic("t", retention_bytes=sum(sizes[-2:]))
        report = await admin.maintain(grace=0, target_bytes=1)
        assert report.objects_deleted == 8
        if first is None:  # latest: at the high watermark, nothing more to read
            await poll_until_position(consumer, 10)
            await flushes(stores, "t", 0, [[(b"k", b"new")]])
            (record,) = await poll_until(consumer, 1)
            assert (record.offset, record.value) == (10, b"new")
        else:
            got: list[Any] = []
            while not got or got[-1].offset < 9:
                got += await poll_until(consumer, 1)
            # What was read ahead before the removal may come first (as
            # Kafka delivers what it fetched); then the new log start.
            offsets = [r.offset for r in got]
            assert offsets[-2:] == [first, first + 1]
            assert offsets[:-2] == list(range(1, len(offsets) - 1))
            assert len(offsets) < 9


async def test_retention_under_a_reader_halfway_through_an_object(stores: Stores) -> None:
    """An object of several blocks deleted while a reader is inside it: every
    record delivered is the one at its offset, in order, none twice, and the
    reader goes on at the new log start (what it had fetched may come first)."""
    admin = Admin(*stores)
    await admin.create_topic("t")
    value = [bytes([i]) * 300_000 for i in range(12)]  # 3.6 MB: blocks of about 1 MiB
    await flushes(stores, "t", 0, [[(b"k", v) for v in value], [(b"k", b"after")]])
    (first, last) = await stores.meta.list_segments("t", 0)
    async with stores.consumer("t", offset_reset="earliest", prefetch_batches=1) as consumer:
        await consumer.seek_to_beginning(TP)
        (record,) = await consumer.poll(timeout=5, max_records=1)
        assert record.offset == 0
        await admin.alter_topic("t", retention_bytes=last.length)  # the first segment goes
        report = await admin.maintain(grace=0, target_bytes=1)
        assert report.objects_deleted == 1
        with pytest.raises(ObjectNotFoundError):
            await stores.storage.head(first.object_key)
        got: list[Any] = []
        while not got or got[-1].offset < 12:
            got += await poll_until(consumer, 1)
    offsets = [r.offset for r in got]
    assert offsets == [*range(1, len(offsets)), 12]
    assert [r.value for r in got] == [*value[1 : len(offsets)], b"after"]


async def poll_until_position(consumer: Any, offset: int) -> None:
    for _ in range(100):
        await consumer.poll(timeout=0.05)
        if await consumer.position("t", 0) == offset:
            return
    raise AssertionError(f"position never reached {offset}")


@pytest.mark.usefixtures("one_segment_a_batch")
async def test_retention_under_a_reader_without_reset_raises_naming_the_partition(
    stores: Stores,
) -> None:
    """offset_reset="none": poll() raises OffsetOutOfRangeError naming the partition."""
    admin = Admin(*stores)
    await admin.create_topic("t")
    await flushes(stores, "t", 0, [[(b"k", b"%d" % i)] for i in range(6)])
    await stores.meta.commit_offsets("g", {TP: 0})
    async with stores.consumer(
        TP, group_id="g", offset_reset="none", prefetch_batches=1, auto_commit=False
    ) as consumer:
        await consumer.poll(timeout=5, max_records=1)
        await admin.alter_topic("t", retention_bytes=0)
        await admin.maintain(grace=0, target_bytes=1)
        got: list[Any] = []
        with pytest.raises(OffsetOutOfRangeError, match=r"t\[0\].*offset_reset='none'"):
            await poll_forever(consumer, got)
        # What was read ahead before the removal came first.
        assert [r.offset for r in got] == list(range(1, len(got) + 1))
        assert len(got) < 5


async def poll_forever(consumer: Any, got: list[Any]) -> None:
    with anyio.fail_after(30):
        while True:
            got += await consumer.poll(timeout=0.05)


async def test_a_live_reader_reads_through_a_merge(stores: Stores) -> None:
    """Segments merged (old objects deleted at once) under a reader: every record once."""
    admin = Admin(*stores)
    await admin.create_topic("t")
    await flushes(stores, "t", 0, [[(b"k", b"%d" % i)] for i in range(30)])
    async with stores.consumer("t", offset_reset="earliest", prefetch_batches=1) as consumer:
        got = await consumer.poll(timeout=5, max_records=1)
        report = await admin.maintain(grace=0)
        assert report.segments_merged == 30
        assert report.objects_deleted == 30
        got += await poll_until(consumer, 29)
    assert [(r.offset, r.value) for r in got] == [(i, b"%d" % i) for i in range(30)]


class MergeAtFirstGet:
    """An object store that runs maintenance (a merge, old objects deleted at
    once) just before its first GET goes through."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.merged = False

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if not self.merged:
            self.merged = True
            report = await Admin(*self.stores).maintain(grace=0)
            assert report.objects_deleted == 10
        return await self.stores.storage.get(key, start, end)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stores.storage, name)


async def test_segments_read_together_whose_objects_a_merge_deleted(stores: Stores) -> None:
    """Small segments are asked for together (module coalesce); when a merge
    deletes their objects as they are fetched, the reader looks them up
    again and delivers every record once, in order, from the merged one."""
    await Admin(*stores).create_topic("t")
    await flushes(stores, "t", 0, [[(b"k", b"%d" % i)] for i in range(10)])
    store = MergeAtFirstGet(stores)
    async with open_consumer("t", storage=store, metadata=stores.meta,
                             offset_reset="earliest") as consumer:  # fmt: skip
        got = await poll_until(consumer, 10)
    assert store.merged
    assert [(r.offset, r.value) for r in got] == [(i, b"%d" % i) for i in range(10)]


async def test_a_committed_offset_retention_removed_resets_at_open(stores: Stores) -> None:
    """At open, a committed offset below the new log start applies offset_reset."""
    admin = Admin(*stores)
    await admin.create_topic("t", retention_bytes=0)
    await flushes(stores, "t", 0, [[(b"k", b"old")]] * 3)
    await stores.meta.commit_offsets("g", {TP: 1})
    await admin.maintain(grace=0)
    await flushes(stores, "t", 0, [[(b"k", b"new")]])
    with pytest.raises(OffsetOutOfRangeError, match=r"t\[0\]"):
        async with stores.consumer("t", group_id="g", offset_reset="none"):
            pass
    async with stores.consumer("t", group_id="g", offset_reset="earliest") as consumer:
        (record,) = await poll_until(consumer, 1)
    assert (record.offset, record.value) == (3, b"new")
