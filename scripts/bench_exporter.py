"""The exporter's scrape at scale: 10,000 partitions, their segments, groups' offsets.

    python scripts/bench_exporter.py [--partitions 10000] [--segments 5] [--groups 3]
                                     [--postgres] [--rounds 5]

Fills a metadata store (SQLite in a temporary directory, or a private
PostgreSQL with ``--postgres``) with ``--partitions`` partitions (100 a
topic), ``--segments`` segments each and every group's offset on every
partition (half of them caught up, half behind), then measures, best of
``--rounds``: the one query (``monitoring_snapshot``), turning it into metric
families, and a whole scrape over HTTP (``GET /metrics``, served from the
last snapshot) with the refresh that precedes it.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (puts tests/ on the path)
import anyio
import httpx

from streamhouse import MetadataStore, PostgresMetadataStore, SQLiteMetadataStore, TopicPartition
from streamhouse._exporter import render_exposition, serve_exporter
from streamhouse._metadata.protocol import SegmentSpec

PER_TOPIC = 100


@contextlib.asynccontextmanager
async def store(postgres: bool, directory: Path) -> AsyncIterator[MetadataStore]:
    if not postgres:
        meta: MetadataStore = SQLiteMetadataStore(directory / "meta.db")
        try:
            yield meta
        finally:
            await meta.aclose()
        return
    from tests.servers.postgres import running_postgres

    with running_postgres(tcp=True) as server:
        meta = PostgresMetadataStore(server.url)
        try:
            yield meta
        finally:
            await meta.aclose()


async def fill(meta: MetadataStore, partitions: int, segments: int, groups: int) -> None:
    topics = [f"topic-{i:04d}" for i in range((partitions + PER_TOPIC - 1) // PER_TOPIC)]
    now_ms = time.time_ns() // 1_000_000
    for topic in topics:
        await meta.create_topic(topic, PER_TOPIC)
        for round_ in range(segments):
            first = now_ms - 60_000 * (segments - round_)
            specs = [
                SegmentSpec(topic, p, 100, p * 4096, 4096, 200, first, first + 50)
                for p in range(PER_TOPIC)
            ]
            await meta.commit_segments(f"{topic}/{round_}", specs)
        for g in range(groups):
            offsets = {
                TopicPartition(topic, p): 100 * segments if p % 2 else 150 for p in range(PER_TOPIC)
            }
            await meta.commit_offsets(f"group-{g}", offsets)


async def best(rounds: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = await call()
        times.append(time.perf_counter() - started)
    return min(times), result


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with store(args.postgres, Path(tmp)) as meta:
            started = time.perf_counter()
            await fill(meta, args.partitions, args.segments, args.groups)
            print(f"filled in {time.perf_counter() - started:.1f} s")
            query, snap = await best(args.rounds, meta.monitoring_snapshot)
            print(
                f"monitoring_snapshot: {query * 1000:.0f} ms for {len(snap.partitions)} "
                f"partitions and {len(snap.offsets)} offsets (one query)"
            )

            async def render() -> Any:
                return render_exposition(snap, time.time())

            rendering, text = await best(args.rounds, render)
            zipping, zipped = await best(
                args.rounds, lambda: anyio.to_thread.run_sync(gzip.compress, text, 1)
            )
            lines = text.count(b"\n")
            print(
                f"rendering: {rendering * 1000:.0f} ms ({len(text) / 1e6:.1f} MB, "
                f"{lines:,} lines); gzip: {zipping * 1000:.0f} ms "
                f"({len(zipped) / 1e6:.1f} MB)"
            )
            async with anyio.create_task_group() as tg:
                port = await tg.start(
                    lambda task_status: serve_exporter(
                        meta, port=0, interval=3600, task_status=task_status
                    )
                )
                async with httpx.AsyncClient(timeout=60) as http:
                    url = f"http://127.0.0.1:{port}/metrics"
                    scrape, _ = await best(args.rounds, lambda: http.get(url))
                    headers = {"Accept-Encoding": "identity"}
                    plain, _ = await best(args.rounds, lambda: http.get(url, headers=headers))
                tg.cancel_scope.cancel()
            print(
                f"a scrape (GET /metrics, from the last rendering): {scrape * 1000:.0f} ms "
                f"gzipped, {plain * 1000:.0f} ms plain"
            )
            print(f"a refresh and a scrape: {(query + rendering + zipping + scrape) * 1000:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=5)
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", action="store_true")
    anyio.run(main, parser.parse_args(), backend="trio")
