"""SQLite's maintenance calls: topic settings, the lease, retention, rewrites, garbage.

A mixin of SQLiteMetadataStore (which brings ``_run``). Every call that
changes the catalogue is one ``BEGIN IMMEDIATE`` transaction that starts
with the fence: it extends the caller's lease, and raises LeaseLostError
(rolling everything back) unless the lease is still the caller's, at the
caller's epoch. SQLite runs one writer at a time, so nothing can take the
lease between the fence and the commit.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs

from .._errors import LeaseLostError, TopicNotFoundError
from .._names import check_topic_name
from .common import (
    SEGMENT_COLUMNS,
    TOPIC_COLUMNS,
    check_lease_request,
    check_replacement,
    config_row,
    segment_row,
    topic_info,
)
from .protocol import (
    CompactionCheckpoint,
    Garbage,
    MaintenanceLease,
    RetiredSegments,
    SegmentInfo,
    TopicConfig,
    TopicInfo,
)
from .sqlite_schema import write_transaction

__all__ = ["SQLiteMaintenance"]

T = TypeVar("T")

_INSERT_SEGMENT = (
    f"INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


_DELETE_SEGMENT = (
    "DELETE FROM segments WHERE topic = ? AND partition = ? AND base_offset = ? "
    "AND object_key = ? AND position = ?"
)


_DELETE_SEGMENT = (
    "DELETE FROM segments WHERE topic = ? AND partition = ? AND base_offset = ? "
    "AND object_key = ? AND position = ?"
)


_RELEASED = (
    "SELECT key FROM objects WHERE released_at IS NOT NULL AND released_at <= ? "
    "AND deleted_at IS NULL ORDER BY released_at LIMIT ?"
)
_STILL_USED = (
    "UPDATE objects SET released_at = NULL WHERE key IN (SELECT value FROM json_each(?)) "
    "AND EXISTS (SELECT 1 FROM segments WHERE segments.object_key = objects.key)"
)
_CLAIM = (
    "UPDATE objects SET released_at = NULL, claimed_epoch = ? "
    "WHERE key IN (SELECT value FROM json_each(?)) AND released_at IS NOT NULL"
)
# This epoch's claims, and those of a maintainer of an earlier epoch that
# never confirmed them (it was killed or fenced mid-pass).
_CLAIMED = (
    "UPDATE objects SET claimed_epoch = ? WHERE key IN (SELECT key FROM objects "
    "WHERE claimed_epoch IS NOT NULL AND claimed_epoch <= ? AND deleted_at IS NULL "
    "ORDER BY key LIMIT ?) RETURNING key, size"
)
_FORGET = "DELETE FROM objects WHERE deleted_at IS NOT NULL AND deleted_at < ?"


class _Changed(Exception):
    """A segment to replace is gone (rolls the transaction back)."""


def _fence(conn: sqlite3.Connection, lease: MaintenanceLease, now: float) -> None:
    """Extend the lease, or raise LeaseLostError if it is no longer the caller's."""
    extended = conn.execute(
        "UPDATE maintenance_lease SET expires_at = ? WHERE name = 'maintenance' "
        "AND holder = ? AND epoch = ? AND expires_at > ?",
        (now + lease.ttl, lease.holder, lease.epoch, now),
    ).rowcount
    if extended != 1:
        raise LeaseLostError(
            f"the maintenance lease of epoch {lease.epoch} expired, or another maintainer "
            "took it: this pass stops"
        )


def _release(conn: sqlite3.Connection, keys: Sequence[str], now: float) -> None:
    """Mark objects as having lost a segment now (maintenance deletes them later)."""
    conn.execute(
        "UPDATE objects SET released_at = ? WHERE key IN (SELECT value FROM json_each(?))",
        (now, json.dumps(sorted(set(keys)))),
    )


class SQLiteMaintenance:
    """The maintenance part of the MetadataStore protocol, on SQLite."""

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # pragma: no cover - SQLiteMetadataStore's

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(lambda conn: write_transaction(conn, fn))

    async def alter_topic(self, name: str, config: TopicConfig) -> TopicInfo:
        check_topic_name(name)
        settings = config_row(config)

        def alter(conn: sqlite3.Connection) -> TopicInfo:
            row = conn.execute(
                "UPDATE topics SET retention_seconds = ?, retention_bytes = ?, "
                "cleanup_policy = ?, delete_retention_seconds = ? WHERE name = ? "
                f"RETURNING {TOPIC_COLUMNS}",
                (*settings, name),
            ).fetchone()
            if row is None:
                raise TopicNotFoundError(f"topic {name!r} does not exist")
            return topic_info(row)

        return await self._run(lambda conn: write_transaction(conn, alter))

    async def acquire_lease(self, holder: str, ttl: float) -> MaintenanceLease | None:
        check_lease_request(holder, ttl)
        now = time.time()

        def acquire(conn: sqlite3.Connection) -> MaintenanceLease | None:
            row = conn.execute(
                "UPDATE maintenance_lease SET holder = ?, epoch = epoch + 1, expires_at = ? "
                "WHERE name = 'maintenance' AND (expires_at <= ? OR holder = ?) RETURNING epoch",
                (holder, now + ttl, now, holder),
            ).fetchone()
            return None if row is None else MaintenanceLease(holder, row[0], float(ttl))

        return await self._write(acquire)

    async def renew_lease(self, lease: MaintenanceLease) -> None:
        now = time.time()
        await self._write(lambda conn: _fence(conn, lease, now))

    async def release_lease(self, lease: MaintenanceLease) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE maintenance_lease SET expires_at = 0 WHERE name = 'maintenance' "
                "AND holder = ? AND epoch = ?",
                (lease.holder, lease.epoch),
            )
        )

    async def orphan_sweep_mark(self) -> float:
        return await self._run(
            lambda conn: float(
                conn.execute(
                    "SELECT orphans_swept_to FROM maintenance_lease WHERE name = 'maintenance'"
                ).fetchone()[0]
            )
        )

    async def advance_orphan_sweep_mark(self, to: float) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE maintenance_lease SET orphans_swept_to = MAX(orphans_swept_to, ?) "
                "WHERE name = 'maintenance'",
                (to,),
            )
        )

    async def retire_segments(
        self, lease: MaintenanceLease, topic: str, partition: int, log_start: int
    ) -> RetiredSegments:
        now = time.time()

        def retire(conn: sqlite3.Connection) -> RetiredSegments:
            _fence(conn, lease, now)
            row = conn.execute(
                "SELECT log_start_offset, high_watermark FROM partitions "
                "WHERE topic = ? AND partition = ?",
                (topic, partition),
            ).fetchone()
            if row is None:  # the topic was deleted
                return RetiredSegments(0, 0, log_start)
            target = max(row[0], min(log_start, row[1]))
            gone = conn.execute(
                "DELETE FROM segments WHERE topic = ? AND partition = ? AND base_offset < ? "
                "AND end_offset <= ? RETURNING object_key, length",
                (topic, partition, target, target),
            ).fetchall()
            _release(conn, [key for key, _ in gone], now)
            conn.execute(
                "UPDATE partitions SET log_start_offset = ? WHERE topic = ? AND partition = ?",
                (target, topic, partition),
            )
            return RetiredSegments(len(gone), sum(length for _, length in gone), target)

        return await self._write(retire)

    async def replace_segments(
        self,
        lease: MaintenanceLease,
        object_key: str | None,
        object_size: int,
        old: Sequence[SegmentInfo],
        new: Sequence[SegmentInfo],
    ) -> bool:
        check_replacement(object_key, old, new)
        now = time.time()

        def replace(conn: sqlite3.Connection) -> bool:
            _fence(conn, lease, now)
            if (
                object_key is not None
                and conn.execute("SELECT 1 FROM objects WHERE key = ?", (object_key,)).fetchone()
            ):
                return True  # an earlier call did it; its answer was lost
            for s in old:
                where = (s.topic, s.partition, s.base_offset, s.object_key, s.position)
                if conn.execute(_DELETE_SEGMENT, where).rowcount != 1:
                    raise _Changed
            conn.executemany(_INSERT_SEGMENT, [segment_row(s) for s in new])
            if object_key is not None:
                conn.execute(
                    "INSERT INTO objects (key, committed_at, size) VALUES (?, ?, ?)",
                    (object_key, now, object_size),
                )
            _release(conn, [s.object_key for s in old], now)
            return True

        try:
            return await self._write(replace)
        except _Changed:
            return False

    async def compaction_checkpoints(self, topic: str) -> dict[int, CompactionCheckpoint]:
        return await self._run(
            lambda conn: {
                partition: CompactionCheckpoint(cleaned, oldest)
                for partition, cleaned, oldest in conn.execute(
                    "SELECT partition, cleaned_offset, oldest_tombstone FROM partitions "
                    "WHERE topic = ?",
                    (topic,),
                )
            }
        )

    async def set_compaction_checkpoint(
        self, lease: MaintenanceLease, topic: str, partition: int, checkpoint: CompactionCheckpoint
    ) -> None:
        now = time.time()

        def store(conn: sqlite3.Connection) -> None:
            _fence(conn, lease, now)
            conn.execute(
                "UPDATE partitions SET cleaned_offset = ?, oldest_tombstone = ? "
                "WHERE topic = ? AND partition = ?",
                (*attrs.astuple(checkpoint), topic, partition),
            )

        await self._write(store)

    async def claim_garbage(
        self, lease: MaintenanceLease, grace: float, limit: int, forget_after: float
    ) -> list[Garbage]:
        now = time.time()

        def claim(conn: sqlite3.Connection) -> list[Garbage]:
            _fence(conn, lease, now)
            released = json.dumps([row[0] for row in conn.execute(_RELEASED, (now - grace, limit))])
            # Still pointed into (a packed object's other partitions): not
            # garbage; the last segment to go releases it again.
            conn.execute(_STILL_USED, (released,))
            conn.execute(_CLAIM, (lease.epoch, released))
            claimed = conn.execute(_CLAIMED, (lease.epoch, lease.epoch, limit)).fetchall()
            conn.execute(_FORGET, (now - forget_after,))
            return [Garbage(key, size) for key, size in sorted(claimed)]

        return await self._write(claim)

    async def confirm_deleted(self, keys: Sequence[str]) -> None:
        now = time.time()
        await self._write(
            lambda conn: conn.execute(
                "UPDATE objects SET deleted_at = ? WHERE key IN (SELECT value FROM json_each(?))",
                (now, json.dumps(list(keys))),
            )
        )
