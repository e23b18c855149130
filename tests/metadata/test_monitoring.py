"""monitoring_snapshot: every partition and committed offset, in one query."""

from __future__ import annotations

import pytest

from streamhouse import InvalidArgumentError, MetadataStore, TopicPartition
from streamhouse._metadata.groups import HeartbeatRequest, MemberRef
from streamhouse._metadata.protocol import GroupOffset, PartitionSummary, SegmentSpec

pytestmark = pytest.mark.anyio


def spec(partition: int, count: int, length: int, first_ts: int) -> SegmentSpec:
    return SegmentSpec("t", partition, count, 0, length, 40, first_ts, first_ts + 9)


async def test_the_snapshot_holds_bounds_bytes_offsets_and_timestamps(
    meta: MetadataStore,
) -> None:
    """Each partition's bounds and bytes, each offset with its segment's first timestamp."""
    await meta.create_topic("t", 2)
    await meta.commit_segments("o1", [spec(0, 5, 100, 1000)])  # offsets 0-4
    await meta.commit_segments("o2", [spec(0, 5, 150, 2000), spec(1, 3, 70, 3000)])  # 5-9; 0-2
    await meta.commit_offsets("g", {TopicPartition("t", 0): 7, TopicPartition("t", 1): 3})
    await meta.commit_offsets("h", {TopicPartition("t", 0): 0})
    snap = await meta.monitoring_snapshot()
    assert sorted(snap.partitions, key=lambda p: p.partition) == [
        PartitionSummary("t", 0, 0, 10, 250),
        PartitionSummary("t", 1, 0, 3, 70),
    ]
    assert sorted(snap.offsets, key=lambda o: (o.group_id, o.partition)) == [
        GroupOffset("g", "t", 0, 7, 2000),  # in the second segment
        GroupOffset("g", "t", 1, 3, None),  # caught up: no record there
        GroupOffset("h", "t", 0, 0, 1000),
    ]
    assert snap.members == {}
    only_h = await meta.monitoring_snapshot(["h"])
    assert [o.group_id for o in only_h.offsets] == ["h"]
    assert len(only_h.partitions) == 2


async def test_a_bad_group_name_is_refused(meta: MetadataStore) -> None:
    """An empty group id, or one name instead of a list, is refused before any query."""
    with pytest.raises(InvalidArgumentError, match="group id"):
        await meta.monitoring_snapshot([""])
    with pytest.raises(InvalidArgumentError, match="groups"):
        await meta.monitoring_snapshot("g")


async def test_the_snapshot_counts_each_groups_live_members(meta: MetadataStore) -> None:
    """Members whose session has not run out, per group, in the same one query."""
    await meta.create_topic("t", 2)
    for group, member in (("g", "a"), ("g", "b"), ("h", "c")):
        await meta.heartbeat(group, HeartbeatRequest(member, 0, ("t",), 10.0, None, frozenset()))
    gone = await meta.heartbeat("h", HeartbeatRequest("gone", 0, ("t",), 10.0, None, frozenset()))
    await meta.leave_group("h", MemberRef("gone", gone.epoch))
    assert (await meta.monitoring_snapshot()).members == {"g": 2, "h": 1}
    assert (await meta.monitoring_snapshot(["h"])).members == {"h": 1}
