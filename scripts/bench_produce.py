"""Produce throughput into a private SeaweedFS S3 server, beside a raw PUT.

    python scripts/bench_produce.py [--records N] [--json]

Starts SeaweedFS on free loopback ports, then measures in one run, on the
same records (16-byte keys, 100-byte values, lz4):

- ``send_batch``: one producer, batches of ``--batch`` records from a few
  tasks (the throughput path);
- ``send``: one producer, one record per call from many tasks;
- raw PUT: the same number of objects of the same sizes as the producer
  wrote, uploaded with the same S3 client and concurrency: what the store
  itself allows.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from streamhouse import S3ObjectStore, SQLiteMetadataStore, open_producer
from streamhouse._seaweed import running_seaweedfs


def make_values(count: int, seed: int = 3) -> tuple[list[bytes], list[bytes]]:
    rng = random.Random(seed)
    keys = [rng.randbytes(8).hex().encode() for _ in range(count)]
    values = [rng.randbytes(50).hex().encode() for _ in range(count)]
    return keys, values


async def bench_send_batch(
    store: S3ObjectStore, meta_path: Path, keys: list[bytes], values: list[bytes], batch: int,
    tasks: int,
) -> float:  # fmt: skip
    meta = SQLiteMetadataStore(meta_path)
    await meta.create_topic("batch", 4)
    chunks = [(keys[i : i + batch], values[i : i + batch]) for i in range(0, len(values), batch)]
    start = time.perf_counter()
    async with open_producer(storage=store, metadata=meta, linger=0.05) as producer:
        queue = iter(chunks)

        async def worker() -> None:
            for ks, vs in queue:
                result = await producer.send_batch("batch", vs, partition=len(ks) % 4)
                assert len(result) == len(vs)

        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker)
    elapsed = time.perf_counter() - start
    total = sum(s.high_watermark for s in await meta.partition_states(["batch"]))
    assert total == len(values), (total, len(values))
    await meta.aclose()
    return elapsed


async def bench_send(
    store: S3ObjectStore, meta_path: Path, keys: list[bytes], values: list[bytes], tasks: int
) -> float:
    meta = SQLiteMetadataStore(meta_path)
    await meta.create_topic("single", 4)
    start = time.perf_counter()
    async with open_producer(storage=store, metadata=meta, linger=0.05) as producer:
        await producer.partitions_for("single")
        per_task = len(values) // tasks

        async def worker(t: int) -> None:
            for i in range(t * per_task, (t + 1) * per_task):
                await producer.send("single", values[i], key=keys[i])

        async with trio.open_nursery() as nursery:
            for t in range(tasks):
                nursery.start_soon(worker, t)
    elapsed = time.perf_counter() - start
    total = sum(s.high_watermark for s in await meta.partition_states(["single"]))
    assert total == per_task * tasks
    await meta.aclose()
    return elapsed


async def bench_raw_put(store: S3ObjectStore, sizes: list[int], tasks: int) -> float:
    blobs = [random.randbytes(size) for size in sizes]
    start = time.perf_counter()
    queue = iter(enumerate(blobs))

    async def worker() -> None:
        for i, blob in queue:
            await store.put(f"raw/{i:06d}", blob)

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    return time.perf_counter() - start


async def main(args: argparse.Namespace) -> dict[str, Any]:
    keys, values = make_values(args.records)
    payload_mb = sum(map(len, keys)) / 1e6 + sum(map(len, values)) / 1e6
    with tempfile.TemporaryDirectory() as tmp, running_seaweedfs(Path(tmp) / "s3") as server:
        store = S3ObjectStore(
            bucket="bench", prefix="produce", endpoint=server.endpoint, region=server.region,
            access_key=server.access_key, secret_key=server.secret_key,
        )  # fmt: skip
        await store.create_bucket()
        batch_s = await bench_send_batch(
            store, Path(tmp) / "batch.db", keys, values, args.batch, args.tasks
        )
        sizes = [info.size async for info in store.list("data/")]
        raw_s = await bench_raw_put(store, sizes, min(args.tasks, 4))
        n_single = min(args.records, args.single_records)
        single_s = await bench_send(
            store, Path(tmp) / "single.db", keys[:n_single], values[:n_single], args.send_tasks
        )
        await store.aclose()
    stored_mb = sum(sizes) / 1e6
    result = {
        "records": args.records,
        "produce_records_per_s": round(args.records / batch_s),
        "produce_mb_per_s": round(payload_mb / batch_s, 1),
        "produce_objects": len(sizes),
        "produce_stored_mb_per_s": round(stored_mb / batch_s, 1),
        "raw_put_mb_per_s": round(stored_mb / raw_s, 1),
        "send_records_per_s": round(n_single / single_s),
        "send_tasks": args.send_tasks,
    }
    print(f"# {args.records} records (16-byte keys, 100-byte values, lz4) into SeaweedFS")
    print(f"{'path':34} {'records/s':>12} {'MB/s':>8}")
    print(f"{'send_batch (' + str(args.batch) + '/call)':34} {result['produce_records_per_s']:12,}"
          f" {result['produce_mb_per_s']:8.1f}")  # fmt: skip
    print(f"{'send (' + str(args.send_tasks) + ' tasks, 1/call)':34} "
          f"{result['send_records_per_s']:12,}")  # fmt: skip
    print(f"{'stored bytes, send_batch':34} {'':12} {result['produce_stored_mb_per_s']:8.1f}")
    print(f"{'raw PUT of the same objects':34} {'':12} {result['raw_put_mb_per_s']:8.1f}")
    print(f"ratio send_batch/raw PUT (stored bytes): "
          f"{result['produce_stored_mb_per_s'] / result['raw_put_mb_per_s']:.2f}")  # fmt: skip
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_500_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--single-records", type=int, default=50_000)
    parser.add_argument("--send-tasks", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    out = trio.run(main, arguments)
    if arguments.json:
        print(json.dumps(out, sort_keys=True))
