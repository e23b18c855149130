"""Segment codec throughput beside aiokafka's record batch codec, in one run.

Both sides get the same records (16-byte keys, 100-byte values, increasing
timestamps) as a list of ``(key, value, timestamp)`` tuples, and both cut them
into batches of the same raw size (1 MiB). "Encode" starts from that list.
"Decode" means every record's offset, timestamp, key and value in Python
hands, as a list of ``(offset, timestamp, key, value)`` tuples per batch; as
in a consumer, one batch is held at a time and dropped once it has been
counted and checked, for both sides alike.

    python scripts/bench_codec.py            # table
    python scripts/bench_codec.py --json     # table, then one line of JSON

Needs the bench extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from streamhouse._codec import Codec, encode_segment, iter_segment

AIOKAFKA_CODEC = {Codec.NONE: 0, Codec.LZ4: 3, Codec.ZSTD: 4}
BLOCK_BYTES = 1 << 20


def make_records(count: int, seed: int = 7) -> list[tuple[bytes, bytes, int]]:
    """Keys of 16 bytes, values of 100 bytes of hex text, ms timestamps."""
    rng = random.Random(seed)
    start = 1_700_000_000_000
    return [
        (rng.randbytes(8).hex().encode(), rng.randbytes(50).hex().encode(), start + i // 10)
        for i in range(count)
    ]


def best_time(fn: Callable[[], Any], rounds: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def ours(records: list[tuple[bytes, bytes, int]], codec: Codec, rounds: int) -> dict[str, Any]:
    def encode() -> bytes:
        keys = list(map(itemgetter(0), records))
        values = list(map(itemgetter(1), records))
        timestamps = list(map(itemgetter(2), records))
        return encode_segment(timestamps, keys, values, codec=codec, block_bytes=BLOCK_BYTES).data

    segment = encode()

    def decode() -> int:
        count = 0
        for block in iter_segment(segment):
            rows = block.rows(0)
            count += len(rows)
        return count

    rows = [row for block in iter_segment(segment) for row in block.rows(0)]
    assert rows == [(i, ts, k, v) for i, (k, v, ts) in enumerate(records)], "round trip failed"
    assert decode() == len(records)
    return {
        "encode_s": best_time(encode, rounds),
        "decode_s": best_time(decode, rounds),
        "bytes": len(segment),
    }


def aiokafka(records: list[tuple[bytes, bytes, int]], codec: Codec, rounds: int) -> dict[str, Any]:
    per_batch = max(1, BLOCK_BYTES // (len(records[0][0]) + len(records[0][1]) + 8))

    def encode() -> list[bytes]:
        batches = []
        for lo in range(0, len(records), per_batch):
            builder = DefaultRecordBatchBuilder(
                magic=2,
                compression_type=AIOKAFKA_CODEC[codec],
                is_transactional=0,
                producer_id=-1,
                producer_epoch=-1,
                base_sequence=-1,
                batch_size=1 << 30,
            )
            for i, (key, value, ts) in enumerate(records[lo : lo + per_batch], lo):
                builder.append(i - lo, timestamp=ts, key=key, value=value, headers=[])
            batches.append(bytes(builder.build()))
        return batches

    batches = encode()

    def decode() -> int:
        count = 0
        for raw in batches:
            rows = [(r.offset, r.timestamp, r.key, r.value) for r in DefaultRecordBatch(raw)]
            count += len(rows)
        return count

    rows = []
    for raw in batches:
        base = len(rows)
        rows += [(base + r.offset, r.timestamp, r.key, r.value) for r in DefaultRecordBatch(raw)]
    assert rows == [(i, ts, k, v) for i, (k, v, ts) in enumerate(records)], "aiokafka round trip"
    assert decode() == len(records)
    return {
        "encode_s": best_time(encode, rounds),
        "decode_s": best_time(decode, rounds),
        "bytes": sum(map(len, batches)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7, help="timed runs; the best counts")
    parser.add_argument("--json", action="store_true", help="print a last line of JSON")
    args = parser.parse_args()

    records = make_records(args.records)
    payload_mb = sum(len(k) + len(v) for k, v, _ in records) / 1e6
    n = len(records)
    print(
        f"# {n} records, 16-byte keys, 100-byte values; best of {args.rounds}; "
        f"Python {platform.python_version()}, {os.cpu_count()} cpus"
    )
    print(
        f"{'codec':6} {'op':7} {'streamhouse rec/s':>18} {'MB/s':>8} "
        f"{'aiokafka rec/s':>15} {'MB/s':>8} {'ratio':>6} {'bytes ours/theirs':>18}"
    )
    result: dict[str, Any] = {"records": n, "python": platform.python_version()}
    for codec in (Codec.NONE, Codec.LZ4, Codec.ZSTD):
        a = ours(records, codec, args.rounds)
        b = aiokafka(records, codec, args.rounds)
        for op in ("encode", "decode"):
            our_rate = n / a[f"{op}_s"]
            their_rate = n / b[f"{op}_s"]
            print(
                f"{codec.name.lower():6} {op:7} {our_rate:18,.0f} {payload_mb / a[f'{op}_s']:8.1f} "
                f"{their_rate:15,.0f} {payload_mb / b[f'{op}_s']:8.1f} "
                f"{our_rate / their_rate:5.2f}x {a['bytes']:>9}/{b['bytes']:<9}"
            )
            name = codec.name.lower()
            result[f"{name}_{op}_records_per_s"] = round(our_rate)
            result[f"aiokafka_{name}_{op}_records_per_s"] = round(their_rate)
            if codec is Codec.LZ4:
                result[f"{op}_records_per_s"] = round(our_rate)
                result[f"aiokafka_{op}_records_per_s"] = round(their_rate)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
