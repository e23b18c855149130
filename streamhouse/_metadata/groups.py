"""Consumer group membership on the metadata store (KIP-848's model on SQL).

The "group coordinator" is one transaction of the metadata store, the same
code on SQLite and PostgreSQL (each store runs it on its own connection,
``Tx``): a heartbeat, timed by the database's clock,

1. locks the group's row (SQLite: ``BEGIN IMMEDIATE`` already holds the
   write lock; PostgreSQL: an upsert of the group's row), so membership
   changes of one group are serialised and nothing else waits;
2. expires the members whose session ran out: their partitions are free
   (a crashed member's records after its last commit are read again);
3. checks the caller's epoch: a member unknown or at another epoch is
   *fenced* (it must drop everything and join again, epoch 0);
4. extends the caller's session, takes the partitions it released;
5. when membership or the partitions of the subscribed topics changed,
   bumps the group epoch; then computes the target (``assign``: balanced,
   sticky) and gives the caller the free partitions meant for it; a free
   partition meant for another member is kept for it (``pending_owner``)
   until its own heartbeat takes it, so a member owns, and may commit, only
   partitions it has been told of.

A partition has at most one owner, always: one that must go elsewhere is
marked ``pending_owner`` and stays with its owner until the owner releases
it (its next heartbeat, after the application's listener ran and its
offsets were committed). Revoke before assign, as in Kafka's cooperative
protocols, without a group-wide barrier.

A member's epoch is given at its join (the group epoch then) and never
changes while it lives: a commit is accepted only from a live member, at
its epoch, of partitions it owns (``check_commit``), so a zombie (its
session ran out, its partitions moved) cannot overwrite its successor's
offsets. An outsider's reset or deletion of the group's offsets
(``if_empty``) is refused while any member lives (``refuse_if_members``),
in the same transaction as the write, with the group's row locked as a
heartbeat locks it: a member joining meanwhile waits, then reads what was
written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from .._errors import CommitFailedError, GroupNotEmptyError, InvalidArgumentError
from .._names import check_group_id, check_topic_name
from .._types import TopicPartition
from .assignor import assign

__all__ = [
    "OUTSIDER_COMMIT",
    "GroupAssignment",
    "HeartbeatRequest",
    "MemberInfo",
    "MemberRef",
    "Tx",
    "assign",
    "check_commit",
    "describe_members",
    "heartbeat",
    "leave",
    "not_empty",
    "refuse_if_members",
]

JOIN_EPOCH = 0
"""The epoch a member heartbeats with to join (or rejoin after being fenced)."""


@attrs.frozen
class MemberRef:
    """Who commits: a member at the epoch it joined with."""

    member_id: str
    epoch: int


@attrs.frozen
class HeartbeatRequest:
    """A member's heartbeat (``epoch`` 0: join).

    ``released``: partitions the member gave up since its last heartbeat
    (it committed what it handed out and dropped what it held).
    """

    member_id: str
    epoch: int
    topics: tuple[str, ...]
    session_timeout: float
    instance_id: str | None = None
    released: frozenset[TopicPartition] = frozenset()

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.member_id, str) or not self.member_id.isprintable() \
                or not 0 < len(self.member_id) <= 255:  # fmt: skip
            raise InvalidArgumentError(f"member_id must be a printable str, not {self.member_id!r}")
        if self.instance_id is not None:
            check_instance_id(self.instance_id)
        for topic in self.topics:
            check_topic_name(topic)
        if not self.session_timeout > 0:
            raise InvalidArgumentError(
                f"session_timeout must be > 0 seconds, not {self.session_timeout!r}"
            )


@attrs.frozen
class GroupAssignment:
    """What a heartbeat answers.

    ``owned``: the partitions the member owns now (it may read and commit
    them); ``revoke``: those of them it must give up (commit, drop, then
    release them in a heartbeat); ``fenced``: the member is no longer in
    the group (its session ran out or another took its instance id): it
    owns nothing and must join again with epoch 0.
    """

    member_id: str
    epoch: int
    owned: frozenset[TopicPartition] = frozenset()
    revoke: frozenset[TopicPartition] = frozenset()
    fenced: bool = False
    group_epoch: int = 0


@attrs.frozen
class MemberInfo:
    """A member of a group, as ``describe_group_members`` reports it."""

    member_id: str
    instance_id: str | None
    epoch: int
    topics: tuple[str, ...]
    assignment: frozenset[TopicPartition]
    last_heartbeat: float
    expires_at: float


def check_instance_id(instance_id: object) -> str:
    """A static member's id: like a group id (printable, 1..255 characters)."""
    try:
        return check_group_id(instance_id)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(str(exc).replace("group id", "group_instance_id")) from None


class Tx(Protocol):
    """One open write transaction of a store, in ``?`` placeholders."""

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Execute; the number of rows changed."""
        ...

    def lock_group(self, group_id: str, *, exclusive: bool) -> int:
        """Make the group's row if missing, lock it, return its epoch."""
        ...


# -- the group's state, as one transaction sees it --------------------------------------


@attrs.define
class _Member:
    member_id: str
    instance_id: str | None
    epoch: int
    topics: tuple[str, ...]
    session_timeout: float
    expires_at: float
    last_heartbeat: float


@attrs.define
class _Slot:
    owner: str | None = None
    owner_epoch: int | None = None
    pending: str | None = None


_MEMBER_COLUMNS = (
    "member_id, instance_id, member_epoch, subscription, session_timeout, expires_at, "
    "last_heartbeat"
)


@attrs.define
class _Group:
    """Members and partition slots of one group, loaded, changed, written back."""

    tx: Tx
    group_id: str
    epoch: int
    members: dict[str, _Member]
    slots: dict[TopicPartition, _Slot]
    _loaded_slots: dict[TopicPartition, tuple[str | None, int | None, str | None]]
    changed: bool = False
    # Partitions of the subscribed topics (``refresh_partitions``).
    wanted: set[TopicPartition] = attrs.field(factory=set)

    @classmethod
    def load(cls, tx: Tx, group_id: str) -> _Group:
        epoch = tx.lock_group(group_id, exclusive=True)
        members = {}
        for row in tx.rows(
            f"SELECT {_MEMBER_COLUMNS} FROM group_members WHERE group_id = ?", (group_id,)
        ):
            member = _Member(row[0], row[1], row[2], tuple(json.loads(row[3])), *row[4:])
            members[member.member_id] = member
        slots = {
            TopicPartition(topic, partition): _Slot(owner, owner_epoch, pending)
            for topic, partition, owner, owner_epoch, pending in tx.rows(
                "SELECT topic, partition, owner, owner_epoch, pending_owner "
                "FROM group_partitions WHERE group_id = ?",
                (group_id,),
            )
        }
        loaded = {tp: (s.owner, s.owner_epoch, s.pending) for tp, s in slots.items()}
        return cls(tx, group_id, epoch, members, slots, loaded)

    def remove(self, member_id: str) -> None:
        """The member is gone: its partitions are free now."""
        del self.members[member_id]
        self.tx.run(
            "DELETE FROM group_members WHERE group_id = ? AND member_id = ?",
            (self.group_id, member_id),
        )
        for slot in self.slots.values():
            if slot.owner == member_id:
                slot.owner = slot.owner_epoch = None
            if slot.pending == member_id:
                slot.pending = None
        self.changed = True

    def expire(self, now: float) -> None:
        for member in [m for m in self.members.values() if m.expires_at <= now]:
            self.remove(member.member_id)

    def join(self, req: HeartbeatRequest, now: float) -> _Member:
        """A new member, or a static member back under a new member id.

        Its epoch is the group's epoch once this transaction is saved.
        """
        self.changed = True
        back = None
        if req.instance_id is not None:
            same = [m for m in self.members.values() if m.instance_id == req.instance_id]
            back = same[0] if same else None
        member = _Member(
            req.member_id, req.instance_id, self.epoch + 1, req.topics, req.session_timeout,
            now + req.session_timeout, now,
        )  # fmt: skip
        if back is not None:
            # Its partitions are the returning member's, at the new epoch; the
            # old member id is fenced (a zombie of the last run cannot commit).
            self.tx.run(
                "DELETE FROM group_members WHERE group_id = ? AND member_id = ?",
                (self.group_id, back.member_id),
            )
            del self.members[back.member_id]
            for slot in self.slots.values():
                if slot.owner == back.member_id:
                    slot.owner, slot.owner_epoch = member.member_id, member.epoch
                if slot.pending == back.member_id:
                    slot.pending = member.member_id
        elif req.member_id in self.members:
            self.remove(req.member_id)  # a member joining again under its id
        self.members[member.member_id] = member
        self.tx.run(
            f"INSERT INTO group_members (group_id, {_MEMBER_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self.group_id, *self._member_row(member)),
        )
        return member

    @staticmethod
    def _member_row(m: _Member) -> tuple[object, ...]:
        return (m.member_id, m.instance_id, m.epoch, json.dumps(list(m.topics)),
                m.session_timeout, m.expires_at, m.last_heartbeat)  # fmt: skip

    def touch(self, member: _Member, req: HeartbeatRequest, now: float) -> None:
        if member.topics != req.topics:
            self.changed = True
        member.topics = req.topics
        member.session_timeout = req.session_timeout
        member.expires_at = now + req.session_timeout
        member.last_heartbeat = now
        self.tx.run(
            "UPDATE group_members SET subscription = ?, session_timeout = ?, expires_at = ?, "
            "last_heartbeat = ? WHERE group_id = ? AND member_id = ?",
            (json.dumps(list(member.topics)), member.session_timeout, member.expires_at,
             now, self.group_id, member.member_id),
        )  # fmt: skip

    def release(self, member: _Member, partitions: frozenset[TopicPartition]) -> None:
        for tp in partitions:
            slot = self.slots.get(tp)
            if slot is not None and slot.owner == member.member_id:
                slot.owner = slot.owner_epoch = None

    def refresh_partitions(self) -> None:
        """Slots for every partition of a subscribed topic (``wanted``).

        A slot of a partition nobody wants any more (its topic was deleted,
        or unsubscribed) goes only once its owner has released it: until
        then the owner is told to give it up, and nobody else gets it, even
        if a topic of that name comes back meanwhile.
        """
        topics = {t for m in self.members.values() for t in m.topics}
        counts = dict(self.tx.rows("SELECT name, partitions FROM topics"))
        self.wanted = {
            TopicPartition(t, p) for t in topics if t in counts for p in range(int(counts[t]))
        }
        for tp in self.wanted - self.slots.keys():
            self.slots[tp] = _Slot()
            self.changed = True
        for tp in self.slots.keys() - self.wanted:
            self.slots[tp].pending = None
            if self.slots[tp].owner is None:
                del self.slots[tp]
                self.changed = True

    def rebalance(self, taker: str | None = None) -> None:
        """Move the targets (sticky, balanced). A free partition goes to its
        target if that is ``taker`` (the member heartbeating: this answer
        tells it); one meant for another member is kept for it (pending) and
        taken at its own heartbeat. Nobody owns, and so may commit, a
        partition it has not been told of."""
        subscriptions = {m.member_id: frozenset(m.topics) for m in self.members.values()}
        slots = {tp: s for tp, s in self.slots.items() if tp in self.wanted}
        current = {tp: s.pending or s.owner for tp, s in slots.items()}
        target = assign(list(slots), subscriptions, current)
        for tp, slot in slots.items():
            to = target.get(tp)
            if slot.owner is None and to is not None and to == taker:
                slot.owner, slot.owner_epoch = to, self.members[to].epoch
            slot.pending = to if to != slot.owner else None

    def save(self) -> None:
        if self.changed:
            self.epoch += 1
        self.tx.run(
            "UPDATE consumer_groups SET epoch = ? WHERE group_id = ?", (self.epoch, self.group_id)
        )
        for tp in self._loaded_slots.keys() - self.slots.keys():
            self.tx.run(
                "DELETE FROM group_partitions WHERE group_id = ? AND topic = ? AND partition = ?",
                (self.group_id, tp.topic, tp.partition),
            )
        for tp, s in self.slots.items():
            row = (s.owner, s.owner_epoch, s.pending)
            if self._loaded_slots.get(tp) != row:
                self.tx.run(
                    "INSERT INTO group_partitions (group_id, topic, partition, owner, "
                    "owner_epoch, pending_owner) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                    "(group_id, topic, partition) DO UPDATE SET owner = excluded.owner, "
                    "owner_epoch = excluded.owner_epoch, pending_owner = excluded.pending_owner",
                    (self.group_id, tp.topic, tp.partition, *row),
                )

    def answer(self, member: _Member) -> GroupAssignment:
        owned = frozenset(tp for tp, s in self.slots.items() if s.owner == member.member_id)
        revoke = frozenset(
            tp for tp in owned if self.slots[tp].pending is not None or tp not in self.wanted
        )
        return GroupAssignment(member.member_id, member.epoch, owned, revoke, False, self.epoch)


def heartbeat(tx: Tx, now: float, group_id: str, req: HeartbeatRequest) -> GroupAssignment:
    """One heartbeat, in the caller's open transaction (see the module docstring)."""
    group = _Group.load(tx, group_id)
    group.expire(now)
    if req.epoch == JOIN_EPOCH:
        member = group.join(req, now)
    else:
        found = group.members.get(req.member_id)
        if found is None or found.epoch != req.epoch:
            group.refresh_partitions()
            group.rebalance()
            group.save()
            return GroupAssignment(req.member_id, req.epoch, fenced=True, group_epoch=group.epoch)
        member = found
        group.touch(member, req, now)
    group.release(member, req.released)
    group.refresh_partitions()
    group.rebalance(taker=member.member_id)
    group.save()
    return group.answer(member)


def leave(tx: Tx, now: float, group_id: str, member: MemberRef) -> None:
    """The member leaves: its partitions go to the others at their next heartbeats.

    A static member (one with an instance id) keeps its slot and its
    partitions until its session runs out, so that it gets them back if it
    returns in time and nobody else is rebalanced meanwhile.
    """
    group = _Group.load(tx, group_id)
    group.expire(now)
    found = group.members.get(member.member_id)
    if found is not None and found.epoch == member.epoch and found.instance_id is None:
        group.remove(found.member_id)
    group.refresh_partitions()
    group.rebalance()
    group.save()


# What a member's commit is judged by, read after the group's lock is shared.
MEMBER_ROW = (
    "SELECT member_epoch, expires_at FROM group_members WHERE group_id = ? AND member_id = ?"
)
OWNERS = "SELECT topic, partition, owner FROM group_partitions WHERE group_id = ?"


def check_commit(
    tx: Tx, now: float, group_id: str, member: MemberRef, partitions: Sequence[TopicPartition]
) -> None:
    """Refuse (CommitFailedError) a commit by a member that is not live at its
    epoch or does not own every one of ``partitions``."""
    tx.lock_group(group_id, exclusive=False)
    row = tx.rows(MEMBER_ROW, (group_id, member.member_id))
    judge_commit(now, group_id, member, partitions, row, tx.rows(OWNERS, (group_id,)))


def judge_commit(
    now: float,
    group_id: str,
    member: MemberRef,
    partitions: Sequence[TopicPartition],
    row: Sequence[tuple[Any, ...]],
    owner_rows: Sequence[tuple[Any, ...]],
) -> None:
    """``check_commit``'s verdict on the rows of MEMBER_ROW and OWNERS."""
    if not row or row[0][0] != member.epoch or row[0][1] <= now:
        raise CommitFailedError(
            f"member {member.member_id!r} of group {group_id!r} is not in the group at epoch "
            f"{member.epoch} (its session ran out, it left, or its instance id was taken over): "
            "nothing was committed"
        )
    owners = {TopicPartition(topic, partition): owner for topic, partition, owner in owner_rows}
    foreign = sorted(tp for tp in partitions if owners.get(tp) != member.member_id)
    if foreign:
        named = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in foreign)
        raise CommitFailedError(
            f"member {member.member_id!r} of group {group_id!r} does not own {named} at epoch "
            f"{member.epoch}: nothing was committed"
        )


def describe_members(tx: Tx, now: float, group_id: str) -> list[MemberInfo]:
    """The live members of a group, by member id, with what each owns."""
    owned: dict[str, set[TopicPartition]] = {}
    for topic, partition, owner in tx.rows(
        "SELECT topic, partition, owner FROM group_partitions WHERE group_id = ? "
        "AND owner IS NOT NULL",
        (group_id,),
    ):
        owned.setdefault(owner, set()).add(TopicPartition(topic, partition))
    out = []
    for row in tx.rows(
        f"SELECT {_MEMBER_COLUMNS} FROM group_members WHERE group_id = ? AND expires_at > ? "
        "ORDER BY member_id",
        (group_id, now),
    ):
        member_id, instance_id, epoch, topics, _timeout, expires_at, last = row
        assignment = frozenset(owned.get(member_id, ()))
        topics = tuple(json.loads(topics))
        out.append(MemberInfo(member_id, instance_id, epoch, topics, assignment, last, expires_at))
    return out


# What an outsider's commit with if_empty is refused for (Admin.reset_offsets).
OUTSIDER_COMMIT = "writing its offsets from outside it"


def not_empty(group_id: str, member_ids: Sequence[str], doing: str) -> GroupNotEmptyError:
    """The error for ``doing`` to a group whose live members are ``member_ids``."""
    ids = ", ".join(sorted(member_ids)[:3])
    more = f" and {len(member_ids) - 3} more" if len(member_ids) > 3 else ""
    return GroupNotEmptyError(
        f"group {group_id!r} has {len(member_ids)} live member(s) ({ids}{more}): stop "
        f"them, or wait for their sessions to run out, before {doing}"
    )


def refuse_if_members(tx: Tx, now: float, group_id: str, doing: str) -> None:
    """Raise ``not_empty`` if the group has a live member; lock its row first,
    as a heartbeat does, so that none joins before the transaction ends."""
    tx.lock_group(group_id, exclusive=True)
    rows = tx.rows(
        "SELECT member_id FROM group_members WHERE group_id = ? AND expires_at > ?",
        (group_id, now),
    )
    if rows:
        raise not_empty(group_id, [row[0] for row in rows], doing)
