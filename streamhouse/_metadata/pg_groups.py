"""PostgreSQL's consumer groups: committed offsets and membership (``groups``).

A mixin of PostgresMetadataStore (which brings ``_run``). A heartbeat is one
transaction that first locks its group's row (``SELECT ... FOR UPDATE``):
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


class _Tx:
    """``groups.Tx`` on a PostgreSQL connection inside a transaction."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql.replace("?", "%s"), params).fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        return self.conn.execute(sql.replace("?", "%s"), params).rowcount

    def lock_group(self, group_id: str, *, exclusive: bool) -> int:
        if not exclusive:  # a commit: a missing group has no members to commit as
            row = self.conn.execute(
                "SELECT epoch FROM consumer_groups WHERE group_id = %s FOR SHARE", (group_id,)
            ).fetchone()
            return 0 if row is None else int(row[0])
        self.conn.execute(
            "INSERT INTO consumer_groups (group_id, epoch) VALUES (%s, 0) "
            "ON CONFLICT (group_id) DO NOTHING",
            (group_id,),
        )
        row = self.conn.execute(
            "SELECT epoch FROM consumer_groups WHERE group_id = %s FOR UPDATE", (group_id,)
        ).fetchone()
        assert row is not None
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
    ) -> None:
        check_commit_args(group_id, offsets, metadata, member)
        params = {
            "topics": [tp.topic for tp in offsets],
            "partitions": [tp.partition for tp in offsets],
            "offsets": list(offsets.values()),
            "group": group_id,
            "metadata": metadata,
            "at": time.time(),
        }

        def write(conn: Conn) -> None:
            bad = conn.execute(q.COMMIT_OFFSETS, params).fetchone()
            if bad is not None:
                topic = conn.execute(q.GET_TOPIC, (bad[0],)).fetchone()
                raise partition_error(bad[0], None if topic is None else topic[1], bad[1])

        if member is None:
            # One statement, its own transaction.
            await self._run(write)
            return

        def commit(tx: _Tx, now: float) -> None:
            groups.check_commit(tx, now, group_id, member, list(offsets))
            write(tx.conn)

        await self._group_tx(commit)

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

    async def delete_group(self, group_id: str) -> None:
        check_group_id(group_id)

        def delete(conn: Conn) -> None:
            for statement in q.DELETE_GROUP:
                conn.execute(statement, (group_id,))

        await self._run(delete, write=True)

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
