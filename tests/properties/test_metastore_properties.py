"""Offset assignment is contiguous, non-overlapping and gap-free under concurrency,
from tasks and from processes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from streamhouse import (
    LocalObjectStore,
    MetadataStore,
    SQLiteMetadataStore,
    metadata_store_from_url,
)
from streamhouse._metadata.protocol import SegmentInfo, SegmentSpec

from ..helpers import drop_schema, read_partition, with_schema
from .strategies import segment_plans

StoreURL = Callable[[], contextlib.AbstractContextManager[str]]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> StoreURL:
    """Makes, per example, the URL of a fresh metadata store: a SQLite file
    in a temporary directory, or a PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":

        @contextlib.contextmanager
        def sqlite_url() -> Iterator[str]:
            with tempfile.TemporaryDirectory() as tmp:
                yield f"sqlite:///{Path(tmp) / 'meta.db'}"

        return sqlite_url
    server: str = request.getfixturevalue("postgres_url")

    @contextlib.contextmanager
    def postgres_url() -> Iterator[str]:
        schema = f"p_{uuid.uuid4().hex[:12]}"
        try:
            yield with_schema(server, schema)
        finally:
            drop_schema(server, schema)

    return postgres_url


def open_store(url: str) -> MetadataStore:
    store = metadata_store_from_url(url)
    if isinstance(store, SQLiteMetadataStore):  # these files need not survive a power cut
        store.synchronous = "NORMAL"
    return store


def assert_tiled(segments: Iterable[SegmentInfo], expected_counts: dict[int, int]) -> None:
    """Each partition's segments cover 0..high watermark exactly once."""
    by_partition: dict[int, list[tuple[int, int]]] = {}
    for s in segments:
        by_partition.setdefault(s.partition, []).append((s.base_offset, s.end_offset))
    assert set(by_partition) == {p for p, n in expected_counts.items() if n}
    for partition, ranges in by_partition.items():
        ranges.sort()
        assert ranges[0][0] == 0, f"partition {partition} does not start at 0"
        for (_, end), (start, _) in itertools.pairwise(ranges):
            assert end == start, f"partition {partition}: gap or overlap at {end}/{start}"
        assert ranges[-1][1] == expected_counts[partition]


@given(plans=segment_plans, concurrency=st.integers(1, 12))
@settings(max_examples=30, deadline=None)
def test_concurrent_commits_from_many_tasks_tile_every_partition(
    store_url: StoreURL, plans: list[list[tuple[int, int]]], concurrency: int
) -> None:
    """Objects committed from many tasks at once get gap-free, non-overlapping offsets."""

    async def main(url: str) -> None:
        store = open_store(url)
        await store.create_topic("t", 3)
        committed: list[SegmentInfo] = []
        limiter = trio.CapacityLimiter(concurrency)

        async def commit(i: int, plan: list[tuple[int, int]]) -> None:
            async with limiter:
                specs = [SegmentSpec("t", p, n, 0, 10, 10, 0, 0) for p, n in plan]
                got = await store.commit_segments(f"obj-{i}", specs)
                assert [s.record_count for s in got] == [n for _, n in plan]
                committed.extend(got)

        async with trio.open_nursery() as nursery:
            for i, plan in enumerate(plans):
                nursery.start_soon(commit, i, plan)
        totals = {p: sum(n for plan in plans for q, n in plan if q == p) for p in range(3)}
        assert_tiled(committed, totals)
        states = {s.partition: s.high_watermark for s in await store.partition_states(["t"])}
        assert states == totals
        await store.aclose()

    with store_url() as url:
        trio.run(main, url)


_WRITER = textwrap.dedent(
    """
    import json, sys, trio
    from streamhouse import metadata_store_from_url
    from streamhouse._metadata.protocol import SegmentSpec

    async def main(url, name, plan):
        store = metadata_store_from_url(url)
        out = []
        for i, (partition, count) in enumerate(plan):
            spec = SegmentSpec("t", partition, count, 0, 10, 10, 0, 0)
            for s in await store.commit_segments(f"{name}-{i}", [spec]):
                out.append([s.partition, s.base_offset, s.record_count])
        await store.aclose()
        print(json.dumps(out))

    trio.run(main, sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
    """
)


@given(
    plans=st.lists(
        st.lists(st.tuples(st.integers(0, 1), st.integers(1, 20)), min_size=20, max_size=60),
        min_size=2,
        max_size=2,
    )
)
@settings(max_examples=3, deadline=None)
def test_two_processes_on_one_store_get_disjoint_gap_free_offsets(
    store_url: StoreURL, plans: list[list[tuple[int, int]]]
) -> None:
    """Two processes committing to one store at once never share or skip an offset."""
    with store_url() as url:

        async def setup() -> None:
            store = metadata_store_from_url(url)
            await store.create_topic("t", 2)
            await store.aclose()

        trio.run(setup)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, url, f"w{i}", json.dumps(plan)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i, plan in enumerate(plans)
        ]
        segments = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            for partition, base, count in json.loads(out):
                segments.append(SegmentInfo("t", partition, base, count, "", 0, 0, 0, 0, 0))
        totals = {p: sum(n for plan in plans for q, n in plan if q == p) for p in range(2)}
        assert_tiled(segments, totals)


_PRODUCER = textwrap.dedent(
    """
    import json, sys, trio
    from streamhouse import open_producer

    async def main(objects, url, name, count):
        out = []
        async with open_producer(storage=f"file://{objects}", metadata=url, linger=0.002) as p:
            async with trio.open_nursery() as nursery:
                async def send(i):
                    md = await p.send("t", f"{name}-{i}".encode(), partition=i % 2)
                    out.append([md.partition, md.offset, f"{name}-{i}"])
                for i in range(count):
                    nursery.start_soon(send, i)
        print(json.dumps(out))

    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    """
)


@given(counts=st.lists(st.integers(1, 80), min_size=3, max_size=3))
@settings(max_examples=2, deadline=None)
def test_producer_processes_on_one_store_never_collide(
    store_url: StoreURL, counts: list[int]
) -> None:
    """Three producer processes on one store get disjoint, gap-free offsets, read back exactly."""
    with store_url() as url, tempfile.TemporaryDirectory() as objects:

        async def setup() -> None:
            store = metadata_store_from_url(url)
            await store.create_topic("t", 2)
            await store.aclose()

        trio.run(setup)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _PRODUCER, objects, url, f"p{i}", str(n)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i, n in enumerate(counts)
        ]
        acked: dict[tuple[int, int], bytes] = {}
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0
            for partition, offset, value in json.loads(out):
                assert (partition, offset) not in acked
                acked[(partition, offset)] = value.encode()

        async def check() -> None:
            storage = LocalObjectStore(Path(objects))
            store = metadata_store_from_url(url)
            for partition in (0, 1):
                rows = await read_partition(storage, store, "t", partition)
                assert [r[0] for r in rows] == list(range(len(rows)))
                assert [r[3] for r in rows] == [acked[(partition, r[0])] for r in rows]
            await store.aclose()
            await storage.aclose()

        trio.run(check)
        assert len(acked) == sum(counts)
