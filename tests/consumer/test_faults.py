"""The consumer through faults: transient errors, outages, corrupt data, a runtime that dies."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import anyio
import pytest
import trio
import trio.testing

from streamhouse import (
    ClosedError,
    ConsumedRecord,
    Consumer,
    CorruptDataError,
    LocalObjectStore,
    MetadataUnavailableError,
    ObjectNotFoundError,
    OffsetOutOfRangeError,
    RetryPolicy,
    SQLiteMetadataStore,
    StorageUnavailableError,
    TopicPartition,
    open_consumer,
    open_producer,
)
from streamhouse._codec import read_index
from streamhouse._consumer.cachedir import SUBDIRECTORY
from streamhouse._metadata.protocol import SegmentInfo

from ..faults import FaultyMetadata, FaultyStore, Script
from ..helpers import Stores, poll_until, produce

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(base_delay=0.001, max_delay=0.01)


class Highest(random.Random):
    """Jitter that always draws the cap: delays asserted exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


def offsets_by_partition(records: list[ConsumedRecord]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r.offset)
    return out


async def test_a_transient_error_mid_segment_resumes_at_the_next_offset(
    tmp_path: Path, meta: SQLiteMetadataStore
) -> None:
    """A cached copy corrupt at its second block, then a failed refetch: every offset comes once."""
    script = Script(only={"get"})
    store = FaultyStore(LocalObjectStore(tmp_path / "objects"), script)
    await meta.create_topic("t", 1)
    values = [b"%05d" % i + b"x" * 995 for i in range(3000)]  # three blocks of about 1 MiB
    async with open_producer(storage=store, metadata=meta, linger=0) as producer:
        await producer.send_batch("t", values, partition=0)
    options = {"storage": store, "metadata": meta, "offset_reset": "earliest",
               "cache_dir": tmp_path / "cache", "cache_first_reads": True,
               "retry": FAST}  # fmt: skip
    async with open_consumer("t", **options) as consumer:
        assert len(await poll_until(consumer, 3000)) == 3000  # now the segment is cached
    seg = (await meta.list_segments("t", 0))[0]
    tail = await store.inner.get(seg.object_key, seg.position + seg.length - seg.index_length)
    second = read_index(tail, segment_length=seg.length, name="s").entries[1]
    assert second.first_offset_delta > 0
    (cached,) = (tmp_path / "cache" / SUBDIRECTORY).glob("*.bin")
    data = bytearray(cached.read_bytes())
    data[second.position + 100] ^= 0xFF  # the disk went bad inside the second block
    cached.write_bytes(bytes(data))
    script.fail_next = 1  # and the refetch of the segment fails once
    async with open_consumer("t", **options) as consumer:
        records = await poll_until(consumer, 3000)
        assert await consumer.poll(timeout=0.01) == []
    assert [r.offset for r in records] == list(range(3000))
    assert [r.value for r in records] == values
    assert script.faults["get"] == 1


async def test_an_outage_is_logged_twice_raised_once_a_stall_and_survived(
    tmp_path: Path,
    meta: SQLiteMetadataStore,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Store down: two WARNING lines, one error per stall_timeout naming the partition, no loss."""
    autojump_clock.autojump_threshold = 0.1  # real I/O runs in threads: jump only when idle
    caplog.set_level(logging.WARNING, logger="streamhouse")
    script = Script(only={"get"})
    stores = Stores(FaultyStore(LocalObjectStore(tmp_path / "objects"), script), meta)
    await meta.create_topic("t", 1)
    await produce(stores, "t", 0, 10)
    script.down = True
    retry = RetryPolicy(base_delay=0.5, max_delay=2.0, rng=Highest())
    start = trio.current_time()
    async with stores.consumer("t", offset_reset="earliest", stall_timeout=10.0, retry=retry,
                               metadata_refresh_interval=2.0) as consumer:  # fmt: skip
        with pytest.raises(StorageUnavailableError, match=r"on t\[0\] for 10 s") as caught:
            await consumer.poll(timeout=60)
        # Not before stall_timeout (virtual time may jump a little while a
        # thread works, never back).
        assert 10 <= trio.current_time() - start < 20
        assert isinstance(caught.value.__cause__, StorageUnavailableError)
        assert "scripted: get failed" in str(caught.value)
        assert await consumer.poll(timeout=5) == []  # raised once; the consumer carries on
        with pytest.raises(StorageUnavailableError, match="for 10 s"):
            await consumer.poll(timeout=60)  # and again after another stall_timeout
        script.down = False
        records = await poll_until(consumer, 10)
    assert [r.offset for r in records] == list(range(10))
    lines = [r.getMessage() for r in caplog.records if r.name == "streamhouse.consumer"]
    # The outage: a line when it begins and one when it ends, none per
    # attempt; and a line for each stall raised.
    stalls = [line for line in lines if line.startswith("stalled: ")]
    stall = "stalled: no progress on t[0] for stall_timeout=10.0 s: scripted: get failed"
    assert stalls == [stall, stall]
    outage = [line for line in lines if not line.startswith("stalled: ")]
    assert outage == [
        "reading (t[0] first) failing, retrying with backoff: scripted: get failed",
        outage[1],
    ]
    assert outage[1].startswith("reading (t[0] first) recovered after ")
    assert script.faults["get"] > 10


async def test_a_failing_watermark_refresh_retries_and_speaks(
    tmp_path: Path, meta: SQLiteMetadataStore, autojump_clock: trio.testing.MockClock
) -> None:
    """The refresh failing: no death, MetadataUnavailableError after the stall, then on."""
    autojump_clock.autojump_threshold = 0.1
    script = Script(only={"partition_states"})
    storage = LocalObjectStore(tmp_path / "objects")
    await meta.create_topic("t", 1)
    await produce(Stores(storage, meta), "t", 0, 5)
    retry = RetryPolicy(base_delay=0.5, max_delay=2.0, rng=Highest())
    async with open_consumer("t", storage=storage, metadata=FaultyMetadata(meta, script),
                             offset_reset="earliest", stall_timeout=10.0, retry=retry,
                             metadata_refresh_interval=1.0) as consumer:  # fmt: skip
        assert [r.offset for r in await poll_until(consumer, 5)] == list(range(5))
        script.down = True
        await produce(Stores(storage, meta), "t", 0, 5, start=5)
        with pytest.raises(MetadataUnavailableError, match=r"t\[0\] for 10 s"):
            await consumer.poll(timeout=60)
        script.down = False
        assert [r.offset for r in await poll_until(consumer, 5)] == list(range(5, 10))


async def corrupt_segment(stores: Stores, index: int) -> SegmentInfo:
    """Flip a byte of t[0]'s ``index``-th segment in the object store."""
    seg = (await stores.meta.list_segments("t", 0))[index]
    data = bytearray(await stores.storage.get(seg.object_key))
    data[seg.position + 60] ^= 0xFF
    await stores.storage.put(seg.object_key, bytes(data))
    return seg


async def poll_until_it_raises(consumer: Consumer, got: list[ConsumedRecord]) -> None:
    """Poll, keeping what comes in ``got``, until a poll raises."""
    while True:
        got.extend(await consumer.poll(timeout=5))


async def test_corrupt_data_stops_its_partition_only_and_a_seek_goes_past_it(
    tmp_path: Path, meta: SQLiteMetadataStore
) -> None:
    """A corrupt object raises from poll() naming partition and offsets; others flow; seek skips."""
    storage = LocalObjectStore(tmp_path / "objects")
    stores = Stores(storage, meta)
    await meta.create_topic("t", 2)
    await produce(stores, "t", 0, 5)
    await produce(stores, "t", 0, 5, start=5)
    await produce(stores, "t", 1, 10)
    seg = await corrupt_segment(stores, 0)
    async with stores.consumer("t", offset_reset="earliest", retry=FAST) as consumer:
        got: list[ConsumedRecord] = []
        with anyio.fail_after(30), pytest.raises(CorruptDataError) as caught:
            await poll_until_it_raises(consumer, got)
        assert str(caught.value).endswith("partition t[0], segment of offsets 0..4, next offset 0")
        assert seg.object_key in str(caught.value)
        with anyio.fail_after(30):
            while len(got) < 10:
                got += await consumer.poll(timeout=5)  # raised once: t[1] goes on
        assert offsets_by_partition(got) == {1: list(range(10))}
        await consumer.seek("t", 0, 5)
        rest = await poll_until(consumer, 5)
    assert [(r.partition, r.offset) for r in rest] == [(0, o) for o in range(5, 10)]


async def test_a_corrupt_segment_read_with_others_costs_only_itself(
    tmp_path: Path, meta: SQLiteMetadataStore
) -> None:
    """Small segments are read together (module coalesce); when the second of
    them is corrupt, the first's records are delivered, in order, and the
    error names the second's offsets."""
    storage = LocalObjectStore(tmp_path / "objects")
    stores = Stores(storage, meta)
    await meta.create_topic("t", 1)
    for start in (0, 5, 10):
        await produce(stores, "t", 0, 5, start=start)
    await corrupt_segment(stores, 1)
    async with stores.consumer("t", offset_reset="earliest", retry=FAST) as consumer:
        got: list[ConsumedRecord] = []
        with anyio.fail_after(30), pytest.raises(CorruptDataError) as caught:
            await poll_until_it_raises(consumer, got)
        assert str(caught.value).endswith("partition t[0], segment of offsets 5..9, next offset 5")
        assert [r.offset for r in got] == list(range(5))
        await consumer.seek("t", 0, 10)
        rest = await poll_until(consumer, 5)
    assert [r.offset for r in rest] == list(range(10, 15))


async def test_a_packed_object_missing_under_grouped_reads_stops_only_there(
    tmp_path: Path, meta: SQLiteMetadataStore
) -> None:
    """Objects packing both partitions' segments, read in groups through
    their windows (module coalesce); the middle one is missing from the
    store while the catalogue still names it. Each partition delivers, in
    order, what comes before it, and then poll() raises ObjectNotFoundError
    naming the object, for each partition once."""
    storage = LocalObjectStore(tmp_path / "objects")
    stores = Stores(storage, meta)
    await meta.create_topic("t", 2)
    async with stores.producer(linger=0.05) as producer:
        for flush in range(3):
            keys = [b"k%d" % i for i in range(20)]  # murmur2 spreads them on both
            await producer.send_batch("t", [b"%d" % flush] * 20, keys=keys)
    segments = [await meta.list_segments("t", p) for p in (0, 1)]
    assert [len(s) for s in segments] == [3, 3]
    middle = segments[0][1].object_key
    assert segments[1][1].object_key == middle  # one object packs both
    assert max(s[1].position for s in segments) > 0  # one of them after the other
    await storage.delete(middle)
    got: list[ConsumedRecord] = []
    missing: list[str] = []
    async with stores.consumer("t", offset_reset="earliest", retry=FAST) as consumer:
        with anyio.fail_after(30):
            while len(missing) < 2:
                try:
                    got += await consumer.poll(timeout=5)
                except ObjectNotFoundError as exc:
                    missing.append(str(exc))
    assert all(middle in text for text in missing)
    assert sorted(text.split(" of partition ")[1][:4] for text in missing) == ["t[0]", "t[1]"]
    for p in (0, 1):
        first = segments[p][0]
        assert [r.offset for r in got if r.partition == p] == list(range(first.end_offset))
    assert {r.value for r in got} == {b"0"}


@pytest.mark.parametrize("reset", ["earliest", "latest", "none"])
async def test_a_position_past_the_end_is_out_of_range_and_reset_by_policy(
    stores: Stores, reset: str
) -> None:
    """seek() past the high watermark: offset_reset applies on the next fetch, as in Kafka."""
    await stores.meta.create_topic("t", 2)
    await produce(stores, "t", 0, 10)
    async with stores.consumer(TopicPartition("t", 0), group_id="g", offset_reset="earliest",
                               auto_commit=False) as first:  # fmt: skip
        await poll_until(first, 10)
        await first.commit()
    async with stores.consumer(TopicPartition("t", 0), group_id="g", offset_reset=reset,
                               auto_commit=False) as consumer:  # fmt: skip
        await consumer.seek("t", 0, 1_000_000_000)
        if reset == "earliest":
            records = await poll_until(consumer, 10)
            assert [r.offset for r in records] == list(range(10))
        elif reset == "latest":
            with anyio.fail_after(30):
                while await consumer.position("t", 0) != 10:  # the reset happened
                    assert await consumer.poll(timeout=0.1) == []
            await produce(stores, "t", 0, 3, start=10)
            records = await poll_until(consumer, 3)
            assert [r.offset for r in records] == [10, 11, 12]
        else:
            with anyio.fail_after(30), pytest.raises(OffsetOutOfRangeError, match=r"1000000000"):
                await consumer.poll(timeout=30)
            await consumer.seek("t", 0, 4)
            records = await poll_until(consumer, 6)
            assert [r.offset for r in records] == list(range(4, 10))
        await consumer.commit()
        assert await consumer.committed("t", 0) == records[-1].offset + 1


class BrokenStore(FaultyStore):
    """A store with a bug: every GET raises a foreign error, after setting ``failed``."""

    def __init__(self, inner: LocalObjectStore) -> None:
        super().__init__(inner, Script())
        self.failed = anyio.Event()

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self.failed.set()
        raise RuntimeError("disk on fire")


async def test_a_runtime_that_died_raises_its_error_and_closed_only_after_close(
    tmp_path: Path, meta: SQLiteMetadataStore
) -> None:
    """poll() and position() raise the runtime's real error; ClosedError only after the block."""
    store = BrokenStore(LocalObjectStore(tmp_path / "objects"))
    await meta.create_topic("t", 1)
    await produce(Stores(store.inner, meta), "t", 0, 3)
    async with open_consumer("t", storage=store, metadata=meta,
                             offset_reset="earliest") as consumer:  # fmt: skip
        with pytest.raises(RuntimeError, match="disk on fire"):
            await consumer.poll(timeout=30)
        with pytest.raises(RuntimeError, match="disk on fire"):
            await consumer.position("t", 0)
    # Reported already: leaving the block raised nothing.
    with pytest.raises(ClosedError, match="closed"):
        await consumer.poll(timeout=0)


async def test_a_runtime_error_nobody_saw_is_raised_when_the_block_ends(
    tmp_path: Path, meta: SQLiteMetadataStore
) -> None:
    """A runtime that died while the body never called the consumer fails the block."""
    store = BrokenStore(LocalObjectStore(tmp_path / "objects"))
    await meta.create_topic("t", 1)
    await produce(Stores(store.inner, meta), "t", 0, 3)

    async def body() -> None:
        async with open_consumer("t", storage=store, metadata=meta, offset_reset="earliest"):
            await store.failed.wait()
            await anyio.wait_all_tasks_blocked()

    with pytest.raises(RuntimeError, match="disk on fire"):
        await body()


@pytest.mark.parametrize("error", [ValueError("mine"), KeyboardInterrupt()], ids=["own", "ki"])
async def test_the_bodys_exception_leaves_as_itself_and_commits_what_was_processed(
    stores: Stores, error: BaseException
) -> None:
    """The body's own exception (or Ctrl-C) leaves as itself; what it processed is committed."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 10)

    async def body(consumer: Consumer) -> None:
        assert [r.offset for r in await consumer.poll(timeout=30, max_records=4)] == [0, 1, 2, 3]
        await consumer.poll(timeout=30, max_records=4)  # came back: 0..3 are processed
        raise error

    with pytest.raises(type(error)) as caught:
        async with stores.consumer("t", group_id="g", offset_reset="earliest") as consumer:
            await body(consumer)
    assert caught.value is error
    assert (await stores.meta.fetch_offsets("g"))[TopicPartition("t", 0)].offset == 4


async def test_cancelling_the_block_from_outside_commits_what_was_processed(
    stores: Stores,
) -> None:
    """A cancel scope around the block: no exception leaks, what was processed is committed."""
    await stores.meta.create_topic("t", 1)
    await produce(stores, "t", 0, 10)
    with anyio.CancelScope() as scope:
        async with stores.consumer("t", group_id="g", offset_reset="earliest",
                                   max_poll_records=4) as consumer:  # fmt: skip
            assert len(await consumer.poll(timeout=30)) == 4
            scope.cancel()
            await consumer.poll(timeout=30)  # came back for more: then cancelled
    assert scope.cancelled_caught
    assert (await stores.meta.fetch_offsets("g"))[TopicPartition("t", 0)].offset == 4
    with pytest.raises(ClosedError):
        await consumer.position("t", 0)


def test_one_outage_makes_one_stall_error_naming_every_partition_it_stops() -> None:
    """Troubles due together: the transient ones go in one error; a failure goes on its own."""
    from streamhouse._consumer.partitions import Troubles

    troubles = Troubles(stall_timeout=10.0)
    down = StorageUnavailableError("down")
    troubles.failed(TopicPartition("t", 0), down, now=0.0, transient=True)
    troubles.failed(TopicPartition("t", 1), down, now=0.5, transient=True)
    troubles.failed(None, MetadataUnavailableError("locked"), now=3.0, transient=True)
    assert troubles.take_due(9.9) == []
    assert troubles.next_deadline() == 10.0
    due = troubles.take_due(10.0)
    assert sorted(map(str, (source for source, _, _ in due))) == [
        "None", "TopicPartition(topic='t', partition=0)", "TopicPartition(topic='t', partition=1)",
    ]  # fmt: skip
    assert troubles.next_deadline() == 20.0  # their clocks start again, together
    corrupt = CorruptDataError("k", 7, "bad")
    troubles.failed(TopicPartition("t", 2), corrupt, now=11.0, transient=False)
    assert troubles.next_deadline() == -math.inf
    assert troubles.take_due(11.0) == [(TopicPartition("t", 2), corrupt, False)]
    assert troubles.recovered(TopicPartition("t", 0))
    assert troubles.transient == 2
