"""Group membership in the metadata store, on SQLite and on PostgreSQL (the
``meta`` fixture): joins, heartbeats, hand-overs, expiry, leaving, static
members, fencing of commits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from streamhouse import (
    CommitFailedError,
    GroupNotEmptyError,
    InvalidArgumentError,
    MetadataStore,
    SQLiteMetadataStore,
    TopicPartition,
)
from streamhouse._metadata.groups import (
    GroupAssignment,
    HeartbeatRequest,
    MemberRef,
    assign,
)

from .test_sqlite_schema import first_wave_file

pytestmark = pytest.mark.anyio


def tps(topic: str, *partitions: int) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(topic, p) for p in partitions)


async def beat(
    meta: MetadataStore,
    member: str,
    epoch: int = 0,
    *,
    topics: tuple[str, ...] = ("t",),
    released: frozenset[TopicPartition] = frozenset(),
    instance: str | None = None,
    session: float = 10.0,
) -> GroupAssignment:
    request = HeartbeatRequest(member, epoch, topics, session, instance, released)
    return await meta.heartbeat("g", request)


async def settle(meta: MetadataStore, answers: dict[str, GroupAssignment]) -> None:
    """Heartbeat every member, releasing what it must, until nothing moves."""
    for _ in range(10):
        moved = False
        for name, last in list(answers.items()):
            answer = await beat(meta, name, last.epoch, released=last.revoke)
            moved |= bool(last.revoke or answer.revoke) or answer.owned != last.owned
            answers[name] = answer
        if not moved:
            return
    raise AssertionError(f"no settling: {answers}")


async def test_a_freed_partition_is_a_members_only_once_it_is_told(
    meta: MetadataStore,
) -> None:
    """A partition freed by a leave is kept for the member meant to have it,
    which owns it (and may commit it) from the heartbeat that tells it, not
    before: a commit of a partition it has not heard of is refused."""
    await meta.create_topic("t", 1)
    a, b = await beat(meta, "a"), await beat(meta, "b")
    assert (a.owned, b.owned) == (tps("t", 0), frozenset())
    await meta.leave_group("g", MemberRef("a", a.epoch))
    with pytest.raises(CommitFailedError, match=r"does not own t\[0\]"):
        await meta.commit_offsets("g", {TopicPartition("t", 0): 5}, member=MemberRef("b", b.epoch))
    assert await meta.fetch_offsets("g") == {}
    (described,) = await meta.describe_group_members("g")
    assert described.assignment == frozenset()
    told = await beat(meta, "b", b.epoch)
    assert told.owned == tps("t", 0)
    await meta.commit_offsets("g", {TopicPartition("t", 0): 5}, member=MemberRef("b", b.epoch))
    assert (await meta.fetch_offsets("g"))[TopicPartition("t", 0)].offset == 5


async def test_one_member_owns_every_partition(meta: MetadataStore) -> None:
    """The first member of a group gets every partition of its topics at once."""
    await meta.create_topic("t", 4)
    answer = await beat(meta, "a")
    assert answer.epoch > 0
    assert answer.owned == tps("t", 0, 1, 2, 3)
    assert answer.revoke == frozenset()
    assert not answer.fenced


async def test_a_second_member_gets_half_after_the_first_releases(meta: MetadataStore) -> None:
    """A joiner gets partitions only after their owner released them (revoke first)."""
    await meta.create_topic("t", 4)
    a = await beat(meta, "a")
    b = await beat(meta, "b")
    assert b.owned == frozenset()  # a still owns everything
    a = await beat(meta, "a", a.epoch)
    assert len(a.revoke) == 2
    assert a.revoke <= a.owned
    a = await beat(meta, "a", a.epoch, released=a.revoke)
    assert len(a.owned) == 2
    assert a.revoke == frozenset()
    b = await beat(meta, "b", b.epoch)
    assert b.owned == tps("t", 0, 1, 2, 3) - a.owned
    members = await meta.describe_group_members("g")
    assert {m.member_id: m.assignment for m in members} == {"a": a.owned, "b": b.owned}


async def test_a_leaving_member_hands_over_at_once(meta: MetadataStore) -> None:
    """After leave_group, the others take its partitions at their next heartbeat."""
    await meta.create_topic("t", 6)
    answers = {"a": await beat(meta, "a"), "b": await beat(meta, "b"), "c": await beat(meta, "c")}
    await settle(meta, answers)
    assert sorted(len(a.owned) for a in answers.values()) == [2, 2, 2]
    await meta.leave_group("g", MemberRef("c", answers.pop("c").epoch))
    await settle(meta, answers)
    assert answers["a"].owned | answers["b"].owned == tps("t", *range(6))
    assert len(answers["a"].owned) == len(answers["b"].owned) == 3


async def test_a_member_whose_session_ran_out_is_fenced(meta: MetadataStore) -> None:
    """By the database's clock, a silent member expires, its partitions move and
    its commits fail, writing nothing."""
    await meta.create_topic("t", 2)
    a = await beat(meta, "a", session=5.0)
    b = await beat(meta, "b", session=30.0)
    tp = sorted(a.owned)[0]
    await meta.commit_offsets("g", {tp: 3}, member=MemberRef("a", a.epoch))
    meta.clock_offset = 6.0  # type: ignore[attr-defined]
    b = await beat(meta, "b", b.epoch)
    assert b.owned == tps("t", 0, 1)
    with pytest.raises(CommitFailedError, match=r"'a'.*not in the group"):
        await meta.commit_offsets("g", {tp: 9}, member=MemberRef("a", a.epoch))
    assert (await meta.fetch_offsets("g"))[tp].offset == 3
    fenced = await beat(meta, "a", a.epoch)
    assert fenced.fenced
    assert fenced.owned == frozenset()
    again = await beat(meta, "a")
    assert not again.fenced
    assert again.epoch > a.epoch


async def test_a_commit_of_a_partition_not_owned_writes_nothing(meta: MetadataStore) -> None:
    """A live member committing a partition it does not own fails, all of it."""
    await meta.create_topic("t", 2)
    answers = {"a": await beat(meta, "a"), "b": await beat(meta, "b")}
    await settle(meta, answers)
    mine, theirs = sorted(answers["a"].owned)[0], sorted(answers["b"].owned)[0]
    with pytest.raises(CommitFailedError, match="not in the group at epoch 1000"):
        await meta.commit_offsets("g", {mine: 1}, member=MemberRef("a", 1000))
    with pytest.raises(CommitFailedError, match=rf"does not own t\[{theirs.partition}\]"):
        await meta.commit_offsets(
            "g", {mine: 1, theirs: 1}, member=MemberRef("a", answers["a"].epoch)
        )
    assert await meta.fetch_offsets("g") == {}
    await meta.commit_offsets("g", {mine: 1}, member=MemberRef("a", answers["a"].epoch))
    await meta.commit_offsets("g", {theirs: 7})  # manual assignment: unconditional
    assert {tp: c.offset for tp, c in (await meta.fetch_offsets("g")).items()} == {
        mine: 1, theirs: 7,
    }  # fmt: skip


async def test_an_outsider_writes_or_deletes_offsets_if_empty_only_while_no_member_lives(
    meta: MetadataStore,
) -> None:
    """``if_empty`` (Admin.reset_offsets, delete_group): refused, naming the
    member, and nothing written or deleted while one lives, checked in the
    write's own transaction; once its session ran out, both go through."""
    await meta.create_topic("t", 2)
    tp = TopicPartition("t", 0)
    await meta.commit_offsets("g", {tp: 3})
    a = await beat(meta, "a", session=5.0)
    with pytest.raises(GroupNotEmptyError, match=r"group 'g' has 1 live member\(s\) \(a\)"):
        await meta.commit_offsets("g", {tp: 0}, if_empty=True)
    with pytest.raises(GroupNotEmptyError, match=r"\(a\).*deleting it"):
        await meta.delete_group("g", if_empty=True)
    assert {t: c.offset for t, c in (await meta.fetch_offsets("g")).items()} == {tp: 3}
    assert [m.member_id for m in await meta.describe_group_members("g")] == ["a"]
    with pytest.raises(InvalidArgumentError, match="if_empty is for a commit by no member"):
        await meta.commit_offsets("g", {tp: 0}, member=MemberRef("a", a.epoch), if_empty=True)
    meta.clock_offset = 6.0  # type: ignore[attr-defined]  (a's session ran out)
    await meta.commit_offsets("g", {tp: 0}, if_empty=True)
    assert (await meta.fetch_offsets("g"))[tp].offset == 0
    await meta.delete_group("g", if_empty=True)
    assert await meta.fetch_offsets("g") == {}


async def test_a_static_member_gets_its_partitions_back(meta: MetadataStore) -> None:
    """A member with an instance id that leaves and returns within its session
    gets the same partitions, and nobody else moves."""
    await meta.create_topic("t", 4)
    answers = {
        "a1": await beat(meta, "a1", instance="app-a"),
        "b": await beat(meta, "b"),
    }
    await settle(meta, answers)
    before = answers["a1"].owned
    await meta.leave_group("g", MemberRef("a1", answers["a1"].epoch))
    b = await beat(meta, "b", answers["b"].epoch)
    assert b.owned == answers["b"].owned
    assert b.revoke == frozenset()
    back = await beat(meta, "a2", instance="app-a")
    assert back.owned == before
    assert back.revoke == frozenset()
    with pytest.raises(CommitFailedError):  # the old run's member id is fenced
        await meta.commit_offsets("g", {sorted(before)[0]: 1}, member=MemberRef("a1", 1))
    assert (await beat(meta, "b", b.epoch)).owned == b.owned


async def test_new_partitions_and_topics_are_picked_up(meta: MetadataStore) -> None:
    """Partitions of a topic created after the join are assigned at the next heartbeat."""
    await meta.create_topic("t", 2)
    a = await beat(meta, "a", topics=("t", "u"))
    assert a.owned == tps("t", 0, 1)
    await meta.create_topic("u", 1)
    a = await beat(meta, "a", a.epoch, topics=("t", "u"))
    assert a.owned == tps("t", 0, 1) | tps("u", 0)
    await meta.delete_topic("u")
    a = await beat(meta, "a", a.epoch, topics=("t", "u"))
    assert a.revoke == tps("u", 0)  # given up first: nobody else may get u[0] meanwhile
    await meta.create_topic("u", 1)
    b = await beat(meta, "b", topics=("t", "u"))
    assert tps("u", 0) - b.owned == tps("u", 0)
    a = await beat(meta, "a", a.epoch, topics=("t", "u"), released=a.revoke)
    assert tps("u", 0) - a.owned == tps("u", 0)  # released: the new u[0] is dealt afresh


async def test_bad_heartbeats_are_refused(meta: MetadataStore) -> None:
    """Malformed member ids, instance ids and timeouts raise InvalidArgumentError."""
    with pytest.raises(InvalidArgumentError, match="member_id"):
        HeartbeatRequest("", 0, ("t",), 1.0)
    with pytest.raises(InvalidArgumentError, match="group_instance_id"):
        HeartbeatRequest("m", 0, ("t",), 1.0, "\x00")
    with pytest.raises(InvalidArgumentError, match="session_timeout"):
        HeartbeatRequest("m", 0, ("t",), 0.0)
    with pytest.raises(InvalidArgumentError, match="member"):
        await meta.commit_offsets("g", {}, member="m")  # type: ignore[arg-type]


def test_the_assignor_is_balanced_and_sticky() -> None:
    """Counts differ by at most one; only the surplus moves when a member joins."""
    parts = [TopicPartition("t", p) for p in range(10)]
    subs = {m: frozenset({"t"}) for m in ("a", "b", "c")}
    first = assign(parts, subs, {})
    counts = sorted(list(first.values()).count(m) for m in subs)
    assert counts == [3, 3, 4]
    subs["d"] = frozenset({"t"})
    second = assign(parts, subs, first)
    assert sorted(list(second.values()).count(m) for m in subs) == [2, 2, 3, 3]
    assert sum(first[tp] != second[tp] for tp in parts) == 2
    only_u = assign([*parts, TopicPartition("u", 0)], {"a": frozenset({"u"})}, {})
    assert only_u == {TopicPartition("u", 0): "a"}


async def test_a_first_wave_file_migrates_to_groups(tmp_path: Path) -> None:
    """A first-wave SQLite file gains the group tables and serves heartbeats."""
    path = tmp_path / "old.db"
    first_wave_file(path)
    store = SQLiteMetadataStore(path)
    answer = await store.heartbeat("g", HeartbeatRequest("m", 0, ("old",), 5.0))
    assert answer.owned == tps("old", 0, 1)
    await store.aclose()
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"consumer_groups", "group_members", "group_partitions"} <= tables
