"""PostgreSQL's maintenance calls: topic settings, the lease, retention, rewrites, garbage.

A mixin of PostgresMetadataStore (which brings ``_run`` and the NOTIFY
channel). Every call that changes the catalogue is one transaction that
starts with the fence: an UPDATE of the lease row that extends the caller's
lease, and changes nothing (LeaseLostError, the transaction rolls back)
unless the lease is still the caller's at the caller's epoch. The UPDATE
keeps the row locked until the commit, so nobody can take the lease while
the transaction runs. The lease row is the only lock maintenance takes
before the partition rows producers lock, so the two never deadlock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

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
from .pg_listen import notify_payload
from .protocol import (
    CompactionCheckpoint,
    Garbage,
    MaintenanceLease,
    RetiredSegments,
    SegmentInfo,
    TopicConfig,
    TopicInfo,
)

__all__ = ["PostgresMaintenance"]

T = TypeVar("T")
Conn = psycopg.Connection[Any]

_ALTER_TOPIC = (
    "UPDATE topics SET retention_seconds = %s, retention_bytes = %s, cleanup_policy = %s, "
    f"delete_retention_seconds = %s WHERE name = %s RETURNING {TOPIC_COLUMNS}"
)
_FENCE = (
    "UPDATE maintenance_lease SET expires_at = %s WHERE name = 'maintenance' "
    "AND holder = %s AND epoch = %s AND expires_at > %s"
)
_ACQUIRE = (
    "UPDATE maintenance_lease SET holder = %s, epoch = epoch + 1, expires_at = %s "
    "WHERE name = 'maintenance' AND (expires_at <= %s OR holder = %s) RETURNING epoch"
)
_RELEASE = (
    "UPDATE maintenance_lease SET expires_at = 0 WHERE name = 'maintenance' "
    "AND holder = %s AND epoch = %s"
)
_RELEASE_OBJECTS = "UPDATE objects SET released_at = %s WHERE key = ANY(%s)"
_PARTITION_BOUNDS = (
    "SELECT log_start_offset, high_watermark FROM partitions "
    "WHERE topic = %s AND partition = %s FOR UPDATE"
)
_RETIRE = (
    "DELETE FROM segments WHERE topic = %s AND partition = %s AND base_offset < %s "
    "AND end_offset <= %s RETURNING object_key, length"
)
_MOVE_LOG_START = "UPDATE partitions SET log_start_offset = %s WHERE topic = %s AND partition = %s"
_DELETE_SEGMENT = (
    "DELETE FROM segments WHERE topic = %s AND partition = %s AND base_offset = %s "
    "AND object_key = %s AND position = %s"
)
_INSERT_SEGMENT = (
    f"INSERT INTO segments ({SEGMENT_COLUMNS}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_CHECKPOINTS = "SELECT partition, cleaned_offset, oldest_tombstone FROM partitions WHERE topic = %s"
_SET_CHECKPOINT = (
    "UPDATE partitions SET cleaned_offset = %s, oldest_tombstone = %s "
    "WHERE topic = %s AND partition = %s"
)
_GARBAGE = (
    "SELECT key FROM objects WHERE released_at IS NOT NULL AND released_at <= %s "
    "AND deleted_at IS NULL ORDER BY released_at LIMIT %s FOR UPDATE"
)
# Still pointed into (a packed object's other partitions): not garbage; the
# last segment to go releases it again.
_STILL_USED = (
    "UPDATE objects SET released_at = NULL WHERE key = ANY(%s) AND EXISTS "
    "(SELECT 1 FROM segments WHERE segments.object_key = objects.key)"
)
_CLAIM = (
    "UPDATE objects SET released_at = NULL, claimed_epoch = %s WHERE key = ANY(%s) "
    "AND released_at IS NOT NULL"
)
# This epoch's claims, and those of a maintainer of an earlier epoch that
# never confirmed them (it was killed or fenced mid-pass).
_CLAIMED = (
    "UPDATE objects SET claimed_epoch = %s WHERE key IN (SELECT key FROM objects "
    "WHERE claimed_epoch IS NOT NULL AND claimed_epoch <= %s AND deleted_at IS NULL "
    "ORDER BY key LIMIT %s FOR UPDATE) RETURNING key, size"
)
_FORGET = "DELETE FROM objects WHERE deleted_at IS NOT NULL AND deleted_at < %s"


class _Changed(Exception):
    """A segment to replace is gone (rolls the transaction back)."""


def _fence(conn: Conn, lease: MaintenanceLease, now: float) -> None:
    """Extend the lease, or raise LeaseLostError if it is no longer the caller's."""
    cursor = conn.execute(_FENCE, (now + lease.ttl, lease.holder, lease.epoch, now))
    if cursor.rowcount != 1:
        raise LeaseLostError(
            f"the maintenance lease of epoch {lease.epoch} expired, or another maintainer "
            "took it: this pass stops"
        )


class PostgresMaintenance:
    """The maintenance part of the MetadataStore protocol, on PostgreSQL."""

    _channel: str

    async def _run(self, fn: Callable[[Conn], T], *, write: bool = False) -> T:
        raise NotImplementedError  # pragma: no cover - PostgresMetadataStore's

    async def alter_topic(self, name: str, config: TopicConfig) -> TopicInfo:
        check_topic_name(name)
        settings = config_row(config)

        def alter(conn: Conn) -> TopicInfo:
            row = conn.execute(_ALTER_TOPIC, (*settings, name)).fetchone()
            if row is None:
                raise TopicNotFoundError(f"topic {name!r} does not exist")
            return topic_info(row)

        return await self._run(alter, write=True)

    async def acquire_lease(self, holder: str, ttl: float) -> MaintenanceLease | None:
        check_lease_request(holder, ttl)
        now = time.time()

        def acquire(conn: Conn) -> MaintenanceLease | None:
            row = conn.execute(_ACQUIRE, (holder, now + ttl, now, holder)).fetchone()
            return None if row is None else MaintenanceLease(holder, row[0], float(ttl))

        return await self._run(acquire, write=True)

    async def renew_lease(self, lease: MaintenanceLease) -> None:
        now = time.time()
        await self._run(lambda conn: _fence(conn, lease, now), write=True)

    async def release_lease(self, lease: MaintenanceLease) -> None:
        await self._run(
            lambda conn: conn.execute(_RELEASE, (lease.holder, lease.epoch)) and None, write=True
        )

    async def orphan_sweep_mark(self) -> float:
        def read(conn: Conn) -> float:
            row = conn.execute(
                "SELECT orphans_swept_to FROM maintenance_lease WHERE name = 'maintenance'"
            ).fetchone()
            return float(row[0]) if row is not None else 0.0

        return await self._run(read)

    async def advance_orphan_sweep_mark(self, to: float) -> None:
        await self._run(
            lambda conn: (
                conn.execute(
                    "UPDATE maintenance_lease SET orphans_swept_to = "
                    "GREATEST(orphans_swept_to, %s) WHERE name = 'maintenance'",
                    (to,),
                )
                and None
            ),
            write=True,
        )

    async def retire_segments(
        self, lease: MaintenanceLease, topic: str, partition: int, log_start: int
    ) -> RetiredSegments:
        now = time.time()
        channel, payload = self._channel, notify_payload([topic])

        def retire(conn: Conn) -> RetiredSegments:
            _fence(conn, lease, now)
            row = conn.execute(_PARTITION_BOUNDS, (topic, partition)).fetchone()
            if row is None:  # the topic was deleted
                return RetiredSegments(0, 0, log_start)
            target = max(row[0], min(log_start, row[1]))
            gone = conn.execute(_RETIRE, (topic, partition, target, target)).fetchall()
            conn.execute(_RELEASE_OBJECTS, (now, sorted({key for key, _ in gone})))
            conn.execute(_MOVE_LOG_START, (target, topic, partition))
            # Readers listening learn the new log start without waiting for a poll.
            conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
            return RetiredSegments(len(gone), sum(length for _, length in gone), target)

        return await self._run(retire, write=True)

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

        def replace(conn: Conn) -> bool:
            _fence(conn, lease, now)
            if (
                object_key is not None
                and conn.execute("SELECT 1 FROM objects WHERE key = %s", (object_key,)).fetchone()
            ):
                return True  # an earlier call did it; its answer was lost
            for s in old:
                where = (s.topic, s.partition, s.base_offset, s.object_key, s.position)
                if conn.execute(_DELETE_SEGMENT, where).rowcount != 1:
                    raise _Changed
            with conn.cursor() as cursor:
                cursor.executemany(_INSERT_SEGMENT, [segment_row(s) for s in new])
            if object_key is not None:
                conn.execute(
                    "INSERT INTO objects (key, committed_at, size) VALUES (%s, %s, %s)",
                    (object_key, now, object_size),
                )
            conn.execute(_RELEASE_OBJECTS, (now, sorted({s.object_key for s in old})))
            return True

        try:
            return await self._run(replace, write=True)
        except _Changed:
            return False

    async def compaction_checkpoints(self, topic: str) -> dict[int, CompactionCheckpoint]:
        return await self._run(
            lambda conn: {
                partition: CompactionCheckpoint(cleaned, oldest)
                for partition, cleaned, oldest in conn.execute(_CHECKPOINTS, (topic,))
            }
        )

    async def set_compaction_checkpoint(
        self, lease: MaintenanceLease, topic: str, partition: int, checkpoint: CompactionCheckpoint
    ) -> None:
        now = time.time()

        def store(conn: Conn) -> None:
            _fence(conn, lease, now)
            conn.execute(
                _SET_CHECKPOINT,
                (checkpoint.cleaned_offset, checkpoint.oldest_tombstone, topic, partition),
            )

        await self._run(store, write=True)

    async def claim_garbage(
        self, lease: MaintenanceLease, grace: float, limit: int, forget_after: float
    ) -> list[Garbage]:
        now = time.time()

        def claim(conn: Conn) -> list[Garbage]:
            _fence(conn, lease, now)
            released = [row[0] for row in conn.execute(_GARBAGE, (now - grace, limit))]
            conn.execute(_STILL_USED, (released,))
            conn.execute(_CLAIM, (lease.epoch, released))
            claimed = conn.execute(_CLAIMED, (lease.epoch, lease.epoch, limit)).fetchall()
            conn.execute(_FORGET, (now - forget_after,))
            return [Garbage(key, size) for key, size in sorted(claimed)]

        return await self._run(claim, write=True)

    async def confirm_deleted(self, keys: Sequence[str]) -> None:
        now = time.time()
        await self._run(
            lambda conn: (
                conn.execute(
                    "UPDATE objects SET deleted_at = %s WHERE key = ANY(%s)", (now, list(keys))
                )
                and None
            ),
            write=True,
        )
