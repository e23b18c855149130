"""SQLite's consumer groups: committed offsets and membership (``groups``).

A mixin of SQLiteMetadataStore (which brings ``_run``). Every write is one
``BEGIN IMMEDIATE`` transaction: it holds the database's write lock from
its first statement, so a heartbeat's read of the group and its writes
never interleave with another member's, in this process or another. "Now"
is the database's clock (``julianday('now')``), read inside the
transaction, never the caller's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .._names import check_group_id
from .._types import TopicPartition
from . import groups
from .common import check_commit_args, partition_error
from .groups import GroupAssignment, HeartbeatRequest, MemberInfo, MemberRef
from .protocol import CommittedOffset
from .sqlite_schema import write_transaction

__all__ = ["SQLiteGroups"]

T = TypeVar("T")

# Seconds since the epoch by SQLite's clock (julianday has millisecond precision).
_NOW = "SELECT (julianday('now') - 2440587.5) * 86400.0"


class _Tx:
    """``groups.Tx`` on a SQLite connection inside ``BEGIN IMMEDIATE``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def lock_group(self, group_id: str, *, exclusive: bool) -> int:
        # BEGIN IMMEDIATE holds the write lock already: the row is only made.
        self.conn.execute(
            "INSERT INTO consumer_groups (group_id, epoch) VALUES (?, 0) "
            "ON CONFLICT (group_id) DO NOTHING",
            (group_id,),
        )
        (epoch,) = self.conn.execute(
            "SELECT epoch FROM consumer_groups WHERE group_id = ?", (group_id,)
        ).fetchone()
        return int(epoch)


def _check_partition(conn: sqlite3.Connection, topic: str, partition: int) -> None:
    row = conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
    if row is None or not 0 <= partition < row[0]:
        raise partition_error(topic, None if row is None else row[0], partition)


class SQLiteGroups:
    """The offsets and membership part of the MetadataStore protocol, on SQLite."""

    clock_offset: float = 0.0
    """Seconds added to the database's clock by membership (tests move time with it)."""

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # pragma: no cover - SQLiteMetadataStore's

    async def _group_tx(self, fn: Callable[[_Tx, float], T]) -> T:
        offset = self.clock_offset

        def run(conn: sqlite3.Connection) -> T:
            (now,) = conn.execute(_NOW).fetchone()
            return fn(_Tx(conn), float(now) + offset)

        return await self._run(lambda conn: write_transaction(conn, run))

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
        committed_at = time.time()

        def commit(tx: _Tx, now: float) -> None:
            conn = tx.conn
            for tp in offsets:
                _check_partition(conn, tp.topic, tp.partition)
            if member is not None:
                groups.check_commit(tx, now, group_id, member, list(offsets))
            if if_empty:
                groups.refuse_if_members(tx, now, group_id, groups.OUTSIDER_COMMIT)
            conn.executemany(
                'INSERT INTO consumer_offsets (group_id, topic, partition, "offset", metadata, '
                "committed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (group_id, topic, partition) "
                'DO UPDATE SET "offset" = excluded."offset", metadata = excluded.metadata, '
                "committed_at = excluded.committed_at",
                [
                    (group_id, tp.topic, tp.partition, offset, metadata, committed_at)
                    for tp, offset in offsets.items()
                ],
            )

        await self._group_tx(commit)

    async def fetch_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, CommittedOffset]:
        check_group_id(group_id)

        def fetch(conn: sqlite3.Connection) -> dict[TopicPartition, CommittedOffset]:
            rows = conn.execute(
                'SELECT topic, partition, "offset", metadata, committed_at FROM consumer_offsets '
                "WHERE group_id = ?",
                (group_id,),
            )
            found = {
                TopicPartition(topic, partition): CommittedOffset(offset, metadata, at)
                for topic, partition, offset, metadata, at in rows
            }
            if partitions is None:
                return found
            return {tp: found[tp] for tp in partitions if tp in found}

        return await self._run(fetch)

    async def list_groups(self) -> list[str]:
        return await self._run(
            lambda conn: [
                row[0]
                for row in conn.execute(
                    "SELECT group_id FROM consumer_offsets UNION "
                    "SELECT group_id FROM group_members ORDER BY group_id"
                )
            ]
        )

    async def delete_group(self, group_id: str, *, if_empty: bool = False) -> None:
        check_group_id(group_id)

        def delete(tx: _Tx, now: float) -> None:
            if if_empty:
                groups.refuse_if_members(tx, now, group_id, "deleting it")
            for table in ("consumer_offsets", "group_members", "group_partitions",
                          "consumer_groups"):  # fmt: skip
                tx.conn.execute(f"DELETE FROM {table} WHERE group_id = ?", (group_id,))

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
