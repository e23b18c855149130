"""Maintenance figures: GETs per GiB before and after merging, rewrite throughput.

    python scripts/bench.py --maintenance [--flushes 1000] [--json]

Against a private SeaweedFS and SQLite, one run:

- merging: a producer writes ``--flushes`` small flushes (``--flush-records``
  records each: 16-byte keys, 100-byte values, lz4) to one partition; a cold
  consumer (empty disk cache) reads them all through ``poll_batches()``,
  counting the GETs it makes and the bytes they bring; ``Admin.maintain()``
  merges them (grace high, so this pass only rewrites), then deletes the old
  objects (a second pass, grace 0); a new cold consumer reads them again.
  GETs per GiB and the cold read rate, before and after; the merge pass in
  MB/s of segments rewritten (read, decoded, re-encoded, written, swapped
  in), and the delete pass in objects/s;
- compaction: the same flushes to a compacted topic whose keys repeat (one
  key in ten survives); the pass in MB/s of segments rewritten.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (puts tests/ on the path)
import attrs
import trio

from streamhouse import (
    Admin,
    MetadataStore,
    ObjectStore,
    S3ObjectStore,
    SQLiteMetadataStore,
    open_consumer,
    open_producer,
)
from streamhouse._storage.protocol import ObjectInfo
from tests.servers.seaweed import running_seaweedfs

GIB = 2**30
MB = 1e6
# A pass rewrites segments older than its grace and deletes objects
# released longer ago than that: with segments a grace old, one pass only
# rewrites (if it takes less than the grace), the next, a grace later, only
# deletes.
_GRACE = 10.0


class Counting:
    """An ObjectStore that counts GETs and the bytes they return."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.gets = 0
        self.bytes = 0

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        data = await self.inner.get(key, start, end)
        self.gets += 1
        self.bytes += len(data)
        return data

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        await self.inner.put(key, data, if_absent=if_absent)

    async def head(self, key: str) -> ObjectInfo:
        return await self.inner.head(key)

    def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.list(prefix, start_after=start_after)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        """The inner store is closed by its owner."""


@attrs.frozen
class ColdRead:
    gets: int
    bytes: int
    segments: int
    seconds: float

    @property
    def gets_per_gib(self) -> float:
        return self.gets / (self.bytes / GIB)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / MB


async def flushes(
    store: ObjectStore, meta: MetadataStore, topic: str, count: int, size: int, keys: int
) -> None:
    """``count`` flushes of ``size`` records each, one object each."""
    rng = random.Random(3)
    async with open_producer(storage=store, metadata=meta, linger=0) as producer:
        for _ in range(count):
            await producer.send_batch(
                topic,
                [rng.randbytes(50).hex().encode() for _ in range(size)],
                keys=[b"%016d" % rng.randrange(keys) for _ in range(size)],
                partition=0,
            )


async def cold_read(store: ObjectStore, meta: MetadataStore, topic: str, root: Path) -> ColdRead:
    """Read the whole partition with an empty cache; count GETs and bytes."""
    counting = Counting(store)
    (state,) = await meta.partition_states([topic])
    segments = len(await meta.list_segments(topic, 0, 0, limit=1_000_000))
    cache = root / f"cold-{time.monotonic_ns()}"
    started = time.perf_counter()
    async with open_consumer(
        topic, storage=counting, metadata=meta, offset_reset="earliest", cache_dir=cache
    ) as consumer:
        position = state.log_start_offset
        while position < state.high_watermark:
            for batch in await consumer.poll_batches(timeout=30):
                position = batch.next_offset
    seconds = time.perf_counter() - started
    shutil.rmtree(cache, ignore_errors=True)
    return ColdRead(counting.gets, counting.bytes, segments, seconds)


async def maintenance(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the module docstring, in one run."""
    with tempfile.TemporaryDirectory() as tmp, running_seaweedfs(Path(tmp) / "s3") as server:
        root = Path(tmp)
        store = S3ObjectStore(
            bucket="bench", prefix="maint", endpoint=server.endpoint, region=server.region,
            access_key=server.access_key, secret_key=server.secret_key,
        )  # fmt: skip
        await store.create_bucket()
        meta = SQLiteMetadataStore(root / "meta.db")
        try:
            return await _figures(store, meta, root, args)
        finally:
            await meta.aclose()
            await store.aclose()


async def _figures(
    store: S3ObjectStore, meta: MetadataStore, root: Path, args: argparse.Namespace
) -> dict[str, Any]:
    admin = Admin(store, meta)
    await admin.create_topic("merged")
    await flushes(store, meta, "merged", args.flushes, args.flush_records, 1 << 40)
    before = await cold_read(store, meta, "merged", root)
    await trio.sleep(_GRACE)
    started = time.perf_counter()
    merge = await admin.maintain(grace=_GRACE)
    merge_s = time.perf_counter() - started
    await trio.sleep(_GRACE)
    started = time.perf_counter()
    sweep = await admin.maintain(grace=_GRACE)
    sweep_s = time.perf_counter() - started
    after = await cold_read(store, meta, "merged", root)

    await admin.create_topic("compacted", cleanup_policy="compact")
    await flushes(store, meta, "compacted", args.flushes, args.flush_records,
                  args.flushes * args.flush_records // 10)  # fmt: skip
    await trio.sleep(_GRACE)
    started = time.perf_counter()
    compact = await admin.maintain(grace=_GRACE)
    compact_s = time.perf_counter() - started
    return {
        "flushes": args.flushes,
        "flush_records": args.flush_records,
        "before": attrs.asdict(before) | {"gets_per_gib": before.gets_per_gib,
                                           "mb_per_s": before.mb_per_s},
        "after": attrs.asdict(after) | {"gets_per_gib": after.gets_per_gib,
                                         "mb_per_s": after.mb_per_s},
        "merge_rewritten_mb": merge.bytes_rewritten / MB,
        "merge_seconds": merge_s,
        "merge_mb_per_s": merge.bytes_rewritten / merge_s / MB,
        "merge_objects_written": merge.objects_written,
        "sweep_objects_deleted": sweep.objects_deleted,
        "sweep_seconds": sweep_s,
        "compact_rewritten_mb": compact.bytes_rewritten / MB,
        "compact_records_removed": compact.records_removed,
        "compact_objects_written": compact.objects_written,
        "compact_seconds": compact_s,
        "compact_mb_per_s": compact.bytes_rewritten / compact_s / MB,
    }  # fmt: skip


def print_maintenance(r: dict[str, Any]) -> None:
    b, a = r["before"], r["after"]
    print(
        f"{r['flushes']:,} flushes of {r['flush_records']:,} records (16-byte keys, 100-byte "
        "values, lz4), one partition, SeaweedFS on loopback, SQLite\n"
    )
    print("| measure | before merging | after merging |")
    print("|---|---|---|")
    print(f"| segments (objects) | {b['segments']:,} | {a['segments']:,} |")
    print(f"| cold consumer GETs | {b['gets']:,} | {a['gets']:,} |")
    print(f"| GETs per GiB read | {b['gets_per_gib']:,.0f} | {a['gets_per_gib']:,.0f} |")
    print(f"| cold `poll_batches()` | {b['mb_per_s']:.1f} MB/s | {a['mb_per_s']:.1f} MB/s |")
    print()
    print("| maintenance pass | rewritten | time | rate |")
    print("|---|---|---|---|")
    print(
        f"| merge ({r['merge_objects_written']} objects written) | "
        f"{r['merge_rewritten_mb']:.1f} MB | {r['merge_seconds']:.2f} s | "
        f"{r['merge_mb_per_s']:.1f} MB/s |"
    )
    print(
        f"| delete the old objects | {r['sweep_objects_deleted']:,} objects | "
        f"{r['sweep_seconds']:.2f} s | "
        f"{r['sweep_objects_deleted'] / r['sweep_seconds']:,.0f} objects/s |"
    )
    print(
        f"| compact ({r['compact_records_removed']:,} records removed, "
        f"{r['compact_objects_written']} objects written) | "
        f"{r['compact_rewritten_mb']:.1f} MB | {r['compact_seconds']:.2f} s | "
        f"{r['compact_mb_per_s']:.1f} MB/s |"
    )
