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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._errors import (
    ClosedError,
    ConfigurationError,
    InvalidArgumentError,
    MetadataError,
    MetadataUnavailableError,
    TopicExistsError,
    TopicNotFoundError,
)
from .._names import check_partition_count, check_topic_name
from .common import (
    SEGMENT_COLUMNS,
    TOPIC_COLUMNS,
    AllTokens,
    check_recommitted,
    check_segment_specs,
    check_timeout,
    config_row,
    partition_error,
    segment,
    topic_info,
)
from .monitoring import SQLiteMonitoring
from .protocol import (
    CatalogueWatch,
    PartitionState,
    SegmentInfo,
    SegmentSpec,
    TopicConfig,
    TopicInfo,
)
from .sqlite_groups import SQLiteGroups
from .sqlite_maint import SQLiteMaintenance
from .sqlite_schema import SQLiteWatch, migrate, write_transaction

__all__ = ["SQLiteMetadataStore"]

T = TypeVar("T")


def _check_partition(conn: sqlite3.Connection, topic: str, partition: int) -> None:
    row = conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
    if row is None or not 0 <= partition < row[0]:
        raise partition_error(topic, None if row is None else row[0], partition)


def _json_segment(row: list[Any]) -> SegmentInfo:
    """A segment of _SEGMENTS_FROM's JSON (its created_at as text)."""
    row[-1] = float(row[-1])
    return segment(row)


# The segments of many partitions, each from its own offset (list_segments'
# query for each), as one JSON text: ``[[partition, [[column, ...], ...]], ...]``.
# JSON writes a REAL with 15 digits: created_at goes as text, 17 digits,
# which give the same float back. The inner array passes through json():
# a subquery's value keeps its JSON subtype only on some SQLite builds (one
# built with SQLITE_STRICT_SUBTYPE made it a string).
_EXACT_COLUMNS = SEGMENT_COLUMNS.replace("created_at", "printf('%!.17g', created_at)")
_SEGMENTS_FROM = f"""
SELECT json_group_array(json_array(a.p, json((
  SELECT json_group_array(json_array({_EXACT_COLUMNS}))
  FROM (SELECT {SEGMENT_COLUMNS} FROM segments WHERE topic = :topic AND partition = a.p
        AND base_offset >= COALESCE((SELECT MAX(base_offset) FROM segments
            WHERE topic = :topic AND partition = a.p AND base_offset <= a.o), 0)
        ORDER BY base_offset LIMIT :limit)))))
FROM (SELECT json_extract(value, '$[0]') AS p, json_extract(value, '$[1]') AS o
      FROM json_each(:asks)) AS a
"""


@attrs.define(eq=False)
class SQLiteMetadataStore(SQLiteMaintenance, SQLiteGroups, SQLiteMonitoring):
    """The MetadataStore protocol on one SQLite file.

    Args:
        path: the database file.
        busy_timeout: seconds to wait for another writer's lock.
        max_connections: worker threads (and connections) at most at once.
        synchronous: SQLite's ``synchronous`` pragma. ``FULL`` (the default)
            makes every commit survive a power loss; ``NORMAL`` survives a
            process crash only.
        create: make the file (and its directory) if missing, at the first
            call. With ``create=False`` a missing file is read as an empty
            store and nothing is made on disk (read-only tools rely on it);
            a write to it raises MetadataError.
        watch_interval: seconds between two looks at the change counter
            while a ``watch`` waits.
    """

    path: Path = attrs.field(converter=Path)
    busy_timeout: float = 30.0
    max_connections: int = 4
    synchronous: str = attrs.field(default="FULL")
    create: bool = True
    watch_interval: float = 0.05
    _limiter: anyio.CapacityLimiter = attrs.field(init=False)
    _pool: queue.SimpleQueue[sqlite3.Connection] = attrs.field(
        init=False, factory=queue.SimpleQueue
    )
    _connections: list[sqlite3.Connection] = attrs.field(init=False, factory=list)
    _watcher: sqlite3.Connection | None = attrs.field(init=False, default=None)
    _watch_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _closed: bool = attrs.field(init=False, default=False)

    @synchronous.validator
    def _check_synchronous(self, _attribute: object, value: str) -> None:
        if value.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidArgumentError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {value!r}"
            )

    def __attrs_post_init__(self) -> None:
        self._limiter = anyio.CapacityLimiter(self.max_connections)
        check_timeout(self.watch_interval, "watch_interval")

    def __repr__(self) -> str:
        return f"SQLiteMetadataStore({str(self.path)!r})"

    # -- plumbing ----------------------------------------------------------

    def _open(self, *, migrated: bool = True) -> sqlite3.Connection:
        """A new connection on the file, made (with its directory) if allowed."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the directory of the metadata database {str(self.path)!r}: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"cannot open the metadata database {str(self.path)!r}: {exc}"
            ) from exc
        try:
            try:
                conn.execute("PRAGMA journal_mode=WAL")  # the first read of the file
            except sqlite3.DatabaseError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise  # retriable: MetadataUnavailableError, from _call
                # A directory, a file we may not open, or not a database.
                raise ConfigurationError(
                    f"cannot use {str(self.path)!r} as the metadata database: {exc}"
                ) from exc
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys=ON")
            if migrated:
                migrate(conn, str(self.path))
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = self._open()
        self._connections.append(conn)
        return conn

    def _stand_in(self) -> sqlite3.Connection | None:
        """An empty, read-only database for a missing file under create=False."""
        if self.create or self.path.exists():
            return None
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        migrate(conn, ":memory:")
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        stand_in = self._stand_in()
        if stand_in is not None:
            try:
                return fn(stand_in)
            except sqlite3.OperationalError as exc:
                raise MetadataError(
                    f"{self.path} does not exist, and the store was opened with create=False"
                ) from exc
            finally:
                stand_in.close()
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

    # -- watching ----------------------------------------------------------

    def watch(self, topics: Sequence[str]) -> CatalogueWatch:
        for topic in topics:
            check_topic_name(topic)
        return SQLiteWatch(self.watch_interval, self._change_counter)

    async def _change_counter(self) -> int | None:
        """SQLite's ``data_version`` as seen by one connection that never
        writes: it moves whenever any other connection, of this process or
        another, commits. None while the file is missing (create=False)."""

        def read() -> int | None:
            with self._watch_lock:
                if self._watcher is None:
                    if not self.create and not self.path.exists():
                        return None
                    # Not migrated: the pragma needs no tables.
                    self._watcher = self._open(migrated=False)
                    self._connections.append(self._watcher)
                (version,) = self._watcher.execute("PRAGMA data_version").fetchone()
                return int(version)

        if self._closed:
            raise ClosedError("the metadata store is closed")
        try:
            return await anyio.to_thread.run_sync(read, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise MetadataError(f"{self.path}: {exc}") from exc

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
            async with AllTokens(self._limiter):
                await anyio.to_thread.run_sync(close_all)

    # -- topics ------------------------------------------------------------

    async def create_topic(
        self, name: str, partitions: int, config: TopicConfig | None = None
    ) -> TopicInfo:
        check_topic_name(name)
        check_partition_count(partitions)
        config = TopicConfig() if config is None else config
        settings = config_row(config)
        created = time.time()

        def create(conn: sqlite3.Connection) -> TopicInfo:
            try:
                conn.execute(
                    f"INSERT INTO topics ({TOPIC_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, partitions, created, *settings),
                )
            except sqlite3.IntegrityError:
                raise TopicExistsError(f"topic {name!r} already exists") from None
            conn.executemany(
                "INSERT OR REPLACE INTO partitions (topic, partition) VALUES (?, ?)",
                ((name, p) for p in range(partitions)),
            )
            return TopicInfo(name, partitions, created, config)

        return await self._run(lambda conn: write_transaction(conn, create))

    async def get_topic(self, name: str) -> TopicInfo:
        check_topic_name(name)

        def get(conn: sqlite3.Connection) -> TopicInfo:
            row = conn.execute(
                f"SELECT {TOPIC_COLUMNS} FROM topics WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise TopicNotFoundError(f"topic {name!r} does not exist")
            return topic_info(row)

        return await self._run(get)

    async def list_topics(self) -> list[TopicInfo]:
        return await self._run(
            lambda conn: [
                topic_info(row)
                for row in conn.execute(f"SELECT {TOPIC_COLUMNS} FROM topics ORDER BY name")
            ]
        )

    async def delete_topic(self, name: str) -> None:
        check_topic_name(name)
        now = time.time()

        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM topics WHERE name = ?", (name,)).rowcount == 0:
                raise TopicNotFoundError(f"topic {name!r} does not exist")
            # Maintenance deletes them after its grace (if no other topic's
            # segments point into them).
            conn.execute(
                "UPDATE objects SET released_at = ? WHERE key IN "
                "(SELECT object_key FROM segments WHERE topic = ?)",
                (now, name),
            )
            for table in ("partitions", "segments", "consumer_offsets"):
                conn.execute(f"DELETE FROM {table} WHERE topic = ?", (name,))

        await self._run(lambda conn: write_transaction(conn, delete))

    # -- segments ----------------------------------------------------------

    async def commit_segments(
        self, object_key: str, segments: Sequence[SegmentSpec]
    ) -> list[SegmentInfo]:
        check_segment_specs(object_key, segments)
        committed_at = time.time()

        def commit(conn: sqlite3.Connection) -> list[SegmentInfo]:
            if conn.execute("SELECT 1 FROM objects WHERE key = ?", (object_key,)).fetchone():
                found = [
                    segment(row)
                    for row in conn.execute(
                        f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE object_key = ? "
                        "ORDER BY position",
                        (object_key,),
                    )
                ]
                return check_recommitted(object_key, found, segments)
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
                    created_at=committed_at,
                )
                conn.execute(
                    f"INSERT INTO segments ({SEGMENT_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    attrs.astuple(info),
                )
                out.append(info)
            conn.execute(
                "INSERT INTO objects (key, committed_at, size) VALUES (?, ?, ?)",
                (object_key, committed_at, max(s.position + s.length for s in segments)),
            )
            return out

        return await self._run(lambda conn: write_transaction(conn, commit))

    async def list_segments(
        self, topic: str, partition: int, from_offset: int = 0, limit: int = 1000
    ) -> list[SegmentInfo]:
        def segments(conn: sqlite3.Connection) -> list[SegmentInfo]:
            rows = conn.execute(
                f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE topic = ? AND partition = ? "
                "AND base_offset >= COALESCE((SELECT MAX(base_offset) FROM segments "
                "WHERE topic = ? AND partition = ? AND base_offset <= ?), 0) "
                "ORDER BY base_offset LIMIT ?",
                (topic, partition, topic, partition, from_offset, limit),
            )
            return [s for s in map(segment, rows) if s.end_offset > from_offset]

        return await self._run(segments)

    async def list_segments_from(
        self, topic: str, starts: Mapping[int, int], limit: int = 16
    ) -> dict[int, list[SegmentInfo]]:
        # One row, one JSON text: Python's sqlite3 lets go of the GIL at
        # every row it steps to, and a thread that gives the GIL back to a
        # busy event loop waits up to a switch interval (5 ms) to get it
        # again. 1,000 lookups of 10 rows took 6 ms each on a busy consumer;
        # all of them in one JSON row take 47 ms.
        def segments(conn: sqlite3.Connection) -> dict[int, list[SegmentInfo]]:
            if not starts:
                return {}
            asks = json.dumps([[p, o] for p, o in starts.items()])
            ((text,),) = conn.execute(
                _SEGMENTS_FROM, {"topic": topic, "asks": asks, "limit": limit}
            ).fetchall()
            found: dict[int, list[SegmentInfo]] = {}
            for p, rows in json.loads(text):
                listed = sorted(map(_json_segment, rows), key=attrgetter("base_offset"))
                found[p] = [s for s in listed if s.end_offset > starts[p]]
            return found

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
