"""Several producers on the same partitions: unique, gap-free offsets, exact read-back."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from streamhouse import (
    InvalidArgumentError,
    LocalObjectStore,
    MetadataStore,
    PartitionNotFoundError,
    PostgresMetadataStore,
    SQLiteMetadataStore,
    open_producer,
)

from ..helpers import drop_schema, read_partition
from .strategies import bad_send_arguments

records = st.tuples(
    st.integers(0, 1),  # partition
    st.one_of(st.none(), st.binary(max_size=8)),  # key
    st.one_of(st.none(), st.binary(max_size=32)),  # value
    st.lists(st.tuples(st.text(max_size=4), st.binary(max_size=4)), max_size=2),  # headers
    st.integers(0, 2**41),  # timestamp
)


Record = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]], int]
producers = st.lists(st.lists(records, min_size=1, max_size=15), min_size=1, max_size=4)


@given(per_producer=producers, linger=st.sampled_from([0, 0.001, 0.01]))
@settings(max_examples=20, deadline=None)
def test_acknowledged_records_read_back_at_their_offsets(
    per_producer: list[list[Record]], linger: float
) -> None:
    """Every acknowledged record reads back at its offset; offsets are unique and gap-free."""
    read_back_at_their_offsets(per_producer, linger, None)


@given(per_producer=producers, linger=st.sampled_from([0, 0.001, 0.01]))
@settings(max_examples=8, deadline=None)
def test_acknowledged_records_read_back_at_their_offsets_on_postgresql(
    postgres_url: str, per_producer: list[list[Record]], linger: float
) -> None:
    """The same on PostgreSQL (a schema of its own each example)."""
    schema = f"pp_{uuid.uuid4().hex[:12]}"
    try:
        read_back_at_their_offsets(per_producer, linger, (postgres_url, schema))
    finally:
        drop_schema(postgres_url, schema)


def read_back_at_their_offsets(
    per_producer: list[list[Record]], linger: float, postgres: tuple[str, str] | None
) -> None:
    """Producers send ``per_producer`` at once; what they acknowledged reads back
    at its offset, gap-free (SQLite, or PostgreSQL: its URL and a schema)."""

    async def main(root: Path) -> None:
        storage = LocalObjectStore(root / "objects", fsync=False)
        meta: MetadataStore
        if postgres is None:
            meta = SQLiteMetadataStore(root / "meta.db", synchronous="NORMAL")
        else:
            meta = PostgresMetadataStore(postgres[0], schema=postgres[1])
        await meta.create_topic("t", 2)
        acked: dict[tuple[int, int], tuple[object, ...]] = {}

        async def produce(batch: list[Record]) -> None:
            async with (
                open_producer(storage=storage, metadata=meta, linger=linger) as producer,
                trio.open_nursery() as nursery,
            ):

                async def send(
                    p: int, k: bytes | None, v: bytes | None, h: list[tuple[str, bytes]], ts: int
                ) -> None:
                    md = await producer.send("t", v, key=k, partition=p, headers=h, timestamp=ts)
                    assert (md.partition, md.offset) not in acked
                    acked[(md.partition, md.offset)] = (md.offset, ts, k, v, tuple(h))

                for record in batch:
                    nursery.start_soon(send, *record)

        async with trio.open_nursery() as nursery:
            for batch in per_producer:
                nursery.start_soon(produce, batch)
        for partition in (0, 1):
            rows = await read_partition(storage, meta, "t", partition)
            assert [r[0] for r in rows] == list(range(len(rows)))
            assert rows == [acked[(partition, r[0])] for r in rows]
        assert len(acked) == sum(map(len, per_producer))
        await meta.aclose()

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))


@given(
    sends=st.lists(
        st.one_of(records.map(lambda r: ("good", r)), bad_send_arguments.map(lambda b: ("bad", b))),
        min_size=1,
        max_size=20,
    )
)
@settings(max_examples=25, deadline=None)
def test_bad_sends_never_fail_good_ones_in_their_batch(
    sends: list[tuple[str, Any]],
) -> None:
    """Good and hostile sends share batches: each bad one is refused naming its argument,
    and every good one is acknowledged and reads back at its offset."""

    async def main(root: Path) -> None:
        storage = LocalObjectStore(root / "objects", fsync=False)
        meta = SQLiteMetadataStore(root / "meta.db", synchronous="NORMAL")
        await meta.create_topic("t", 2)
        acked: dict[tuple[int, int], tuple[object, ...]] = {}
        refused: list[str] = []
        async with (
            open_producer(
                storage=storage, metadata=meta, linger=0.01, max_record_bytes=1000
            ) as producer,
            trio.open_nursery() as nursery,
        ):

            async def good(p: int, k: bytes | None, v: bytes | None, h: Any, ts: int) -> None:
                md = await producer.send("t", v, key=k, partition=p, headers=h, timestamp=ts)
                acked[(md.partition, md.offset)] = (md.offset, ts, k, v, tuple(h))

            async def bad(arguments: dict[str, Any], names: str) -> None:
                with pytest.raises((InvalidArgumentError, PartitionNotFoundError), match=names):
                    await producer.send(**{"topic": "t", "value": b"bad", **arguments})
                refused.append(names)

            for kind, arguments in sends:
                nursery.start_soon(good if kind == "good" else bad, *arguments)
        for partition in (0, 1):
            rows = await read_partition(storage, meta, "t", partition)
            assert rows == [acked[(partition, r[0])] for r in rows]
        assert len(acked) == sum(kind == "good" for kind, _ in sends)
        assert len(refused) == sum(kind == "bad" for kind, _ in sends)
        await meta.aclose()

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))


_PRODUCER = textwrap.dedent(
    """
    import json, sys, trio
    from streamhouse import open_producer

    async def main(root, name, count):
        out = []
        async with open_producer(storage=f"file://{root}/objects",
                                 metadata=f"sqlite:///{root}/meta.db", linger=0.002) as p:
            async with trio.open_nursery() as nursery:
                async def send(i):
                    md = await p.send("t", f"{name}-{i}".encode(), partition=i % 2)
                    out.append([md.partition, md.offset, f"{name}-{i}"])
                for i in range(count):
                    nursery.start_soon(send, i)
        print(json.dumps(out))

    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
    """
)


@given(counts=st.tuples(st.integers(1, 60), st.integers(1, 60)))
@settings(max_examples=3, deadline=None)
def test_producers_in_two_processes_share_partitions_safely(counts: tuple[int, int]) -> None:
    """Two producer processes on one SQLite file and directory get disjoint, gap-free offsets."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        async def setup() -> None:
            meta = SQLiteMetadataStore(root / "meta.db")
            await meta.create_topic("t", 2)
            await meta.aclose()

        trio.run(setup)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _PRODUCER, str(root), f"p{i}", str(n)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i, n in enumerate(counts)
        ]
        acked = {}
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            for partition, offset, value in json.loads(out):
                assert (partition, offset) not in acked
                acked[(partition, offset)] = value.encode()

        async def check() -> None:
            storage = LocalObjectStore(root / "objects")
            meta = SQLiteMetadataStore(root / "meta.db")
            for partition in (0, 1):
                rows = await read_partition(storage, meta, "t", partition)
                assert [r[0] for r in rows] == list(range(len(rows)))
                assert [r[3] for r in rows] == [acked[(partition, r[0])] for r in rows]
            await meta.aclose()

        trio.run(check)
        assert len(acked) == sum(counts)


def _murmur2_as_in_kafka(data: bytes) -> int:
    """Kafka's Utils.murmur2, transcribed line by line: the reference."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    full = length - length % 4
    if length % 4 == 3:
        h ^= data[full + 2] << 16
    if length % 4 >= 2:
        h ^= data[full + 1] << 8
    if length % 4 >= 1:
        h ^= data[full]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@given(key=st.binary(max_size=64))
def test_murmur2_matches_kafkas_transcription(key: bytes) -> None:
    from streamhouse._producer.partitioner import murmur2

    assert murmur2(key) == _murmur2_as_in_kafka(key)
