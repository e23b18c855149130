"""The MetadataStore's maintenance calls, on SQLite and PostgreSQL (the ``meta``
fixture): topic settings, the lease and its fence, retention, rewrites, garbage."""

from __future__ import annotations

import pytest

from streamhouse import InvalidArgumentError, MetadataError, MetadataStore, TopicNotFoundError
from streamhouse._errors import LeaseLostError
from streamhouse._metadata.protocol import (
    CompactionCheckpoint,
    MaintenanceLease,
    SegmentInfo,
    SegmentSpec,
    TopicConfig,
)

pytestmark = pytest.mark.anyio


def spec(partition: int, count: int, position: int = 0, length: int = 100) -> SegmentSpec:
    return SegmentSpec("t", partition, count, position, length, 40, 1, 2)


async def lease(meta: MetadataStore, holder: str = "me") -> MaintenanceLease:
    taken = await meta.acquire_lease(holder, 60.0)
    assert taken is not None
    return taken


async def test_topic_settings_are_stored_altered_and_checked(meta: MetadataStore) -> None:
    """A topic's settings come back as created and as altered; bad ones are refused."""
    created = await meta.create_topic("t", 2, TopicConfig(3600, 10_000, "compact", 60))
    assert created.config == TopicConfig(3600.0, 10_000, "compact", 60.0)
    assert (await meta.get_topic("t")).config == created.config
    assert (await meta.create_topic("plain", 1)).config == TopicConfig()
    altered = await meta.alter_topic("t", TopicConfig(None, None, "delete", 0))
    assert altered.config == TopicConfig(None, None, "delete", 0.0)
    assert [t.config for t in await meta.list_topics()] == [TopicConfig(), altered.config]
    with pytest.raises(TopicNotFoundError):
        await meta.alter_topic("nope", TopicConfig())
    for bad, word in [
        ({"retention_seconds": 0}, "retention_seconds"),
        ({"retention_seconds": float("inf")}, "retention_seconds"),
        ({"retention_bytes": -1}, "retention_bytes"),
        ({"retention_bytes": 1.5}, "retention_bytes"),
        ({"cleanup_policy": "compact,delete"}, "cleanup policy"),
        ({"delete_retention_seconds": None}, "delete_retention_seconds"),
    ]:
        with pytest.raises(InvalidArgumentError, match=word):
            TopicConfig(**bad)  # type: ignore[arg-type]


async def test_one_holder_at_a_time_with_growing_epochs(meta: MetadataStore) -> None:
    """The lease goes to one holder; a new holder gets a new epoch only once it expired."""
    first = await lease(meta, "a")
    assert await meta.acquire_lease("b", 60.0) is None
    await meta.renew_lease(first)
    await meta.release_lease(first)
    second = await lease(meta, "b")
    assert second.epoch > first.epoch
    with pytest.raises(LeaseLostError, match="another maintainer"):
        await meta.renew_lease(first)
    # A lease that ran out (a ttl of a nanosecond) goes to the next who asks.
    await meta.release_lease(second)
    short = await meta.acquire_lease("c", 1e-9)
    assert short is not None
    third = await lease(meta, "d")
    assert third.epoch > short.epoch
    with pytest.raises(InvalidArgumentError, match="ttl"):
        await meta.acquire_lease("e", 0)


async def test_a_fenced_maintainer_changes_nothing(meta: MetadataStore) -> None:
    """Writes under a lease another maintainer has taken raise LeaseLostError and do nothing."""
    await meta.create_topic("t", 1)
    await meta.commit_segments("o1", [spec(0, 5)])
    stale = await meta.acquire_lease("old", 1e-9)
    assert stale is not None
    await lease(meta, "new")
    with pytest.raises(LeaseLostError):
        await meta.retire_segments(stale, "t", 0, 5)
    with pytest.raises(LeaseLostError):
        await meta.claim_garbage(stale, 0, 10, 86400)
    with pytest.raises(LeaseLostError):
        await meta.set_compaction_checkpoint(stale, "t", 0, CompactionCheckpoint(5, None))
    assert (await meta.partition_states(["t"]))[0].log_start_offset == 0
    assert len(await meta.list_segments("t", 0)) == 1
    assert (await meta.compaction_checkpoints("t"))[0] == CompactionCheckpoint()


async def test_retention_moves_the_log_start_and_releases_objects(meta: MetadataStore) -> None:
    """Retired segments leave the catalogue; their objects become garbage once unused."""
    await meta.create_topic("t", 2)
    # A packed object holds both partitions' first segments.
    await meta.commit_segments("packed", [spec(0, 5, 0), spec(1, 3, 100)])
    await meta.commit_segments("later", [spec(0, 4)])
    held = await lease(meta)
    retired = await meta.retire_segments(held, "t", 0, 5)
    assert (retired.segments, retired.bytes, retired.log_start_offset) == (1, 100, 5)
    assert [s.base_offset for s in await meta.list_segments("t", 0)] == [5]
    states = await meta.partition_states(["t"])
    assert [(s.log_start_offset, s.high_watermark) for s in states] == [(5, 9), (0, 3)]
    # Partition 1 still points into the packed object: not garbage yet.
    assert await meta.claim_garbage(held, 0, 100, 86400) == []
    await meta.retire_segments(held, "t", 1, 3)
    garbage = await meta.claim_garbage(held, 0, 100, 86400)
    assert [(g.key, g.size) for g in garbage] == [("packed", 200)]
    # Handed out until confirmed deleted; then still known as committed.
    assert await meta.claim_garbage(held, 0, 100, 86400) == garbage
    await meta.confirm_deleted(["packed"])
    assert await meta.claim_garbage(held, 0, 100, 86400) == []
    assert await meta.committed_object_keys(["packed"]) == {"packed"}
    # Retention never moves the log start down or past the high watermark.
    assert (await meta.retire_segments(held, "t", 0, 2)).log_start_offset == 5
    assert (await meta.retire_segments(held, "t", 0, 99)).log_start_offset == 9
    assert (await meta.partition_states(["t"]))[0].log_start_offset == 9


async def test_garbage_waits_out_its_grace_and_rows_are_forgotten(meta: MetadataStore) -> None:
    """Released objects are claimed only after the grace; deleted rows go after a while."""
    await meta.create_topic("t", 1)
    await meta.commit_segments("o1", [spec(0, 5)])
    killed = await meta.acquire_lease("killed", 60)
    assert killed is not None
    await meta.retire_segments(killed, "t", 0, 5)
    assert await meta.claim_garbage(killed, 3600, 100, 86400) == []
    assert [g.key for g in await meta.claim_garbage(killed, 0, 100, 86400)] == ["o1"]
    # Claimed, never confirmed (the maintainer was killed, its lease ran
    # out): the next one finishes it.
    await meta.release_lease(killed)
    held = await lease(meta)
    assert [g.key for g in await meta.claim_garbage(held, 3600, 100, 86400)] == ["o1"]
    await meta.confirm_deleted(["o1"])
    # Forgotten (forget_after=0): the key is no longer known as committed.
    assert await meta.claim_garbage(held, 0, 100, 0) == []
    assert await meta.committed_object_keys(["o1"]) == set()


async def test_a_rewrite_replaces_segments_in_one_step(meta: MetadataStore) -> None:
    """replace_segments swaps old segments for new ones in a new object, once."""
    await meta.create_topic("t", 1)
    await meta.commit_segments("a", [spec(0, 5)])
    await meta.commit_segments("b", [spec(0, 5)])
    old = await meta.list_segments("t", 0)
    merged = SegmentInfo("t", 0, 0, 8, "m", 0, 150, 76, 1, 2, end_offset=10, created_at=7.0)
    held = await lease(meta)
    assert await meta.replace_segments(held, "m", 150, old, [merged])
    assert await meta.list_segments("t", 0) == [merged]
    assert await meta.list_segments("t", 0, 9) == [merged]
    # The same call again (a lost answer) is done already.
    assert await meta.replace_segments(held, "m", 150, old, [merged])
    # Old segments that are gone: nothing happens.
    other = SegmentInfo("t", 0, 0, 10, "n", 0, 150, 76, 1, 2)
    assert not await meta.replace_segments(held, "n", 150, old, [other])
    assert await meta.list_segments("t", 0) == [merged]
    assert [g.key for g in await meta.claim_garbage(held, 0, 100, 86400)] == ["a", "b"]
    # A producer's late retry of a commit whose segments were rewritten is told so.
    with pytest.raises(MetadataError, match="maintenance has since removed or rewritten"):
        await meta.commit_segments("a", [spec(0, 5)])


async def test_a_rewrite_that_changes_the_covered_offsets_is_refused(
    meta: MetadataStore,
) -> None:
    """New segments must lie within the old ones and in the new object."""
    await meta.create_topic("t", 1)
    await meta.commit_segments("a", [spec(0, 5)])
    old = await meta.list_segments("t", 0)
    held = await lease(meta)
    beyond = SegmentInfo("t", 0, 0, 5, "m", 0, 100, 40, 1, 2, end_offset=6)
    with pytest.raises(InvalidArgumentError, match="not within"):
        await meta.replace_segments(held, "m", 100, old, [beyond])
    with pytest.raises(InvalidArgumentError, match="object"):
        await meta.replace_segments(held, "x", 100, old, [old[0]])
    # Everything removed: no new object.
    assert await meta.replace_segments(held, None, 0, old, [])
    assert await meta.list_segments("t", 0) == []


async def test_checkpoints_and_deleted_topics(meta: MetadataStore) -> None:
    """Compaction checkpoints are kept per partition; a deleted topic's objects are released."""
    await meta.create_topic("t", 2)
    await meta.commit_segments("o1", [spec(0, 5), spec(1, 5, 100)])
    held = await lease(meta)
    assert await meta.compaction_checkpoints("t") == {
        0: CompactionCheckpoint(), 1: CompactionCheckpoint(),
    }  # fmt: skip
    await meta.set_compaction_checkpoint(held, "t", 1, CompactionCheckpoint(5, 12.5))
    assert (await meta.compaction_checkpoints("t"))[1] == CompactionCheckpoint(5, 12.5)
    await meta.delete_topic("t")
    assert [g.key for g in await meta.claim_garbage(held, 0, 100, 86400)] == ["o1"]
    assert (await meta.retire_segments(held, "t", 0, 5)).segments == 0
