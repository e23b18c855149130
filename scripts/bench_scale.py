"""Scale with partitions, and count the requests (issue 17), for scripts/bench.py.

    python scripts/bench.py --json         # the targets, these figures among them
    python scripts/bench_scale.py --json   # these figures alone

What it measures, in one run, on the same keyed records (16-byte keys,
100-byte values, lz4) written by one producer in ``--scale-flushes``
flushes, once to a topic of 4 partitions and once to one of 1,000:

- requests: every PUT and GET the producer and the consumers make, counted
  by a wrapper around the object store (``tests.faults.CountingStore``), per
  GiB stored; beside the origin's layout, one object per partition per
  flush (a PUT per segment written, a GET per segment read), from the
  catalogue;
- consume throughput at 1,000 partitions against 4 (records/s, cold,
  ``poll_batches()``), on a local directory and on SeaweedFS;
- the CPU an idle, caught-up consumer of 1,000 partitions uses, in a
  process of its own (``resource.getrusage`` over ``--idle-seconds``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (puts tests/ on the path)
import attrs
import trio

from streamhouse import (
    LocalObjectStore,
    MetadataStore,
    ObjectStore,
    S3ObjectStore,
    SQLiteMetadataStore,
    open_consumer,
    open_producer,
)
from tests.faults import CountingStore
from tests.servers.seaweed import S3Server, running_seaweedfs

GIB = 1 << 30
PARTITIONS = (4, 1000)


def make_records(count: int, seed: int = 17) -> tuple[list[bytes], list[bytes]]:
    import random

    rng = random.Random(seed)
    keys = [rng.randbytes(8).hex().encode() for _ in range(count)]
    values = [rng.randbytes(50).hex().encode() for _ in range(count)]
    return keys, values


async def produce_flushes(
    store: ObjectStore, meta: MetadataStore, topic: str, partitions: int, flushes: int,
    keys: list[bytes], values: list[bytes],
) -> None:  # fmt: skip
    """Write the records in ``flushes`` flushes, keyed (murmur2 spreads them)."""
    await meta.create_topic(topic, partitions)
    step = math.ceil(len(values) / flushes)
    # One send_batch a flush: its records join the open batch at once, and
    # linger seals it (one object, one PUT) however many partitions it spans.
    async with open_producer(storage=store, metadata=meta, linger=0.01,
                             max_batch_bytes=1 << 27) as producer:  # fmt: skip
        for i in range(0, len(values), step):
            await producer.send_batch(topic, values[i : i + step], keys=keys[i : i + step])


async def cold_consume(
    store: ObjectStore, meta: MetadataStore, topic: str, count: int, cache: Path | None
) -> float:
    """Seconds a fresh consumer takes to read ``count`` records with poll_batches()."""
    options: dict[str, Any] = {"cache_dir": cache} if cache is not None else {}
    budget = 1 << 40 if cache is not None else 0
    async with open_consumer(topic, storage=store, metadata=meta, offset_reset="earliest",
                             cache_size_bytes=budget, **options) as consumer:  # fmt: skip
        start = time.perf_counter()
        seen = 0
        while seen < count:
            got = sum(len(b.values) for b in await consumer.poll_batches(timeout=30))
            if not got:
                raise RuntimeError(f"stalled at {seen} of {count}")
            seen += got
        return time.perf_counter() - start


# -- the idle consumer, in a process of its own -------------------------------------------


@attrs.frozen
class IdleJob:
    objects: Path
    meta_path: Path
    topic: str
    records: int
    seconds: float


def idle_cpu_percent(job: IdleJob) -> float:
    """Run an idle consumer in a fresh (spawned) process; its CPU, % of one core."""
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
    ) as pool:
        return pool.submit(_idle_in_child, job).result(timeout=600)


def _idle_in_child(job: IdleJob) -> float:
    return trio.run(_idle_consumer, job)


async def _idle_consumer(job: IdleJob) -> float:
    """Catch up, then poll as an application waiting for records would, and measure."""
    store = LocalObjectStore(job.objects)
    meta = SQLiteMetadataStore(job.meta_path)
    async with open_consumer(job.topic, storage=store, metadata=meta, offset_reset="earliest",
                             cache_size_bytes=0) as consumer:  # fmt: skip
        seen = 0
        while seen < job.records:
            seen += sum(len(b.values) for b in await consumer.poll_batches(timeout=30))
        await consumer.poll_batches(timeout=1.0)  # settle: the readers reach their ends
        before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        deadline = wall + job.seconds
        while time.perf_counter() < deadline:
            assert await consumer.poll_batches(timeout=1.0) == []
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall
    await meta.aclose()
    await store.aclose()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(100 * cpu / wall, 2)


# -- the run ----------------------------------------------------------------------------


@attrs.define
class Scale:
    """The figures of issue 17; ``--json`` prints them by these names."""

    scale_records: int = 0
    scale_flushes: int = 0
    stored_bytes_4p: int = 0
    stored_bytes_1000p: int = 0
    segments_1000p: int = 0
    put_requests_per_gib_written: float = 0.0
    put_requests_per_gib_written_origin: float = 0.0
    get_requests_per_gib_read: float = 0.0
    get_requests_per_gib_read_origin: float = 0.0
    get_requests_per_gib_read_1000p: float = 0.0
    get_requests_per_gib_read_1000p_origin: float = 0.0
    consume_4p_records_per_s_file: int = 0
    consume_1000p_records_per_s_file: int = 0
    consume_1000p_vs_4p_file: float = 0.0
    consume_4p_records_per_s_s3: int = 0
    consume_1000p_records_per_s_s3: int = 0
    consume_1000p_vs_4p: float = 0.0
    idle_consumer_cpu_percent_1000p: float = 0.0


async def _stored(meta: MetadataStore, topic: str) -> tuple[int, int]:
    """(bytes, segments) of ``topic`` in the catalogue."""
    total = count = 0
    for state in await meta.partition_states([topic]):
        for seg in await meta.list_segments(topic, state.partition, 0, limit=1 << 30):
            total += seg.length
            count += 1
    return total, count


async def scale(args: argparse.Namespace, server: S3Server | None = None) -> Scale:
    """Every figure; on ``server`` if given (else a SeaweedFS of its own)."""
    if server is None:
        with tempfile.TemporaryDirectory() as tmp, running_seaweedfs(Path(tmp) / "s3") as s3:
            return await scale(args, s3)
    n, flushes, rounds = args.scale_records, args.scale_flushes, args.scale_rounds
    keys, values = make_records(n)
    r = Scale(scale_records=n, scale_flushes=flushes)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        s3 = S3ObjectStore(bucket="bench", prefix="scale", endpoint=server.endpoint,
                           region=server.region, access_key=server.access_key,
                           secret_key=server.secret_key)  # fmt: skip
        await s3.create_bucket()
        local = LocalObjectStore(root / "objects")
        meta = SQLiteMetadataStore(root / "meta.db")
        best: dict[tuple[str, int], float] = {}
        for p in PARTITIONS:
            counted = CountingStore(s3)
            await produce_flushes(counted, meta, f"s3-{p}", p, flushes, keys, values)
            await produce_flushes(local, meta, f"file-{p}", p, flushes, keys, values)
            stored, segments = await _stored(meta, f"s3-{p}")
            puts, counted.gets, counted.puts = counted.puts, 0, 0
            for i in range(rounds):
                for kind, store in (("s3", counted), ("file", local)):
                    seconds = await cold_consume(
                        store, meta, f"{kind}-{p}", n, root / f"c{p}{i}{kind}"
                    )
                    best[kind, p] = min(best.get((kind, p), math.inf), seconds)
            gets = counted.gets / rounds
            per_gib = GIB / stored
            if p == PARTITIONS[0]:
                r.stored_bytes_4p = stored
                r.get_requests_per_gib_read = round(gets * per_gib, 1)
                r.get_requests_per_gib_read_origin = round(segments * per_gib, 1)
            else:
                r.stored_bytes_1000p, r.segments_1000p = stored, segments
                r.put_requests_per_gib_written = round(puts * per_gib, 1)
                r.put_requests_per_gib_written_origin = round(segments * per_gib, 1)
                r.get_requests_per_gib_read_1000p = round(gets * per_gib, 1)
                r.get_requests_per_gib_read_1000p_origin = round(segments * per_gib, 1)
        rate = {k: n / s for k, s in best.items()}
        r.consume_4p_records_per_s_file = round(rate["file", 4])
        r.consume_1000p_records_per_s_file = round(rate["file", 1000])
        r.consume_1000p_vs_4p_file = round(rate["file", 1000] / rate["file", 4], 2)
        r.consume_4p_records_per_s_s3 = round(rate["s3", 4])
        r.consume_1000p_records_per_s_s3 = round(rate["s3", 1000])
        r.consume_1000p_vs_4p = round(rate["s3", 1000] / rate["s3", 4], 2)
        job = IdleJob(root / "objects", root / "meta.db", "file-1000", n, args.idle_seconds)
        r.idle_consumer_cpu_percent_1000p = idle_cpu_percent(job)
        await meta.aclose()
        await s3.aclose()
    return r


Row = tuple[str, str, str, str, str, bool | None]


def scale_rows(s: Scale) -> list[Row]:
    """(measure, ours, anchor, ratio, target, met): the rows of issue 17."""
    objects_per_gib = s.scale_flushes * GIB / s.stored_bytes_1000p

    def requests(what: str, ours: float, origin: float, target: str, met: bool | None) -> Row:
        return (what, f"{ours:,.0f}", f"origin's layout {origin:,.0f}",
                f"{ours / origin:.3f}x", target, met)  # fmt: skip

    def ratio(where: str, ours: int, four: int, value: float) -> Row:
        what = f"consume 1,000 partitions vs 4, {where}"
        return (what, f"{ours:,} rec/s", f"4 partitions {four:,} rec/s",
                f"{value:.2f}x", ">= 0.5x", value >= 0.5)  # fmt: skip

    about_one = s.get_requests_per_gib_read_1000p <= 1.1 * objects_per_gib
    return [
        requests(
            "PUTs per GiB written, 1,000 partitions",
            s.put_requests_per_gib_written,
            s.put_requests_per_gib_written_origin,
            "",
            None,
        ),
        requests(
            "GETs per GiB read, 4 partitions",
            s.get_requests_per_gib_read,
            s.get_requests_per_gib_read_origin,
            "",
            None,
        ),
        requests(
            "GETs per GiB read, 1,000 partitions",
            s.get_requests_per_gib_read_1000p,
            s.get_requests_per_gib_read_1000p_origin,
            "about 1 per object",
            about_one,
        ),
        ratio(
            "S3",
            s.consume_1000p_records_per_s_s3,
            s.consume_4p_records_per_s_s3,
            s.consume_1000p_vs_4p,
        ),
        ratio(
            "file",
            s.consume_1000p_records_per_s_file,
            s.consume_4p_records_per_s_file,
            s.consume_1000p_vs_4p_file,
        ),
        (
            "idle consumer of 1,000 partitions, CPU",
            f"{s.idle_consumer_cpu_percent_1000p}%",
            "",
            "",
            "< 1% of a core",
            s.idle_consumer_cpu_percent_1000p < 1,
        ),
    ]


def scale_head(s: Scale) -> str:
    return (f"{s.scale_records:,} keyed records in {s.scale_flushes} flushes, to 4 and to "
            f"1,000 partitions ({s.segments_1000p:,} segments); cold `poll_batches()` with "
            f"the disk cache; requests counted at the object store")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale-records", type=int, default=100_000)
    parser.add_argument("--scale-rounds", type=int, default=1, help="best of, at 4 and 1,000")
    parser.add_argument("--scale-flushes", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="end with a line of JSON")
    parser.add_argument("--idle-only", action="store_true", help="only the idle consumer")
    add_arguments(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.idle_only:
        output: dict[str, Any] = {"idle_consumer_cpu_percent_1000p": trio.run(idle_only, args)}
        print(output)
    else:
        from bench import print_table  # (bench imports this module: not at the top)

        result = trio.run(scale, args)
        print_table(scale_head(result), scale_rows(result))
        output = attrs.asdict(result)
    print(f"\n(took {time.perf_counter() - started:.1f} s)")
    if args.json:
        print(json.dumps(output, sort_keys=True))


async def idle_only(args: argparse.Namespace) -> float:
    n = args.scale_records
    keys, values = make_records(n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        meta = SQLiteMetadataStore(root / "meta.db")
        local = LocalObjectStore(root / "objects")
        await produce_flushes(local, meta, "file-1000", 1000, args.scale_flushes, keys, values)
        await meta.aclose()
        return idle_cpu_percent(IdleJob(root / "objects", root / "meta.db", "file-1000", n,
                                        args.idle_seconds))  # fmt: skip


if __name__ == "__main__":
    main()
