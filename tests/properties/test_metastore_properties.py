"""Offset assignment is contiguous, non-overlapping and gap-free under concurrency."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterable
from pathlib import Path

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from streamhouse import SQLiteMetadataStore
from streamhouse._metadata.protocol import SegmentInfo, SegmentSpec

from .strategies import segment_plans


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
    plans: list[list[tuple[int, int]]], concurrency: int
) -> None:
    """Objects committed from many tasks at once get gap-free, non-overlapping offsets."""

    async def main(path: Path) -> None:
        store = SQLiteMetadataStore(path, synchronous="NORMAL")
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

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp) / "meta.db")


_WRITER = textwrap.dedent(
    """
    import json, sys, trio
    from streamhouse import SQLiteMetadataStore
    from streamhouse._metadata.protocol import SegmentSpec

    async def main(path, name, plan):
        store = SQLiteMetadataStore(path)
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
def test_two_processes_on_one_file_get_disjoint_gap_free_offsets(
    plans: list[list[tuple[int, int]]],
) -> None:
    """Two processes committing to one SQLite file at once never share or skip an offset."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "meta.db"

        async def setup() -> None:
            store = SQLiteMetadataStore(path)
            await store.create_topic("t", 2)
            await store.aclose()

        trio.run(setup)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, str(path), f"w{i}", json.dumps(plan)],
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
