"""Shared reads: the readers of many partitions get a packed object with one GET."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from streamhouse import LocalObjectStore, ObjectStore, TopicPartition
from streamhouse._consumer.cache import CacheClient, run_cache
from streamhouse._consumer.spans import WINDOW_BYTES, Windows

from ..faults import CountingStore
from ..helpers import FlakyStore, Stores, poll_until

pytestmark = pytest.mark.anyio

PARTITIONS = 40
FLUSHES = 3


async def _write_flushes(stores: Stores, topic: str) -> int:
    """FLUSHES flushes of keyed records over every partition; the objects written."""
    await stores.meta.create_topic(topic, PARTITIONS)
    async with stores.producer(linger=0.01) as producer:
        for flush in range(FLUSHES):
            keys = [b"k%d" % i for i in range(400)]
            await producer.send_batch(topic, [b"v%d-%d" % (flush, i) for i in range(400)],
                                      keys=keys)  # fmt: skip
    keys = set()
    for p in range(PARTITIONS):
        keys |= {s.object_key for s in await stores.meta.list_segments(topic, p, 0, limit=100)}
    return len(keys)


@pytest.mark.parametrize("cache_bytes", [1 << 30, 0], ids=["disk-cache", "no-disk-cache"])
async def test_readers_of_many_partitions_share_one_get_per_packed_object(
    stores: Stores, tmp_path: Path, cache_bytes: int
) -> None:
    """A cold consumer of 40 partitions written in 3 flushes makes 3 GETs, not 120."""
    objects = await _write_flushes(stores, "t")
    assert objects == FLUSHES
    counting = CountingStore(stores.storage)
    async with Stores(counting, stores.meta).consumer(
        "t", offset_reset="earliest", cache_dir=tmp_path / "cache", cache_size_bytes=cache_bytes
    ) as consumer:
        records = await poll_until(consumer, FLUSHES * 400)
        stats = await consumer.cache_stats()
    assert sorted(r.value for r in records) == sorted(
        b"v%d-%d" % (f, i) for f in range(FLUSHES) for i in range(400)
    )
    assert counting.gets == objects
    assert set(counting.ranges.values()) == {1}  # one GET for each object
    assert stats.gets == objects
    assert stats.misses >= PARTITIONS  # many ranges, served from those few GETs


async def test_ranges_of_a_shared_object_are_not_cached_but_fetched_with_one_get_again(
    stores: Stores, tmp_path: Path
) -> None:
    """A restart reads each packed object again with one GET; nothing was written per range."""
    await _write_flushes(stores, "t")
    counting = CountingStore(stores.storage)
    for _ in range(2):
        async with Stores(counting, stores.meta).consumer(
            "t", offset_reset="earliest", cache_dir=tmp_path / "cache"
        ) as consumer:
            await poll_until(consumer, FLUSHES * 400)
            stats = await consumer.cache_stats()
        assert stats.files == 0
    assert counting.gets == 2 * FLUSHES


async def test_an_object_of_one_partition_is_cached_whole(stores: Stores, tmp_path: Path) -> None:
    """A single-partition object is read with one GET, cached (with
    cache_first_reads), and read again from disk."""
    await stores.meta.create_topic("one", 1)
    async with stores.producer(linger=0.01) as producer:
        for flush in range(FLUSHES):
            await producer.send_batch("one", [b"v%d-%d" % (flush, i) for i in range(300)])
    counting = CountingStore(stores.storage)
    for _ in range(2):
        async with Stores(counting, stores.meta).consumer(
            "one", offset_reset="earliest", cache_dir=tmp_path / "cache", cache_first_reads=True
        ) as consumer:
            await poll_until(consumer, FLUSHES * 300)
            stats = await consumer.cache_stats()
        assert stats.files == FLUSHES
    assert counting.gets == FLUSHES


async def test_windows_are_held_up_to_their_byte_bound_oldest_out_first() -> None:
    """Windows past the bound go least recently used first; a window its asks took whole, never."""
    windows = Windows[object](held_bytes=250)
    windows.keep("one", 0, b"a" * 100, [(0, 100)])  # one segment, taken whole: nothing to share
    assert windows.slice("one", 0, 10) is None
    for key in ("x", "y"):
        windows.keep(key, 0, key.encode() * 100, [(0, 10)])
    assert windows.slice("x", 10, 20) == b"x" * 10  # x is now the most recently used
    windows.keep("z", 0, b"z" * 100, [(0, 10)])  # 300 bytes: y goes
    assert windows.slice("y", 0, 1) is None
    assert windows.slice("x", 95, 100) == b"x" * 5
    assert windows.slice("z", 0, 101) is None  # past the window's end: not from it
    windows.drop("x")
    assert windows.slice("x", 0, 1) is None


async def test_a_window_is_the_planned_span_of_an_object_when_it_holds_the_range() -> None:
    """Plans of one object join; a range outside them, or a span larger than a
    window, gets the window from the object's start; starting a fetch spends the
    plan, and after a span of an object, its next window is from its start."""
    windows = Windows[object]()
    windows.plan({"k": (100, 200)})
    windows.plan({"k": (300, 400), "m": (0, WINDOW_BYTES + 1)})
    assert windows.window_for("k", 150, 350) == (100, 400)
    assert windows.window_for("k", 50, 150) == (0, WINDOW_BYTES)  # starts before the plan
    assert windows.window_for("m", 10, 20) == (0, WINDOW_BYTES)  # the span is too large
    assert windows.window_for("m", WINDOW_BYTES, WINDOW_BYTES + 1) is None  # fetched alone
    windows.fetching("k", (100, 400))
    assert windows.window_for("k", 150, 350) == (0, WINDOW_BYTES)  # the plan is spent
    windows.plan({"k": (150, 350), "n": (10, 20)})
    assert windows.window_for("k", 150, 350) == (0, WINDOW_BYTES)  # a span of k came before
    windows.fetching("n", (0, WINDOW_BYTES))  # not a span: the next may be one
    windows.plan({"n": (10, 20)})
    assert windows.window_for("n", 10, 20) == (10, 20)
    windows.keep("k", 100, bytes(range(100, 200)) * 3, [(100, 110)])
    assert windows.slice("k", 150, 152) == bytes([150, 151])
    assert windows.slice("k", 99, 101) is None  # starts before the window held
    assert windows.slice("k", 399, 401) is None  # ends past it


async def test_a_consumer_of_some_partitions_downloads_about_their_share(
    stores: Stores, tmp_path: Path
) -> None:
    """Reading the first fifth of the partitions packed in each object takes
    one GET an object and about a fifth of its bytes, not all of them."""
    await _write_flushes(stores, "t")
    measured = _BytesStore(stores.storage)
    share = [TopicPartition("t", p) for p in range(PARTITIONS // 5)]
    segments = [
        s for tp in share for s in await stores.meta.list_segments("t", tp.partition, 0, 100)
    ]
    async with Stores(measured, stores.meta).consumer(share, offset_reset="earliest") as consumer:
        records = await poll_until(consumer, sum(s.record_count for s in segments))
    assert {r.partition for r in records} == {tp.partition for tp in share}
    objects = 0
    for key in {s.object_key for s in segments}:
        objects += len(await stores.storage.get(key))
    assert measured.gets == FLUSHES  # one GET an object
    assert measured.bytes < objects / 3, (measured.bytes, objects)


async def test_a_range_that_joined_a_window_not_holding_it_is_fetched_afresh(
    tmp_path: Path,
) -> None:
    """A range asked while a planned window of its object is under way, but
    outside it, waits for it, then gets its own window: right bytes, two GETs."""
    store = _GatedStore(LocalObjectStore(tmp_path / "objects"))
    body = bytes(range(256)) * 4
    await store.put("k", body)
    async with anyio.create_task_group() as tg:
        cache: CacheClient = await tg.start(run_cache, store, None, 0)
        await cache.plan({"k": (100, 200)})
        answers: dict[str, list[bytes]] = {}

        async def ask(name: str, ranges: list[tuple[str, int, int]]) -> None:
            answers[name] = await cache.get_many(ranges)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as asks:
                asks.start_soon(ask, "planned", [("k", 100, 150)])
                await store.started.wait()  # the planned window is under way
                asks.start_soon(ask, "outside", [("k", 600, 700)])
                await anyio.wait_all_tasks_blocked()
                assert (await cache.stats()).joined == 1  # it waits for that window
                store.gate.set()
        tg.cancel_scope.cancel()
    assert answers == {"planned": [body[100:150]], "outside": [body[600:700]]}
    assert store.ranges == [(100, 200), (0, WINDOW_BYTES)]


async def test_a_planned_window_cut_short_by_the_object_end_is_served_as_it_came(
    tmp_path: Path,
) -> None:
    """A range inside the planned span but past the object's end gets what
    there is (its checksums then fail), rather than a fetch again and again."""
    store = _GatedStore(LocalObjectStore(tmp_path / "objects"))
    store.gate.set()
    await store.put("k", b"x" * 500)
    async with anyio.create_task_group() as tg:
        cache: CacheClient = await tg.start(run_cache, store, None, 0)
        await cache.plan({"k": (400, 600)})
        with anyio.fail_after(10):
            assert await cache.get_many([("k", 400, 600)]) == [b"x" * 100]
        tg.cancel_scope.cancel()
    assert store.ranges == [(400, 600)]


class _BytesStore(FlakyStore):
    """Counts the GETs and the bytes they bring."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.gets = 0
        self.bytes = 0
        self.got: list[tuple[str, int, int | None]] = []

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        data = await self.inner.get(key, start, end)
        self.gets += 1
        self.bytes += len(data)
        self.got.append((key, start, end))
        return data


class _GatedStore(FlakyStore):
    """Holds every GET until ``gate`` is set; says when the first began."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.started = anyio.Event()
        self.gate = anyio.Event()
        self.ranges: list[tuple[int, int | None]] = []

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self.ranges.append((start, end))
        self.started.set()
        await self.gate.wait()
        return await self.inner.get(key, start, end)
