"""PostgreSQL's consumer groups: committed offsets and membership (``groups``).

A mixin of PostgresMetadataStore (which brings ``_run``). A heartbeat is one
transaction that first locks its group's row (an upsert that makes it if missing):
heartbeats of one group run one at a time, those of other groups and every
segment commit go on beside them. A member's commit takes the same row
``FOR SHARE``, so ownership cannot move between its check and its write.
"Now" is the server's clock (``clock_timestamp()``), never the caller's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg

from .._errors import CommitFailedError
from .._names import check_group_id
from .._types import TopicPartition
from . import groups
from . import pg_queries as q
from .common import check_commit_args, partition_error
from .groups import GroupAssignment, HeartbeatRequest, MemberInfo, MemberRef
from .protocol import CommittedOffset

__all__ = ["PostgresGroups"]

T = TypeVar("T")
Conn = psycopg.Connection[Any]

_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"
_SHARE_GROUP = "SELECT epoch FROM consumer_groups WHERE group_id = %s FOR SHARE"
_LOCK_GROUP = (
    "INSERT INTO consumer_groups AS g (group_id, epoch) VALUES (%s, 0) "
    "ON CONFLICT (group_id) DO UPDATE SET epoch = g.epoch RETURNING g.epoch"
)


def _pg(sql: str) -> str:
    """A query of ``groups`` (qmark placeholders) in psycopg's."""
    return sql.replace("?", "%s")


class _Tx:
    """``groups.Tx`` on a PostgreSQL connection inside a transaction."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(_pg(sql), params).fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        return self.conn.execute(_pg(sql), params).rowcount

    def lock_group(self, group_id: str, *, exclusive: bool) -> int:
        if not exclusive:  # a commit: a missing group has no members to commit as
            row = self.conn.execute(_SHARE_GROUP, (group_id,)).fetchone()
            return 0 if row is None else int(row[0])
        # One statement makes the row if missing and locks it: as two (an
        # insert that did nothing, then SELECT ... FOR UPDATE), a
        # delete_group committed in between left nothing to lock, and the
        # heartbeat failed with an AssertionError that stopped its consumer.
        row = self.conn.execute(_LOCK_GROUP, (group_id,)).fetchone()
        assert row is not None  # (an upsert with RETURNING returns its row)
        return int(row[0])


class PostgresGroups:
    """The offsets and membership part of the MetadataStore protocol, on PostgreSQL."""

    clock_offset: float = 0.0
    """Seconds added to the server's clock by membership (tests move time with it)."""

    async def _run(self, fn: Callable[[Conn], T], *, write: bool = False) -> T:
        raise NotImplementedError  # pragma: no cover - PostgresMetadataStore's

    async def _group_tx(self, fn: Callable[[_Tx, float], T]) -> T:
        offset = self.clock_offset

        def run(conn: Conn) -> T:
            row = conn.execute(_NOW).fetchone()
            assert row is not None
            return fn(_Tx(conn), float(row[0]) + offset)

        return await self._run(run, write=True)

    # -- committed offsets -----------------------------------------------------

    async def commit_offsets(
        self,
        group_id: str,
        offsets: Mapping[TopicPartition, int],
        metadata: str = "",
        *,
        member: MemberRef | None = None,
        if_empty: bool = False,
    ) -> None:
        check_commit_args(group_id, offsets, metadata, member, if_empty)
        params = {
            "topics": [tp.topic for tp in offsets],
            "partitions": [tp.partition for tp in offsets],
            "offsets": list(offsets.values()),
            "group": group_id,
            "metadata": metadata,
            "at": time.time(),
        }

        def refuse_bad(conn: Conn, written: psycopg.Cursor[Any]) -> int:
            """How many rows the write wrote; PartitionNotFoundError (or
            TopicNotFoundError) if it names a partition that does not exist."""
            found = written.fetchone()
            assert found is not None
            bad_topic, bad_partition, count = found
            if bad_topic is not None:
                topic = conn.execute(q.GET_TOPIC, (bad_topic,)).fetchone()
                raise partition_error(bad_topic, None if topic is None else topic[1], bad_partition)
            return int(count)

        if member is None and not if_empty:
            # One statement, its own transaction.
            await self._run(lambda conn: refuse_bad(conn, conn.execute(q.COMMIT_OFFSETS, params)))
            return
        if member is None:

            def outsider(tx: _Tx, now: float) -> None:
                groups.refuse_if_members(tx, now, group_id, groups.OUTSIDER_COMMIT)
                refuse_bad(tx.conn, tx.conn.execute(q.COMMIT_OFFSETS, params))

            await self._group_tx(outsider)
            return
        offset = self.clock_offset
        member_params = {
            **params, "member": member.member_id, "epoch": member.epoch, "clock_offset": offset,
        }  # fmt: skip

        def commit(conn: Conn) -> None:
            # check_commit's statements and the write, in one round trip (a
            # pipeline): each still runs after the one before, on its own
            # snapshot, so what is judged is read after the group's lock is
            # shared, as in check_commit. The write checks the same rows
            # itself and writes nothing for a refused member (no lock on the
            # offsets, no deadlock with the partition's owner); judge_commit
            # says why. With BEGIN and COMMIT, 3 round trips where there were
            # 7: through a 1 ms round trip, a member's commit() went from
            # 18.8-20.6 to 9.1-9.9 ms (median); on loopback, no change.
            with conn.pipeline():
                clock = conn.execute(_NOW)
                conn.execute(_SHARE_GROUP, (group_id,))
                row = conn.execute(_pg(groups.MEMBER_ROW), (group_id, member.member_id))
                owners = conn.execute(_pg(groups.OWNERS), (group_id,))
                written = conn.execute(q.COMMIT_MEMBER_OFFSETS, member_params)
            found = clock.fetchone()
            assert found is not None
            groups.judge_commit(
                float(found[0]) + offset,
                group_id,
                member,
                list(offsets),
                row.fetchall(),
                owners.fetchall(),
            )
            if refuse_bad(conn, written) != len(offsets):  # its session ran out meanwhile
                raise CommitFailedError(
                    f"member {member.member_id!r} of group {group_id!r} is not in the group at "
                    f"epoch {member.epoch} (its session ran out): nothing was committed"
                )

        await self._run(commit, write=True)

    async def fetch_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, CommittedOffset]:
        check_group_id(group_id)

        def fetch(conn: Conn) -> dict[TopicPartition, CommittedOffset]:
            found = {
                TopicPartition(topic, partition): CommittedOffset(offset, metadata, at)
                for topic, partition, offset, metadata, at in conn.execute(
                    q.FETCH_OFFSETS, (group_id,)
                )
            }
            if partitions is None:
                return found
            return {tp: found[tp] for tp in partitions if tp in found}

        return await self._run(fetch)

    async def list_groups(self) -> list[str]:
        return await self._run(lambda conn: [r[0] for r in conn.execute(q.LIST_GROUPS)])

    async def delete_group(self, group_id: str, *, if_empty: bool = False) -> None:
        check_group_id(group_id)

        def delete(tx: _Tx, now: float) -> None:
            if if_empty:
                groups.refuse_if_members(tx, now, group_id, "deleting it")
            for statement in q.DELETE_GROUP:
                tx.conn.execute(statement, (group_id,))

        await self._group_tx(delete)

    # -- membership ------------------------------------------------------------

    async def heartbeat(self, group_id: str, request: HeartbeatRequest) -> GroupAssignment:
        check_group_id(group_id)
        return await self._group_tx(lambda tx, now: groups.heartbeat(tx, now, group_id, request))

    async def leave_group(self, group_id: str, member: MemberRef) -> None:
        check_group_id(group_id)
        await self._group_tx(lambda tx, now: groups.leave(tx, now, group_id, member))

    async def describe_group_members(self, group_id: str) -> list[MemberInfo]:
        check_group_id(group_id)
        return await self._group_tx(lambda tx, now: groups.describe_members(tx, now, group_id))
