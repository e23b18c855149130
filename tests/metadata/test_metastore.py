"""The MetadataStore protocol, on SQLite and on PostgreSQL (the ``meta``
fixture): topics, segment commits, offsets, errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio

from streamhouse import (
    ClosedError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidNameError,
    MetadataStore,
    PartitionNotFoundError,
    SQLiteMetadataStore,
    TopicExistsError,
    TopicNotFoundError,
    TopicPartition,
    metadata_store_from_url,
)
from streamhouse._metadata.protocol import SegmentSpec

pytestmark = pytest.mark.anyio


def spec(topic: str, partition: int, count: int, position: int = 0) -> SegmentSpec:
    return SegmentSpec(topic, partition, count, position, 100, 40, 1, 2)


async def test_topics_are_created_listed_and_deleted(meta: MetadataStore) -> None:
    """A created topic is listed with its partitions until it is deleted."""
    await meta.create_topic("orders", 3)
    await meta.create_topic("audit.log-v2", 1)
    assert [(t.name, t.partitions) for t in await meta.list_topics()] == [
        ("audit.log-v2", 1), ("orders", 3),
    ]  # fmt: skip
    assert (await meta.get_topic("orders")).partitions == 3
    states = await meta.partition_states(["orders"])
    assert [(s.partition, s.log_start_offset, s.high_watermark) for s in states] == [
        (0, 0, 0), (1, 0, 0), (2, 0, 0),
    ]  # fmt: skip
    await meta.delete_topic("orders")
    with pytest.raises(TopicNotFoundError, match="orders"):
        await meta.get_topic("orders")
    assert await meta.partition_states(["orders"]) == []


async def test_a_taken_topic_name_is_refused(meta: MetadataStore) -> None:
    """Creating a topic twice raises TopicExistsError."""
    await meta.create_topic("t", 1)
    with pytest.raises(TopicExistsError, match="'t' already exists"):
        await meta.create_topic("t", 2)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("a/b", "contains '/'"),
        ("..", "reserved"),
        ("has space", "contains ' '"),
        ("x" * 250, "limit is 249"),
        (7, "must be a str"),
    ],
)
async def test_invalid_topic_names_are_refused(
    meta: MetadataStore, name: object, message: str
) -> None:
    """Topic names follow Kafka's rule; the error says what broke it."""
    with pytest.raises(InvalidNameError, match=message):
        await meta.create_topic(name, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("partitions", [0, -1, 100_001, 1.5, True])
async def test_invalid_partition_counts_are_refused(
    meta: MetadataStore, partitions: object
) -> None:
    """Partition counts are ints from 1 to 100,000."""
    with pytest.raises(InvalidArgumentError, match="partition count"):
        await meta.create_topic("t", partitions)  # type: ignore[arg-type]


async def test_commits_assign_consecutive_base_offsets(meta: MetadataStore) -> None:
    """Each segment's base offset is its partition's high watermark, which then moves."""
    await meta.create_topic("t", 2)
    first = await meta.commit_segments("obj-1", [spec("t", 0, 10, 0), spec("t", 1, 5, 100)])
    second = await meta.commit_segments("obj-2", [spec("t", 0, 7)])
    assert [(s.partition, s.base_offset, s.end_offset) for s in first + second] == [
        (0, 0, 10), (1, 0, 5), (0, 10, 17),
    ]  # fmt: skip
    states = {s.partition: s.high_watermark for s in await meta.partition_states(["t"])}
    assert states == {0: 17, 1: 5}


async def test_recommitting_an_object_returns_its_offsets(meta: MetadataStore) -> None:
    """Committing the same object key twice changes nothing and returns the same offsets."""
    await meta.create_topic("t", 1)
    first = await meta.commit_segments("obj-1", [spec("t", 0, 10)])
    again = await meta.commit_segments("obj-1", [spec("t", 0, 10)])
    assert again == first
    assert (await meta.partition_states(["t"]))[0].high_watermark == 10
    assert await meta.committed_object_keys(["obj-1", "obj-2"]) == {"obj-1"}


async def test_a_commit_to_a_bad_partition_commits_nothing(meta: MetadataStore) -> None:
    """One bad segment fails the whole object's commit; no offsets move."""
    await meta.create_topic("t", 1)
    with pytest.raises(PartitionNotFoundError, match="no partition 3"):
        await meta.commit_segments("obj", [spec("t", 0, 10), spec("t", 3, 1)])
    with pytest.raises(TopicNotFoundError, match="missing"):
        await meta.commit_segments("obj", [spec("missing", 0, 1)])
    assert (await meta.partition_states(["t"]))[0].high_watermark == 0
    assert await meta.committed_object_keys(["obj"]) == set()
    with pytest.raises(InvalidArgumentError):
        await meta.commit_segments("obj", [])


async def test_list_segments_starts_at_the_segment_holding_the_offset(
    meta: MetadataStore,
) -> None:
    """list_segments begins with the segment holding from_offset, in order."""
    await meta.create_topic("t", 1)
    for i in range(5):
        await meta.commit_segments(f"o{i}", [spec("t", 0, 10)])
    listed = await meta.list_segments("t", 0, from_offset=25)
    assert [s.base_offset for s in listed] == [20, 30, 40]
    assert [s.base_offset for s in await meta.list_segments("t", 0, 25, limit=2)] == [20, 30]
    assert await meta.list_segments("t", 0, from_offset=50) == []


async def test_list_segments_from_looks_many_partitions_up_as_list_segments_does(
    meta: MetadataStore,
) -> None:
    """One query for many partitions, each from its own offset, answers what
    list_segments answers for each: the segment holding the offset first,
    in order, at most ``limit``; nothing past the end or where nothing is."""
    await meta.create_topic("t", 4)
    await meta.create_topic("other", 1)
    for i in range(6):
        await meta.commit_segments(
            f"o{i}", [spec("t", 0, 10), spec("t", 1, 3, 100), spec("other", 0, 7, 200)]
        )
    await meta.commit_segments("o9", [spec("t", 2, 1)])
    starts = {0: 25, 1: 0, 2: 1, 3: 0, 9: 0}  # 2: past its end; 3: empty; 9: no such
    for limit in (1, 2, 16):
        found = await meta.list_segments_from("t", starts, limit)
        assert set(found) <= set(starts)
        for p, offset in starts.items():
            assert found.get(p, []) == await meta.list_segments("t", p, offset, limit), (p, limit)
    found = await meta.list_segments_from("t", {0: 25, 1: 17}, 3)
    assert [s.base_offset for s in found[0]] == [20, 30, 40]
    assert [s.base_offset for s in found[1]] == [15]  # holds 17
    assert {s.topic for segs in found.values() for s in segs} == {"t"}
    assert await meta.list_segments_from("t", {}, 16) == {}
    # An offset no segment can hold (a seek may ask for one, past bigint):
    # nothing for it, and the other partitions are answered all the same.
    found = await meta.list_segments_from("t", {0: 2**64, 1: 0}, 16)
    assert found == {0: [], 1: await meta.list_segments("t", 1, 0, 16)}


async def test_committed_offsets_are_stored_and_fetched(meta: MetadataStore) -> None:
    """Offsets commit in one call, overwrite, and fetch back per group."""
    await meta.create_topic("t", 2)
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    await meta.commit_offsets("g1", {a: 10, b: 4}, metadata="m")
    await meta.commit_offsets("g1", {a: 3})
    await meta.commit_offsets("g2", {b: 8})
    fetched = await meta.fetch_offsets("g1")
    assert {tp: c.offset for tp, c in fetched.items()} == {a: 3, b: 4}
    assert fetched[b].metadata == "m"
    assert {tp: c.offset for tp, c in (await meta.fetch_offsets("g2", [a, b])).items()} == {b: 8}
    assert await meta.fetch_offsets("nobody") == {}
    assert await meta.list_groups() == ["g1", "g2"]


async def test_bad_offset_commits_are_refused(meta: MetadataStore) -> None:
    """Negative offsets, unknown partitions and empty group ids are refused."""
    await meta.create_topic("t", 1)
    with pytest.raises(InvalidArgumentError, match="offset"):
        await meta.commit_offsets("g", {TopicPartition("t", 0): -1})
    with pytest.raises(PartitionNotFoundError):
        await meta.commit_offsets("g", {TopicPartition("t", 1): 0})
    with pytest.raises(InvalidNameError, match="group id"):
        await meta.commit_offsets("", {TopicPartition("t", 0): 0})
    with pytest.raises(TopicNotFoundError, match="nope"):
        await meta.commit_offsets("g", {TopicPartition("t", 0): 5, TopicPartition("nope", 0): 1})
    await meta.commit_offsets("g", {})
    assert await meta.fetch_offsets("g") == {}  # nothing of a refused commit was written


async def test_many_tasks_committing_get_gap_free_offsets(meta: MetadataStore) -> None:
    """Concurrent commits from many tasks tile each partition without gaps or overlaps."""
    await meta.create_topic("t", 2)
    results = []

    async def commit(i: int) -> None:
        results.extend(await meta.commit_segments(f"o{i}", [spec("t", i % 2, i + 1)]))

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(commit, i)
    for partition in (0, 1):
        ranges = sorted((s.base_offset, s.end_offset) for s in results if s.partition == partition)
        assert ranges[0][0] == 0
        assert all(prev[1] == cur[0] for prev, cur in itertools.pairwise(ranges))


async def test_the_database_survives_reopening(tmp_path: Path) -> None:
    """Everything committed is there after closing and reopening the file."""
    path = tmp_path / "nested" / "meta.db"
    first = SQLiteMetadataStore(path)
    await first.create_topic("t", 1)
    await first.commit_segments("o", [spec("t", 0, 4)])
    await first.commit_offsets("g", {TopicPartition("t", 0): 2})
    await first.aclose()
    with pytest.raises(ClosedError):
        await first.list_topics()
    second = metadata_store_from_url(f"sqlite:///{path}")
    assert isinstance(second, SQLiteMetadataStore)
    assert (await second.partition_states(["t"]))[0].high_watermark == 4
    assert (await second.fetch_offsets("g"))[TopicPartition("t", 0)].offset == 2
    await second.aclose()


def test_sqlite_urls_take_relative_and_absolute_paths() -> None:
    """sqlite:///rel.db is relative to the working directory; sqlite:////abs.db absolute."""
    relative = metadata_store_from_url("sqlite:///data/meta.db")
    absolute = metadata_store_from_url("sqlite:////var/tmp/meta.db")
    assert isinstance(relative, SQLiteMetadataStore)
    assert isinstance(absolute, SQLiteMetadataStore)
    assert relative.path == Path("data/meta.db")
    assert absolute.path == Path("/var/tmp/meta.db")


@pytest.mark.parametrize(
    ("url", "message"),
    [("sqlite://host/x.db", "has a host"), ("sqlite:///", "no path"), ("mysql://x", "unsupported")],
)
def test_bad_metadata_urls_are_configuration_errors(url: str, message: str) -> None:
    """A malformed metadata URL raises ConfigurationError saying what is wrong."""
    with pytest.raises(ConfigurationError, match=message):
        metadata_store_from_url(url)


async def test_a_locked_database_is_reported_as_unavailable(tmp_path: Path) -> None:
    """A write lock held past the busy timeout raises MetadataUnavailableError."""
    import sqlite3

    from streamhouse import MetadataUnavailableError

    store = SQLiteMetadataStore(tmp_path / "m.db", busy_timeout=0.05)
    await store.create_topic("t", 1)
    blocker = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(MetadataUnavailableError, match="locked"):
            await store.create_topic("u", 1)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await store.create_topic("u", 1)
    await store.aclose()
