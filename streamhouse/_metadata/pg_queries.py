"""The PostgreSQL store's SQL, its migration at open, and offset assignment.

Every statement names its tables without a schema: each connection's
``search_path`` is the store's schema.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from .._errors import MetadataError
from .common import SEGMENT_COLUMNS, TOPIC_COLUMNS, partition_error, segment_row
from .protocol import SegmentInfo, SegmentSpec
from .schema import SCHEMA_VERSION_TABLE, Dialect, pending

Conn = psycopg.Connection[Any]

INSERT_TOPIC = (
    f"INSERT INTO topics ({TOPIC_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (name) DO NOTHING RETURNING name"
)

INSERT_PARTITIONS = (
    "INSERT INTO partitions (topic, partition) SELECT %s, generate_series(0, %s - 1) "
    "ON CONFLICT DO NOTHING"
)
GET_TOPIC = f"SELECT {TOPIC_COLUMNS} FROM topics WHERE name = %s"
LIST_TOPICS = f"SELECT {TOPIC_COLUMNS} FROM topics ORDER BY name"
TOPIC_PARTITIONS = "SELECT name, partitions FROM topics WHERE name = ANY(%s)"
DELETE_TOPIC = "DELETE FROM topics WHERE name = %s"
# Maintenance deletes them after its grace (if no other topic's segments
# point into them).
RELEASE_TOPIC_OBJECTS = (
    "UPDATE objects SET released_at = %s WHERE key IN "
    "(SELECT object_key FROM segments WHERE topic = %s)"
)
DELETE_TOPIC_ROWS = tuple(
    f"DELETE FROM {table} WHERE topic = %s"
    for table in ("partitions", "segments", "consumer_offsets")
)
NOTIFY = "SELECT pg_notify(%s, %s)"

CLAIM_OBJECT = (
    "INSERT INTO objects (key, committed_at, size) VALUES (%s, %s, %s) "
    "ON CONFLICT (key) DO NOTHING RETURNING key"
)
OBJECT_SEGMENTS = f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE object_key = %s ORDER BY position"
LOCK_PARTITIONS = (
    "SELECT topic, partition, high_watermark FROM partitions "
    "WHERE (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[])) "
    "ORDER BY topic, partition FOR UPDATE"
)
MOVE_WATERMARKS = (
    "UPDATE partitions AS p SET high_watermark = p.high_watermark + d.n "
    "FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS d(topic, partition, n) "
    "WHERE p.topic = d.topic AND p.partition = d.partition"
)
INSERT_SEGMENT = (
    f"INSERT INTO segments ({SEGMENT_COLUMNS}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
LIST_SEGMENTS = (
    f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE topic = %s AND partition = %s "
    "AND base_offset >= COALESCE((SELECT MAX(base_offset) FROM segments "
    "WHERE topic = %s AND partition = %s AND base_offset <= %s), 0) "
    "ORDER BY base_offset LIMIT %s"
)
# LIST_SEGMENTS for each (partition, offset) of two arrays, in one query.
LIST_SEGMENTS_FROM = (
    f"SELECT {', '.join('s.' + c for c in SEGMENT_COLUMNS.split(', '))} "
    "FROM unnest(%s::int[], %s::bigint[]) AS a(p, o) CROSS JOIN LATERAL ("
    f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE topic = %s AND partition = a.p "
    "AND base_offset >= COALESCE((SELECT MAX(base_offset) FROM segments "
    "WHERE topic = %s AND partition = a.p AND base_offset <= a.o), 0) "
    "ORDER BY base_offset LIMIT %s) AS s ORDER BY s.partition, s.base_offset"
)
PARTITION_STATES = (
    "SELECT topic, partition, log_start_offset, high_watermark FROM partitions "
    "WHERE topic = ANY(%s) ORDER BY topic, partition"
)
SEGMENT_STATS = (
    "SELECT partition, COUNT(*), SUM(length)::bigint FROM segments WHERE topic = %s "
    "GROUP BY partition"
)
COMMITTED_KEYS = "SELECT key FROM objects WHERE key = ANY(%s)"

# The offsets asked for (d), those naming a partition that does not exist
# (bad), and their upsert (done), written in one order so that two writers
# lock rows in the same order; {only} adds a condition to the write.
_OFFSETS = (
    "WITH d AS (SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[], "
    '%(offsets)s::bigint[]) AS d(topic, partition, "offset")), '
    "bad AS (SELECT d.topic, d.partition FROM d LEFT JOIN topics t ON t.name = d.topic "
    "WHERE t.name IS NULL OR d.partition >= t.partitions), {entitled}"
    "done AS (INSERT INTO consumer_offsets "
    '(group_id, topic, partition, "offset", metadata, committed_at) '
    'SELECT %(group)s, topic, partition, "offset", %(metadata)s, %(at)s FROM d '
    "WHERE NOT EXISTS (SELECT 1 FROM bad){only} ORDER BY topic, partition "
    "ON CONFLICT (group_id, topic, partition) "
    'DO UPDATE SET "offset" = excluded."offset", metadata = excluded.metadata, '
    "committed_at = excluded.committed_at RETURNING 1) "
    "SELECT (SELECT topic FROM bad ORDER BY topic, partition LIMIT 1), "
    "(SELECT partition FROM bad ORDER BY topic, partition LIMIT 1), "
    "(SELECT count(*) FROM done)"
)
# One statement, so one round trip and an implicit transaction: it writes
# every offset, or none when one names a partition that does not exist.
# Returns that partition (or NULLs) and how many rows it wrote.
COMMIT_OFFSETS = _OFFSETS.format(entitled="", only="")
# COMMIT_OFFSETS for a member: it writes only if the member is live at its
# epoch (by the clock now, offset as the store's clock_offset) and owns every
# partition, so a refused member takes no lock on the offsets.
COMMIT_MEMBER_OFFSETS = _OFFSETS.format(
    entitled=(
        "entitled AS (SELECT 1 FROM group_members m WHERE m.group_id = %(group)s "
        "AND m.member_id = %(member)s AND m.member_epoch = %(epoch)s "
        "AND m.expires_at > extract(epoch FROM clock_timestamp())::float8 + %(clock_offset)s "
        "AND NOT EXISTS (SELECT 1 FROM d LEFT JOIN group_partitions p "
        "ON p.group_id = %(group)s AND p.topic = d.topic AND p.partition = d.partition "
        "WHERE p.owner IS DISTINCT FROM %(member)s)), "
    ),
    only=" AND EXISTS (SELECT 1 FROM entitled)",
)
FETCH_OFFSETS = (
    'SELECT topic, partition, "offset", metadata, committed_at FROM consumer_offsets '
    "WHERE group_id = %s"
)
LIST_GROUPS = (
    "SELECT group_id FROM consumer_offsets UNION SELECT group_id FROM group_members "
    "ORDER BY group_id"
)
DELETE_GROUP = tuple(
    f"DELETE FROM {table} WHERE group_id = %s"
    for table in ("consumer_offsets", "group_members", "group_partitions", "consumer_groups")
)


class AlreadyCommitted(Exception):
    """The object key was claimed by an earlier commit (rolls this one back)."""


def commit_object(
    conn: Conn, object_key: str, specs: Sequence[SegmentSpec], committed_at: float,
    channel: str, payload: str,
) -> list[SegmentInfo]:  # fmt: skip
    """One segment commit, in one transaction, in two round trips.

    Pipelined: claim the object key, lock the partition rows in (topic,
    partition) order, move their high watermarks; read the answers; insert
    the segments, NOTIFY, commit.

    Raises:
        AlreadyCommitted: the key was taken (the transaction rolled back).
        TopicNotFoundError, PartitionNotFoundError: a spec names neither.
    """
    totals: dict[tuple[str, int], int] = {}
    for spec in specs:
        key = (spec.topic, spec.partition)
        totals[key] = totals.get(key, 0) + spec.record_count
    keys = sorted(totals)
    topics, partitions = [k[0] for k in keys], [k[1] for k in keys]
    size = max(s.position + s.length for s in specs)
    with conn.pipeline(), conn.transaction():
        claim = conn.execute(CLAIM_OBJECT, (object_key, committed_at, size))
        lock = conn.execute(LOCK_PARTITIONS, (topics, partitions))
        conn.execute(MOVE_WATERMARKS, (topics, partitions, [totals[k] for k in keys]))
        if claim.fetchone() is None:
            raise AlreadyCommitted
        bases = {(topic, partition): hw for topic, partition, hw in lock.fetchall()}
        for topic, partition in keys:
            if (topic, partition) not in bases:
                row = conn.execute(GET_TOPIC, (topic,)).fetchone()
                raise partition_error(topic, None if row is None else row[1], partition)
        out = []
        for spec in specs:
            key = (spec.topic, spec.partition)
            base = bases[key]
            bases[key] = base + spec.record_count
            out.append(SegmentInfo(spec.topic, spec.partition, base, spec.record_count,
                                   object_key, spec.position, spec.length, spec.index_length,
                                   spec.min_timestamp, spec.max_timestamp,
                                   created_at=committed_at))  # fmt: skip
        with conn.cursor() as cur:
            cur.executemany(INSERT_SEGMENT, [segment_row(s) for s in out])
        conn.execute(NOTIFY, (channel, payload))
    return out


def migrate(conn: Conn, schema: str, where: str, *, create: bool) -> None:
    """Create the schema if missing and apply pending migrations, in one
    transaction, under an advisory lock that serialises concurrent openers."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"streamhouse:{schema}",))
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        if not exists:
            if not create:
                raise MetadataError(
                    f"{where}: the schema does not exist, and the store was opened with "
                    "create=False"
                )
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(SCHEMA_VERSION_TABLE)
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        current = row[0] if row else 0
        now = time.time()
        for migration in pending(int(current), where):
            for statement in migration.statements(Dialect.POSTGRES):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version VALUES (%s, %s, %s)",
                (migration.version, migration.description, now),
            )
