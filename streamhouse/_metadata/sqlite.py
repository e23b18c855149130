"""SQLiteMetadataStore: the embedded default metadata store.

sqlite3 blocks, so every call runs in a worker thread through anyio, behind a
capacity limiter that also bounds the connection pool. The database runs in
WAL mode (readers never wait for the writer) with a busy timeout, and every
write is one ``BEGIN IMMEDIATE`` transaction, which takes the write lock
before reading anything. That is what makes offset assignment correct when
many tasks, or several processes, share one file: the read of a partition's
high watermark and the write that moves it can never interleave with another
writer's.

A call that is cancelled while its thread runs is not abandoned: the
transaction finishes (or rolls back) before the cancellation is delivered, so
a cancelled commit is either wholly done or not done at all.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._errors import (
    ClosedError,
    InvalidArgumentError,
    MetadataError,
    MetadataUnavailableError,
    PartitionNotFoundError,
    TopicExistsError,
    TopicNotFoundError,
)
from .._names import check_group_id, check_partition_count, check_topic_name
from .._types import TopicPartition
from .protocol import (
    CommittedOffset,
    PartitionState,
    SegmentInfo,
    SegmentSpec,
    TopicInfo,
)

__all__ = ["SQLiteMetadataStore"]

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name        TEXT PRIMARY KEY,
    partitions  INTEGER NOT NULL,
    created_at  REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS partitions (
    topic             TEXT NOT NULL,
    partition         INTEGER NOT NULL,
    log_start_offset  INTEGER NOT NULL DEFAULT 0,
    high_watermark    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    key           TEXT PRIMARY KEY,
    committed_at  REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments (
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL,
    base_offset    INTEGER NOT NULL,
    record_count   INTEGER NOT NULL,
    object_key     TEXT NOT NULL,
    position       INTEGER NOT NULL,
    length         INTEGER NOT NULL,
    index_length   INTEGER NOT NULL,
    min_timestamp  INTEGER NOT NULL,
    max_timestamp  INTEGER NOT NULL,
    created_at     REAL NOT NULL,
    PRIMARY KEY (topic, partition, base_offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS segments_by_object ON segments (object_key, position);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    group_id      TEXT NOT NULL,
    topic         TEXT NOT NULL,
    partition     INTEGER NOT NULL,
    "offset"      INTEGER NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '',
    generation    INTEGER NOT NULL DEFAULT -1,
    committed_at  REAL NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;
"""

_SEGMENT_COLUMNS = (
    "topic, partition, base_offset, record_count, object_key, position, length, "
    "index_length, min_timestamp, max_timestamp"
)


def _segment(row: Sequence[Any]) -> SegmentInfo:
    return SegmentInfo(*row)


def _write(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _check_partition(conn: sqlite3.Connection, topic: str, partition: int) -> None:
    row = conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
    if row is None:
        raise TopicNotFoundError(f"topic {topic!r} does not exist")
    if isinstance(partition, bool) or not isinstance(partition, int) or not 0 <= partition < row[0]:
        raise PartitionNotFoundError(
            f"topic {topic!r} has partitions 0..{row[0] - 1}; there is no partition {partition!r}"
        )


@attrs.define(eq=False)
class SQLiteMetadataStore:
    """The MetadataStore protocol on one SQLite file.

    Args:
        path: the database file; created, with its directory, if missing.
        busy_timeout: seconds to wait for another writer's lock.
        max_connections: worker threads (and connections) at most at once.
        synchronous: SQLite's ``synchronous`` pragma. ``FULL`` (the default)
            makes every commit survive a power loss; ``NORMAL`` survives a
            process crash only.
    """

    path: Path = attrs.field(converter=Path)
    busy_timeout: float = 30.0
    max_connections: int = 4
    synchronous: str = attrs.field(default="FULL")
    _limiter: anyio.CapacityLimiter = attrs.field(init=False)
    _pool: queue.SimpleQueue[sqlite3.Connection] = attrs.field(
        init=False, factory=queue.SimpleQueue
    )
    _connections: list[sqlite3.Connection] = attrs.field(init=False, factory=list)
    _closed: bool = attrs.field(init=False, default=False)

    @synchronous.validator
    def _check_synchronous(self, _attribute: object, value: str) -> None:
        if value.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidArgumentError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {value!r}"
            )

    def __attrs_post_init__(self) -> None:
        self._limiter = anyio.CapacityLimiter(self.max_connections)

    def __repr__(self) -> str:
        return f"SQLiteMetadataStore({str(self.path)!r})"

    # -- plumbing ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys=ON")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:

                def create(c: sqlite3.Connection) -> None:
                    version = c.execute("PRAGMA user_version").fetchone()[0]
                    if version == 0:
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                c.execute(statement)
                        c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    elif version != SCHEMA_VERSION:
                        raise MetadataError(
                            f"{self.path} has schema version {version}; this StreamHouse "
                            f"knows version {SCHEMA_VERSION}"
                        )

                _write(conn, create)
        except BaseException:
            conn.close()
            raise
        self._connections.append(conn)
        return conn

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            try:
                conn = self._connect()
            except sqlite3.Error as exc:
                raise MetadataUnavailableError(f"cannot open {self.path}: {exc}") from exc
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise MetadataUnavailableError(
                    f"{self.path} stayed locked for {self.busy_timeout}s: {text}"
                ) from exc
            raise MetadataError(f"{self.path}: {text}") from exc
        except sqlite3.Error as exc:
            raise MetadataError(f"{self.path}: {exc}") from exc
        finally:
            self._pool.put(conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise ClosedError("the metadata store is closed")
        return await anyio.to_thread.run_sync(self._call, fn, limiter=self._limiter)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close_all() -> None:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

        with anyio.CancelScope(shield=True):
            # Waits for calls in flight: their threads hold the connections.
            async with _AllTokens(self._limiter):
                await anyio.to_thread.run_sync(close_all)

    # -- topics ------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int) -> TopicInfo:
        check_topic_name(name)
        check_partition_count(partitions)
        created = time.time()

        def create(conn: sqlite3.Connection) -> TopicInfo:
            try:
                conn.execute(
                    "INSERT INTO topics (name, partitions, created_at) VALUES (?, ?, ?)",
                    (name, partitions, created),
                )
            except sqlite3.IntegrityError:
                raise TopicExistsError(f"topic {name!r} already exists") from None
            conn.executemany(
                "INSERT OR REPLACE INTO partitions (topic, partition) VALUES (?, ?)",
                ((name, p) for p in range(partitions)),
            )
            return TopicInfo(name, partitions, created)

        return await self._run(lambda conn: _write(conn, create))

    async def get_topic(self, name: str) -> TopicInfo:
        check_topic_name(name)

        def get(conn: sqlite3.Connection) -> TopicInfo:
            row = conn.execute(
                "SELECT name, partitions, created_at FROM topics WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise TopicNotFoundError(f"topic {name!r} does not exist")
            return TopicInfo(*row)

        return await self._run(get)

    async def list_topics(self) -> list[TopicInfo]:
        return await self._run(
            lambda conn: [
                TopicInfo(*row)
                for row in conn.execute(
                    "SELECT name, partitions, created_at FROM topics ORDER BY name"
                )
            ]
        )

    async def delete_topic(self, name: str) -> None:
        check_topic_name(name)

        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM topics WHERE name = ?", (name,)).rowcount == 0:
                raise TopicNotFoundError(f"topic {name!r} does not exist")
            for table in ("partitions", "segments", "consumer_offsets"):
                conn.execute(f"DELETE FROM {table} WHERE topic = ?", (name,))

        await self._run(lambda conn: _write(conn, delete))

    # -- segments ----------------------------------------------------------

    async def commit_segments(
        self, object_key: str, segments: Sequence[SegmentSpec]
    ) -> list[SegmentInfo]:
        if not segments:
            raise InvalidArgumentError("an object needs at least one segment to commit")
        for spec in segments:
            if spec.record_count <= 0 or spec.length <= 0 or spec.position < 0:
                raise InvalidArgumentError(f"segment {spec} has no records or a bad position")
        committed_at = time.time()

        def commit(conn: sqlite3.Connection) -> list[SegmentInfo]:
            if conn.execute("SELECT 1 FROM objects WHERE key = ?", (object_key,)).fetchone():
                return [
                    _segment(row)
                    for row in conn.execute(
                        f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE object_key = ? "
                        "ORDER BY position",
                        (object_key,),
                    )
                ]
            out = []
            for spec in segments:
                _check_partition(conn, spec.topic, spec.partition)
                (base,) = conn.execute(
                    "UPDATE partitions SET high_watermark = high_watermark + ? "
                    "WHERE topic = ? AND partition = ? RETURNING high_watermark - ?",
                    (spec.record_count, spec.topic, spec.partition, spec.record_count),
                ).fetchone()
                info = SegmentInfo(
                    spec.topic,
                    spec.partition,
                    base,
                    spec.record_count,
                    object_key,
                    spec.position,
                    spec.length,
                    spec.index_length,
                    spec.min_timestamp,
                    spec.max_timestamp,
                )
                conn.execute(
                    f"INSERT INTO segments ({_SEGMENT_COLUMNS}, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*attrs.astuple(info), committed_at),
                )
                out.append(info)
            conn.execute(
                "INSERT INTO objects (key, committed_at) VALUES (?, ?)", (object_key, committed_at)
            )
            return out

        return await self._run(lambda conn: _write(conn, commit))

    async def find_segment(self, topic: str, partition: int, offset: int) -> SegmentInfo | None:
        def find(conn: sqlite3.Connection) -> SegmentInfo | None:
            row = conn.execute(
                f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE topic = ? AND partition = ? "
                "AND base_offset <= ? ORDER BY base_offset DESC LIMIT 1",
                (topic, partition, offset),
            ).fetchone()
            if row is None:
                return None
            segment = _segment(row)
            return segment if offset < segment.end_offset else None

        return await self._run(find)

    async def list_segments(
        self, topic: str, partition: int, from_offset: int = 0, limit: int = 1000
    ) -> list[SegmentInfo]:
        def segments(conn: sqlite3.Connection) -> list[SegmentInfo]:
            rows = conn.execute(
                f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE topic = ? AND partition = ? "
                "AND base_offset >= COALESCE((SELECT MAX(base_offset) FROM segments "
                "WHERE topic = ? AND partition = ? AND base_offset <= ?), 0) "
                "ORDER BY base_offset LIMIT ?",
                (topic, partition, topic, partition, from_offset, limit),
            )
            return [s for s in map(_segment, rows) if s.end_offset > from_offset]

        return await self._run(segments)

    async def partition_states(self, topics: Sequence[str]) -> list[PartitionState]:
        names = json.dumps(list(topics))
        return await self._run(
            lambda conn: [
                PartitionState(*row)
                for row in conn.execute(
                    "SELECT topic, partition, log_start_offset, high_watermark FROM partitions "
                    "WHERE topic IN (SELECT value FROM json_each(?)) ORDER BY topic, partition",
                    (names,),
                )
            ]
        )

    async def segment_stats(self, topic: str) -> dict[int, tuple[int, int]]:
        return await self._run(
            lambda conn: {
                partition: (count, size)
                for partition, count, size in conn.execute(
                    "SELECT partition, COUNT(*), SUM(length) FROM segments WHERE topic = ? "
                    "GROUP BY partition",
                    (topic,),
                )
            }
        )

    async def committed_object_keys(self, keys: Sequence[str]) -> set[str]:
        names = json.dumps(list(keys))
        return await self._run(
            lambda conn: {
                row[0]
                for row in conn.execute(
                    "SELECT key FROM objects WHERE key IN (SELECT value FROM json_each(?))",
                    (names,),
                )
            }
        )

    # -- consumer offsets --------------------------------------------------

    async def commit_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, int], metadata: str = ""
    ) -> None:
        check_group_id(group_id)
        for tp, offset in offsets.items():
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise InvalidArgumentError(f"offset for {tp} must be an int >= 0, not {offset!r}")
        committed_at = time.time()

        def commit(conn: sqlite3.Connection) -> None:
            for tp in offsets:
                _check_partition(conn, tp.topic, tp.partition)
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

        await self._run(lambda conn: _write(conn, commit))

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
                    "SELECT DISTINCT group_id FROM consumer_offsets ORDER BY group_id"
                )
            ]
        )

    async def delete_group(self, group_id: str) -> None:
        check_group_id(group_id)
        await self._run(
            lambda conn: _write(
                conn,
                lambda c: c.execute("DELETE FROM consumer_offsets WHERE group_id = ?", (group_id,)),
            )
        )


class _AllTokens:
    """Hold every token of a limiter: no call runs while held."""

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter
        self._borrowers: list[object] = []

    async def __aenter__(self) -> None:
        for _ in range(int(self._limiter.total_tokens)):
            borrower = object()
            await self._limiter.acquire_on_behalf_of(borrower)
            self._borrowers.append(borrower)

    async def __aexit__(self, *exc: object) -> None:
        for borrower in self._borrowers:
            self._limiter.release_on_behalf_of(borrower)
