"""Consume throughput: warm-cache poll() beside aiokafka's consumer path, and
cold reads from a private SeaweedFS beside a raw streamed httpx GET.

    python scripts/bench_consume.py [--records N] [--json]

Same records on both sides (16-byte keys, 100-byte values, lz4):

- warm: our consumer's ``poll()`` into ConsumedRecord objects with every
  segment already in its disk cache, beside aiokafka's own fetch path
  (``PartitionRecords`` over ``MemoryRecords``: its Cython codec plus the
  ConsumerRecord it builds per record) on the same records in batches of the
  same size;
- cold: a consumer with an empty cache reading everything from SeaweedFS,
  beside a raw streamed httpx GET of the same objects, one after another.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import httpx_auth
import trio
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition as KafkaTP

from streamhouse import S3ObjectStore, SQLiteMetadataStore, open_consumer, open_producer
from streamhouse._seaweed import running_seaweedfs


def make_records(count: int) -> tuple[list[bytes], list[bytes], list[int]]:
    rng = random.Random(11)
    keys = [rng.randbytes(8).hex().encode() for _ in range(count)]
    values = [rng.randbytes(50).hex().encode() for _ in range(count)]
    timestamps = [1_700_000_000_000 + i // 10 for i in range(count)]
    return keys, values, timestamps


async def consume_all(consumer: Any, count: int) -> float:
    start = time.perf_counter()
    seen = 0
    while seen < count:
        records = await consumer.poll(timeout=10)
        if not records:
            raise RuntimeError(f"stalled at {seen} of {count}")
        seen += len(records)
    return time.perf_counter() - start


def aiokafka_path(keys: list[bytes], values: list[bytes], timestamps: list[int]) -> float:
    per_batch = (1 << 20) // 124
    batches = []
    for lo in range(0, len(values), per_batch):
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=3, is_transactional=0, producer_id=-1,
            producer_epoch=-1, base_sequence=-1, batch_size=1 << 30,
        )  # fmt: skip
        for i in range(lo, min(lo + per_batch, len(values))):
            builder.append(
                i - lo, timestamp=timestamps[i], key=keys[i], value=values[i], headers=[]
            )
        batches.append(bytes(builder.build()))
    tp = KafkaTP("bench", 0)

    def run() -> int:
        count = 0
        for raw in batches:
            records = PartitionRecords(tp, MemoryRecords(raw), [], 0, None, None, True, 0)
            chunk = list(records)
            count += len(chunk)
        return count

    assert run() == len(values)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


async def raw_get(server: Any, bucket: str, keys: list[str]) -> tuple[float, int]:
    auth = httpx_auth.AWS4Auth(access_id=server.access_key, secret_key=server.secret_key,
                               region=server.region, service="s3")  # fmt: skip
    total = 0
    async with httpx.AsyncClient(base_url=server.endpoint, auth=auth, timeout=60) as client:
        start = time.perf_counter()
        for key in keys:
            async with client.stream("GET", f"/{bucket}/{key}") as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
        return time.perf_counter() - start, total


async def main(args: argparse.Namespace) -> dict[str, Any]:
    keys, values, timestamps = make_records(args.records)
    n = len(values)
    with tempfile.TemporaryDirectory() as tmp, running_seaweedfs(Path(tmp) / "s3") as server:
        root = Path(tmp)
        store = S3ObjectStore(
            bucket="bench", prefix="consume", endpoint=server.endpoint, region=server.region,
            access_key=server.access_key, secret_key=server.secret_key,
        )  # fmt: skip
        await store.create_bucket()
        meta = SQLiteMetadataStore(root / "meta.db")
        await meta.create_topic("bench", 1)
        async with open_producer(storage=store, metadata=meta, linger=0.01) as producer:
            for lo in range(0, n, 50_000):
                await producer.send_batch("bench", values[lo : lo + 50_000],
                                          keys=keys[lo : lo + 50_000],
                                          timestamps=timestamps[lo : lo + 50_000])  # fmt: skip
        segments = await meta.list_segments("bench", 0, 0, limit=100_000)
        object_keys = sorted({s.object_key for s in segments})
        stored = sum(s.length for s in segments)
        cache = root / "cache"
        options: dict[str, Any] = {
            "storage": store, "metadata": meta, "offset_reset": "earliest", "cache_dir": cache,
            "cache_size_bytes": 4 * stored + (1 << 20), "max_poll_records": args.max_poll_records,
        }  # fmt: skip
        async with open_consumer("bench", **options) as consumer:
            cold_s = await consume_all(consumer, n)
        raw_s, raw_bytes = await raw_get(server, "bench", [f"consume/{k}" for k in object_keys])
        warm = []
        for _ in range(3):
            async with open_consumer("bench", **options) as consumer:
                warm.append(await consume_all(consumer, n))
                stats = await consumer.cache_stats()
                assert stats.gets == 0, "the warm runs must be served from the cache"
        await meta.aclose()
        await store.aclose()
    ak_s = aiokafka_path(keys, values, timestamps)
    warm_s = min(warm)
    result = {
        "records": n,
        "consume_warm_records_per_s": round(n / warm_s),
        "aiokafka_consumer_path_records_per_s": round(n / ak_s),
        "consume_cold_records_per_s": round(n / cold_s),
        "consume_cold_mb_per_s": round(stored / cold_s / 1e6, 1),
        "raw_get_mb_per_s": round(raw_bytes / raw_s / 1e6, 1),
    }
    print(f"# {n} records (16-byte keys, 100-byte values, lz4), one partition, "
          f"{len(object_keys)} objects, {stored / 1e6:.1f} MB stored")  # fmt: skip
    print(f"warm poll() into records      {result['consume_warm_records_per_s']:>12,} rec/s")
    print(f"aiokafka consumer path        {result['aiokafka_consumer_path_records_per_s']:>12,} "
          f"rec/s   ratio {ak_s / warm_s:.2f}x")  # fmt: skip
    print(f"cold from SeaweedFS           {result['consume_cold_mb_per_s']:>12} MB/s "
          f"({result['consume_cold_records_per_s']:,} rec/s)")  # fmt: skip
    print(f"raw streamed GET, same objects {result['raw_get_mb_per_s']:>11} MB/s   "
          f"ratio {raw_s / cold_s:.2f}x")  # fmt: skip
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--max-poll-records", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    out = trio.run(main, arguments)
    if arguments.json:
        print(json.dumps(out, sort_keys=True))
