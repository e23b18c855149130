"""Topic settings through open_admin (create, alter, describe) and a maintenance
pass, under trio and asyncio alike."""

from __future__ import annotations

import pytest

from streamhouse import (
    CleanupPolicy,
    InvalidArgumentError,
    MaintenanceReport,
    MetadataStore,
    ObjectStore,
    TopicNotFoundError,
    open_admin,
    open_producer,
)

pytestmark = pytest.mark.anyio


async def test_settings_are_created_altered_and_described(
    store: ObjectStore, meta: MetadataStore
) -> None:
    """describe_topic shows the settings given at creation and changed by alter_topic."""
    async with open_admin(storage=store, metadata=meta) as admin:
        await admin.create_topic("plain")
        plain = await admin.describe_topic("plain")
        assert (plain.retention_seconds, plain.retention_bytes, plain.cleanup_policy) == (
            None, None, CleanupPolicy.DELETE,
        )  # fmt: skip
        info = await admin.create_topic(
            "t", 2, retention_seconds=7 * 86400, retention_bytes=10 * 2**30,
            cleanup_policy="compact", delete_retention_seconds=60,
        )  # fmt: skip
        assert info.config.cleanup_policy == "compact"
        described = await admin.describe_topic("t")
        assert (described.retention_seconds, described.retention_bytes) == (604800, 2**33 + 2**31)
        assert (described.cleanup_policy, described.delete_retention_seconds) == ("compact", 60)
        # Only what is given changes; None means unlimited.
        await admin.alter_topic("t", retention_seconds=None)
        described = await admin.describe_topic("t")
        assert (described.retention_seconds, described.retention_bytes) == (None, 10 * 2**30)
        assert described.cleanup_policy is CleanupPolicy.COMPACT
        await admin.alter_topic("t", cleanup_policy=CleanupPolicy.DELETE, retention_bytes=None)
        described = await admin.describe_topic("t")
        assert (described.cleanup_policy, described.retention_bytes) == ("delete", None)


@pytest.mark.parametrize(
    ("settings", "word"),
    [
        ({"retention_seconds": -1}, "retention_seconds"),
        ({"retention_seconds": float("nan")}, "retention_seconds"),
        ({"retention_bytes": "10GiB"}, "retention_bytes"),
        ({"cleanup_policy": "shred"}, "'delete' or 'compact'"),
        ({"delete_retention_seconds": -5}, "delete_retention_seconds"),
    ],
)
async def test_bad_settings_are_refused_by_name(
    store: ObjectStore, meta: MetadataStore, settings: dict[str, object], word: str
) -> None:
    """A bad setting raises InvalidArgumentError naming it; nothing is created or changed."""
    async with open_admin(storage=store, metadata=meta) as admin:
        with pytest.raises(InvalidArgumentError, match=word):
            await admin.create_topic("t", **settings)  # type: ignore[arg-type]
        assert await admin.list_topics() == []
        await admin.create_topic("t")
        with pytest.raises(InvalidArgumentError, match=word):
            await admin.alter_topic("t", **settings)  # type: ignore[arg-type]
        assert (await admin.describe_topic("t")).cleanup_policy == "delete"
        with pytest.raises(TopicNotFoundError):
            await admin.alter_topic("missing", retention_seconds=60)


async def test_a_pass_runs_under_either_backend(store: ObjectStore, meta: MetadataStore) -> None:
    """maintain() applies retention and says what it did; bad arguments are refused."""
    async with open_admin(storage=store, metadata=meta) as admin:
        await admin.create_topic("t", retention_bytes=0)
        async with open_producer(storage=store, metadata=meta, linger=0) as producer:
            await producer.send_batch("t", [b"x"] * 10)
        report = await admin.maintain(grace=0)
        assert isinstance(report, MaintenanceReport)
        assert (report.segments_deleted, report.objects_deleted) == (1, 1)
        (p0,) = (await admin.describe_topic("t")).partitions
        assert (p0.log_start_offset, p0.high_watermark, p0.segments) == (10, 10, 0)
        for bad in ({"grace": -1}, {"orphan_grace": float("inf")}, {"target_bytes": 0},
                    {"lease_ttl": 0}):  # fmt: skip
            with pytest.raises(InvalidArgumentError, match=next(iter(bad))):
                await admin.maintain(**bad)  # type: ignore[arg-type]


async def test_compaction_and_merging_run_under_either_backend(
    store: ObjectStore, meta: MetadataStore
) -> None:
    """A pass compacts and merges (worker threads, task groups) under trio and asyncio."""
    async with open_admin(storage=store, metadata=meta) as admin:
        await admin.create_topic("t", cleanup_policy="compact")
        async with open_producer(storage=store, metadata=meta, linger=0) as producer:
            for value in (b"1", b"2", b"3", b"4"):
                await producer.send_batch("t", [value, value], keys=[b"a", b"b%s" % value])
        report = await admin.maintain(grace=0)
        # a@0 and a@2 go (a@4 is the newest before the last segment); the
        # compacted run and the two small segments after it merge into one.
        assert (report.records_removed, report.segments_compacted) == (2, 2)
        assert report.segments_merged == 3
        (partition,) = (await admin.describe_topic("t")).partitions
        assert (partition.segments, partition.high_watermark) == (1, 8)
