"""Shared reads: the readers of many partitions get a packed object with one GET."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamhouse._consumer.spans import Windows

from ..faults import CountingStore
from ..helpers import Stores, poll_until

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
    windows = Windows(held_bytes=250)
    windows.keep("one", b"a" * 100, [(0, 100)])  # one segment, taken whole: nothing to share
    assert windows.slice("one", 0, 10) is None
    for key in ("x", "y"):
        windows.keep(key, key.encode() * 100, [(0, 10)])
    assert windows.slice("x", 10, 20) == b"x" * 10  # x is now the most recently used
    windows.keep("z", b"z" * 100, [(0, 10)])  # 300 bytes: y goes
    assert windows.slice("y", 0, 1) is None
    assert windows.slice("x", 95, 100) == b"x" * 5
    assert windows.slice("z", 0, 101) is None  # past the window's end: not from it
    windows.drop("x")
    assert windows.slice("x", 0, 1) is None
