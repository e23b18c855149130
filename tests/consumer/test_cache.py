"""The cache actor and the reading it serves: budget, LRU, single flight, restarts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import anyio
import pytest

from streamhouse import (
    LocalObjectStore,
    ObjectStore,
    SQLiteMetadataStore,
    TopicPartition,
    open_consumer,
    open_producer,
)
from streamhouse._consumer import coalesce, reader
from streamhouse._consumer.cache import CacheClient, run_cache
from streamhouse._consumer.cachedir import SUBDIRECTORY, open_cache_directory

from ..helpers import FlakyStore, poll_until

pytestmark = pytest.mark.anyio


class CountingStore(FlakyStore):
    """Records every ranged GET; optionally holds them until released."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.gets: list[tuple[str, int, int | None]] = []
        self.gate: anyio.Event | None = None

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self.gets.append((key, start, end))
        if self.gate is not None:
            await self.gate.wait()
        return await self.inner.get(key, start, end)


@contextlib.asynccontextmanager
async def cache_on(store: ObjectStore, directory: Path, budget: int) -> AsyncIterator[CacheClient]:
    """A cache actor on ``directory`` (its files in the cache's subdirectory)."""
    taken = open_cache_directory(directory)
    try:
        async with anyio.create_task_group() as tg:
            client: CacheClient = await tg.start(run_cache, store, taken, budget)
            yield client
            tg.cancel_scope.cancel()
    finally:
        taken.close()


async def test_the_budget_holds_and_the_least_recently_used_goes_first(tmp_path: Path) -> None:
    """The cache never holds more than its budget; the LRU range is evicted first."""
    store = CountingStore(LocalObjectStore(tmp_path / "objects"))
    for name in "abcd":
        await store.put(name, name.encode() * 400)
    async with cache_on(store, tmp_path / "cache", budget=1000) as cache:
        for name in "ab":
            assert await cache.get(name, 0, 400) == name.encode() * 400
        assert await cache.get("a", 0, 400) == b"a" * 400  # a is now the most recent
        await cache.get("c", 0, 400)  # must evict b, not a
        stats = await cache.stats()
        assert stats.bytes <= 1000
        assert (stats.files, stats.evictions) == (2, 1)
        before = len(store.gets)
        await cache.get("a", 0, 400)
        assert len(store.gets) == before  # a stayed
        await cache.get("b", 0, 400)
        assert len(store.gets) == before + 1  # b had gone
        await cache.get("d", 0, 2000)  # larger than the budget: served, not cached
        assert (await cache.stats()).bytes <= 1000
    # Closed: every write has ended, so the files can be counted.
    disk = sum(f.stat().st_size for f in (tmp_path / "cache" / SUBDIRECTORY).glob("*.bin"))
    assert disk <= 1000


async def test_concurrent_misses_of_one_range_make_one_get(tmp_path: Path) -> None:
    """Two readers missing the same range at once cause a single GET."""
    store = CountingStore(LocalObjectStore(tmp_path / "objects"))
    await store.put("obj", b"x" * 100)
    store.gate = anyio.Event()
    results: list[bytes] = []
    async with cache_on(store, tmp_path / "cache", budget=10_000) as cache:
        async with anyio.create_task_group() as nursery:
            for _ in range(2):
                nursery.start_soon(lambda: _append(results, cache.get("obj", 10, 60)))
            await anyio.wait_all_tasks_blocked()
            store.gate.set()
        assert results == [b"x" * 50, b"x" * 50]
        assert len(store.gets) == 1
        assert (await cache.stats()).joined == 1


async def _append(results: list[bytes], awaitable: Awaitable[bytes]) -> None:
    results.append(await awaitable)


async def test_a_restart_counts_its_files_and_drops_only_its_own_debris(tmp_path: Path) -> None:
    """On restart, complete files count; its partial and wrong files go; nothing else is touched."""
    store = LocalObjectStore(tmp_path / "objects")
    await store.put("obj", b"y" * 300)
    directory = tmp_path / "cache"
    async with cache_on(store, directory, budget=1000) as cache:
        await cache.get("obj", 0, 300)
        await cache.get("obj", 0, 100)
    ours = directory / SUBDIRECTORY
    before = sorted(ours.iterdir())
    good = sorted(ours.glob("*.bin"))
    partial = ours / f".tmp-{good[0].stem}-7"  # a write a crash cut short
    partial.write_bytes(b"half")
    wrong = good[0].with_name(good[0].name.replace("-0-", "-0-9"))
    wrong.write_bytes(b"short")  # its name says 9xx bytes
    strangers = [ours / "notes.txt", ours / ".tmp-theirs", directory / "report.docx"]
    for path in strangers:
        path.write_text("not the cache's")
    async with cache_on(store, directory, budget=1000) as cache:
        stats = await cache.stats()
        assert (stats.files, stats.bytes) == (2, 400)
        assert sorted(ours.iterdir()) == sorted(before + strangers[:2])
        assert all(path.read_text() == "not the cache's" for path in strangers)
        assert await cache.get("obj", 0, 300) == b"y" * 300
        assert (await cache.stats()).hits == 1


async def test_a_start_inside_a_large_segment_fetches_the_index_and_needed_blocks(
    tmp_path: Path,
) -> None:
    """Seeking into a segment fetches its index and the blocks from there, not the rest."""
    store = CountingStore(LocalObjectStore(tmp_path / "objects"))
    meta = SQLiteMetadataStore(tmp_path / "m.db")
    await meta.create_topic("t", 1)
    async with open_producer(storage=store, metadata=meta, linger=0) as producer:
        await producer.send_batch("t", [bytes([i % 256]) * 200 for i in range(30_000)])
    seg = (await meta.list_segments("t", 0))[0]
    store.gets.clear()
    async with open_consumer(TopicPartition("t", 0), storage=store, metadata=meta,
                             offset_reset="latest") as consumer:  # fmt: skip
        await consumer.seek("t", 0, 29_990)
        records = []
        with anyio.fail_after(10):
            while len(records) < 10:
                records += await consumer.poll(timeout=5)
    assert [r.offset for r in records] == list(range(29_990, 30_000))
    fetched = sum((end or 0) - start for _, start, end in store.gets)
    assert len(store.gets) == 2  # index + footer, then the last block
    assert fetched < seg.length / 3
    await meta.aclose()


async def segments_in(
    tmp_path: Path, count: int, records: int
) -> tuple[CountingStore, SQLiteMetadataStore]:
    """Topic "t" of one partition holding ``count`` segments of ``records`` records each.

    The store's GET log starts empty.
    """
    store = CountingStore(LocalObjectStore(tmp_path / "objects"))
    meta = SQLiteMetadataStore(tmp_path / "m.db")
    await meta.create_topic("t", 1)
    async with open_producer(storage=store, metadata=meta, linger=0) as producer:
        for i in range(count):
            await producer.send_batch("t", [b"%d" % i] * records)
    store.gets.clear()
    return store, meta


async def test_sequential_reads_prefetch_the_next_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each segment is fetched once, and every one after the first was asked
    for ahead (segments too large to be read together, module coalesce)."""
    monkeypatch.setattr(coalesce, "GROUP_BYTES", 0)
    store, meta = await segments_in(tmp_path, 5, 100)
    async with open_consumer("t", storage=store, metadata=meta, offset_reset="earliest",
                             cache_first_reads=True) as c:  # fmt: skip
        records = []
        with anyio.fail_after(10):
            while len(records) < 500:
                records += await c.poll(timeout=5)
        stats = await c.cache_stats()
    assert [r.offset for r in records] == list(range(500))
    assert stats.gets == 5
    assert stats.hits + stats.joined >= 3
    await meta.aclose()


async def test_a_first_read_in_order_is_not_written_to_disk_a_second_is(tmp_path: Path) -> None:
    """By default a segment read in order is written to the disk cache when
    it is read a second time (here: after a seek back), and a third read
    comes from disk; with cache_first_reads, the first read writes it."""
    store, meta = await segments_in(tmp_path, 5, 100)
    cache_dir = tmp_path / "cache"
    async with open_consumer(TopicPartition("t", 0), storage=store, metadata=meta,
                             cache_dir=cache_dir, offset_reset="earliest") as c:  # fmt: skip
        files = []
        for _ in range(3):
            with anyio.fail_after(10):
                assert [r.offset for r in await poll_until(c, 500)] == list(range(500))
            files.append((await c.cache_stats()).files)
            await c.seek_to_beginning()
        stats = await c.cache_stats()
    assert files == [0, 5, 5]
    assert (len(store.gets), stats.hits) == (10, 5)  # the third read: from disk
    store.gets.clear()
    async with open_consumer(TopicPartition("t", 0), storage=store, metadata=meta,
                             cache_dir=tmp_path / "other", offset_reset="earliest",
                             cache_first_reads=True) as c:  # fmt: skip
        await poll_until(c, 500)
        assert ((await c.cache_stats()).files, len(store.gets)) == (5, 5)
    await meta.aclose()


async def test_small_segments_are_read_together_as_one_batch(tmp_path: Path) -> None:
    """Small segments of a partition are fetched in one ask (every GET under
    way at once, each object once) and arrive as one batch, in order."""
    store, meta = await segments_in(tmp_path, 5, 100)
    async with open_consumer("t", storage=store, metadata=meta, offset_reset="earliest") as c:
        with anyio.fail_after(10):
            batches = await c.poll_batches(timeout=5)
        stats = await c.cache_stats()
    assert [len(b) for b in batches] == [500]
    assert list(batches[0].offsets) == list(range(500))
    assert [v for b in batches for v in b.values] == [b"%d" % (i // 100) for i in range(500)]
    assert stats.gets == 5 == len(store.gets)
    await meta.aclose()


@pytest.mark.parametrize("together", [1, 3], ids=["alone", "in-threes"])
async def test_read_ahead_is_bounded_however_large_the_backlog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, together: int
) -> None:
    """At every GET, the reader is a bounded number of segments ahead of the
    application: read alone, or ``together`` in one batch (module coalesce)."""
    store, meta = await segments_in(tmp_path, 30, 50)
    segments = await meta.list_segments("t", 0)
    segment_of = {s.object_key: i for i, s in enumerate(segments)}
    lengths = [s.length for s in segments]
    monkeypatch.setattr(coalesce, "GROUP_BYTES", together * max(lengths) if together > 1 else 0)
    per_batch = max(1, coalesce.GROUP_BYTES // min(lengths))
    handed = 0  # records the application has
    ahead: list[int] = []  # at each GET: its segment - the application's segment
    inner_get = store.get

    async def get(key: str, start: int = 0, end: int | None = None) -> bytes:
        ahead.append(segment_of[key] - handed // 50)
        return await inner_get(key, start, end)

    store.get = get
    async with open_consumer(TopicPartition("t", 0), storage=store, metadata=meta,
                             offset_reset="earliest", prefetch_batches=2) as consumer:  # fmt: skip
        with anyio.fail_after(30):
            while handed < 1500:
                handed += len(await consumer.poll(timeout=5, max_records=7))
    # Batches the facade holds and those pending (prefetch_batches each), the
    # one waiting for a credit, and the segments fetched ahead of it.
    assert max(ahead) <= (2 * 2 + 1) * per_batch + reader.SEGMENTS_AHEAD
    assert len(ahead) == 30  # and each segment fetched once
    await meta.aclose()


async def test_a_failing_disk_costs_the_cache_not_the_read(tmp_path: Path) -> None:
    """When a cache file cannot be written, reads still succeed, from the store."""
    store = CountingStore(LocalObjectStore(tmp_path / "objects"))
    await store.put("obj", b"y" * 300)
    async with cache_on(store, tmp_path / "cache", budget=10_000) as cache:
        # Every write now fails: the directory is gone from under the cache.
        (tmp_path / "cache" / SUBDIRECTORY).rename(tmp_path / "elsewhere")
        assert await cache.get("obj", 0, 300) == b"y" * 300
        with anyio.fail_after(10):
            while (stats := await cache.stats()).files:
                await anyio.wait_all_tasks_blocked()
        assert (stats.files, stats.bytes) == (0, 0)
        assert await cache.get("obj", 0, 300) == b"y" * 300
        assert len(store.gets) == 2  # not cached, so fetched again


async def test_a_range_asked_for_again_at_once_is_not_fetched_again(tmp_path: Path) -> None:
    """Asked again at once (its file being written, or written), a range makes no GET."""
    store = CountingStore(LocalObjectStore(tmp_path / "objects"))
    await store.put("obj", b"z" * 300)
    async with cache_on(store, tmp_path / "cache", budget=10_000) as cache:
        first, second = await cache.get("obj", 0, 300), await cache.get("obj", 0, 300)
        assert first == second == b"z" * 300
        assert len(store.gets) == 1
        stats = await cache.stats()
        assert (stats.hits, stats.misses, stats.files, stats.bytes) == (1, 1, 1, 300)


async def test_without_a_cache_budget_each_segment_is_fetched_once(tmp_path: Path) -> None:
    """Read-ahead that the budget cannot cache is kept in memory, not fetched twice."""
    store, meta = await segments_in(tmp_path, 6, 100)
    async with open_consumer("t", storage=store, metadata=meta, offset_reset="earliest",
                             cache_size_bytes=0) as consumer:  # fmt: skip
        seen = 0
        with anyio.fail_after(30):
            while seen < 600:
                seen += len(await consumer.poll(timeout=5))
        stats = await consumer.cache_stats()
    assert len(store.gets) == 6
    assert (stats.files, stats.bytes) == (0, 0)
    await meta.aclose()


async def test_a_refresh_never_serves_bytes_read_ahead_from_the_bad_file(tmp_path: Path) -> None:
    """After a prefetch read a corrupted cache file, a refresh fetches from the store.

    Whether the read ahead has ended when the refresh comes is up to the
    threads, so the test goes round several times to meet both cases.
    """
    store = CountingStore(LocalObjectStore(tmp_path / "objects"))
    await store.put("obj", b"g" * 300)
    for _ in range(10):
        async with cache_on(store, tmp_path / "cache", budget=10_000) as cache:
            assert await cache.get("obj", 0, 300) == b"g" * 300
        (cached,) = (tmp_path / "cache" / SUBDIRECTORY).glob("*.bin")
        cached.write_bytes(b"X" * 300)  # the disk went bad
        async with cache_on(store, tmp_path / "cache", budget=10_000) as cache:
            await cache.prefetch("obj", 0, 300)  # reads the bad file ahead
            for _ in range(3):
                await anyio.wait_all_tasks_blocked()
            assert await cache.get("obj", 0, 300, refresh=True) == b"g" * 300
            assert await cache.get("obj", 0, 300) == b"g" * 300
