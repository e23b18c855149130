"""One schema for every metadata store, changed only by versioned migrations.

``MIGRATIONS`` is the whole history of the schema, oldest first. A store
records the versions it applied in a ``schema_version`` table; at open it
applies, in one transaction, every migration newer than the newest it has,
and refuses (MetadataError naming both versions) a database written by a
newer StreamHouse. Both stores share the numbering: version N means the same
tables on SQLite and on PostgreSQL, each migration carrying the statements of
each dialect.

To change the schema, append a ``Migration`` with the next version and its
statements for both dialects; never edit one that has shipped. A migration
runs inside the opening transaction, so its statements must be
transactional (on PostgreSQL that excludes ``CREATE INDEX CONCURRENTLY``).

The first wave of StreamHouse marked its SQLite files with ``PRAGMA
user_version = 1`` and had no ``schema_version`` table: such a file counts as
version 1 (see ``SQLITE_LEGACY_VERSION``).
"""

from __future__ import annotations

import enum

import attrs

from .._errors import MetadataError

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "SCHEMA_VERSION_TABLE",
    "SQLITE_LEGACY_VERSION",
    "Dialect",
    "Migration",
    "pending",
]


class Dialect(enum.Enum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"


@attrs.frozen
class Migration:
    """One step of the schema: its version, what it does, its statements."""

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect is Dialect.SQLITE else self.postgres


_V1_SQLITE = (
    """CREATE TABLE IF NOT EXISTS topics (
        name        TEXT PRIMARY KEY,
        partitions  INTEGER NOT NULL,
        created_at  REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS partitions (
        topic             TEXT NOT NULL,
        partition         INTEGER NOT NULL,
        log_start_offset  INTEGER NOT NULL DEFAULT 0,
        high_watermark    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (topic, partition)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS objects (
        key           TEXT PRIMARY KEY,
        committed_at  REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS segments (
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
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS segments_by_object ON segments (object_key, position)",
    """CREATE TABLE IF NOT EXISTS consumer_offsets (
        group_id      TEXT NOT NULL,
        topic         TEXT NOT NULL,
        partition     INTEGER NOT NULL,
        "offset"      INTEGER NOT NULL,
        metadata      TEXT NOT NULL DEFAULT '',
        generation    INTEGER NOT NULL DEFAULT -1,
        committed_at  REAL NOT NULL,
        PRIMARY KEY (group_id, topic, partition)
    ) WITHOUT ROWID""",
)

# The same tables in PostgreSQL's types: offsets, counts, byte positions and
# millisecond timestamps are 64-bit.
_V1_POSTGRES = (
    """CREATE TABLE topics (
        name        TEXT PRIMARY KEY,
        partitions  INTEGER NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE partitions (
        topic             TEXT NOT NULL,
        partition         INTEGER NOT NULL,
        log_start_offset  BIGINT NOT NULL DEFAULT 0,
        high_watermark    BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (topic, partition)
    )""",
    """CREATE TABLE objects (
        key           TEXT PRIMARY KEY,
        committed_at  DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE segments (
        topic          TEXT NOT NULL,
        partition      INTEGER NOT NULL,
        base_offset    BIGINT NOT NULL,
        record_count   BIGINT NOT NULL,
        object_key     TEXT NOT NULL,
        position       BIGINT NOT NULL,
        length         BIGINT NOT NULL,
        index_length   BIGINT NOT NULL,
        min_timestamp  BIGINT NOT NULL,
        max_timestamp  BIGINT NOT NULL,
        created_at     DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (topic, partition, base_offset)
    )""",
    "CREATE INDEX segments_by_object ON segments (object_key, position)",
    """CREATE TABLE consumer_offsets (
        group_id      TEXT NOT NULL,
        topic         TEXT NOT NULL,
        partition     INTEGER NOT NULL,
        "offset"      BIGINT NOT NULL,
        metadata      TEXT NOT NULL DEFAULT '',
        generation    INTEGER NOT NULL DEFAULT -1,
        committed_at  DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (group_id, topic, partition)
    )""",
)

_DROP_GENERATION = ("ALTER TABLE consumer_offsets DROP COLUMN generation",)


def _maintenance(real: str, bigint: str) -> tuple[str, ...]:
    """Version 3's statements, in a dialect's types (they are otherwise the same)."""
    return (
        # Topic settings (None: unlimited), as Kafka's topic configs.
        f"ALTER TABLE topics ADD COLUMN retention_seconds {real}",
        f"ALTER TABLE topics ADD COLUMN retention_bytes {bigint}",
        "ALTER TABLE topics ADD COLUMN cleanup_policy TEXT NOT NULL DEFAULT 'delete'",
        f"ALTER TABLE topics ADD COLUMN delete_retention_seconds {real} NOT NULL DEFAULT 86400",
        # Compaction's checkpoint per partition.
        f"ALTER TABLE partitions ADD COLUMN cleaned_offset {bigint} NOT NULL DEFAULT 0",
        f"ALTER TABLE partitions ADD COLUMN oldest_tombstone {real}",
        # A compacted segment spans more offsets than it holds records.
        f"ALTER TABLE segments ADD COLUMN end_offset {bigint}",
        "UPDATE segments SET end_offset = base_offset + record_count",
        # An object's life: its size; when a segment pointing into it last went
        # (maintenance deletes it a grace period later, once none is left); the
        # lease epoch of the maintainer deleting it; when it was deleted (the
        # row stays a while, so that a producer's late retry of its commit
        # finds the key taken).
        f"ALTER TABLE objects ADD COLUMN size {bigint}",
        f"ALTER TABLE objects ADD COLUMN released_at {real}",
        f"ALTER TABLE objects ADD COLUMN claimed_epoch {bigint}",
        f"ALTER TABLE objects ADD COLUMN deleted_at {real}",
        "UPDATE objects SET size = (SELECT MAX(s.position + s.length) FROM segments AS s "
        "WHERE s.object_key = objects.key)",
        "CREATE INDEX objects_released ON objects (released_at) WHERE released_at IS NOT NULL",
        "CREATE INDEX objects_claimed ON objects (claimed_epoch) WHERE claimed_epoch IS NOT NULL",
        "CREATE INDEX objects_deleted ON objects (deleted_at) WHERE deleted_at IS NOT NULL",
        # One maintainer at a time: the holder, its epoch (the fence), until when.
        f"""CREATE TABLE maintenance_lease (
            name        TEXT PRIMARY KEY,
            holder      TEXT NOT NULL,
            epoch       {bigint} NOT NULL,
            expires_at  {real} NOT NULL
        )""",
        "INSERT INTO maintenance_lease VALUES ('maintenance', '', 0, 0)",
    )


def _groups(real: str, bigint: str) -> tuple[str, ...]:
    """Version 4's statements: consumer group membership (see ``groups``)."""
    return (
        # One row a group: its epoch moves when membership or partitions change;
        # PostgreSQL locks this row for the length of a heartbeat.
        f"""CREATE TABLE consumer_groups (
            group_id  TEXT PRIMARY KEY,
            epoch     {bigint} NOT NULL DEFAULT 0
        )""",
        f"""CREATE TABLE group_members (
            group_id         TEXT NOT NULL,
            member_id        TEXT NOT NULL,
            instance_id      TEXT,
            member_epoch     {bigint} NOT NULL,
            subscription     TEXT NOT NULL,
            session_timeout  {real} NOT NULL,
            expires_at       {real} NOT NULL,
            last_heartbeat   {real} NOT NULL,
            PRIMARY KEY (group_id, member_id)
        )""",
        "CREATE UNIQUE INDEX group_members_instance ON group_members (group_id, instance_id) "
        "WHERE instance_id IS NOT NULL",
        # Per partition of a subscribed topic: its owner, the owner's epoch, and
        # the member it goes to once the owner has released it.
        f"""CREATE TABLE group_partitions (
            group_id       TEXT NOT NULL,
            topic          TEXT NOT NULL,
            partition      INTEGER NOT NULL,
            owner          TEXT,
            owner_epoch    {bigint},
            pending_owner  TEXT,
            PRIMARY KEY (group_id, topic, partition)
        )""",
        "CREATE INDEX group_partitions_by_topic ON group_partitions (topic)",
    )


# Version 5: seconds since the epoch (0: never swept); see _maintenance/orphans.
_SWEPT_TO = "ALTER TABLE maintenance_lease ADD COLUMN orphans_swept_to {real} NOT NULL DEFAULT 0"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "topics, partitions, objects, segments, consumer offsets",
        sqlite=_V1_SQLITE,
        postgres=_V1_POSTGRES,
    ),
    Migration(
        2,
        "consumer_offsets loses its generation column, which nothing used "
        "(group membership will bring member epochs)",
        sqlite=_DROP_GENERATION,
        postgres=_DROP_GENERATION,
    ),
    Migration(
        3,
        "maintenance: topic retention and cleanup settings, segment end offsets, "
        "compaction checkpoints, object sizes and lifetimes, the maintenance lease",
        sqlite=_maintenance("REAL", "INTEGER"),
        postgres=_maintenance("DOUBLE PRECISION", "BIGINT"),
    ),
    Migration(
        4,
        "consumer groups: the group epoch, members and their sessions, partition owners",
        sqlite=_groups("REAL", "INTEGER"),
        postgres=_groups("DOUBLE PRECISION", "BIGINT"),
    ),
    Migration(
        5,
        "the orphan sweep's mark: every object key stamped before it has been examined",
        sqlite=(_SWEPT_TO.format(real="REAL"),),
        postgres=(_SWEPT_TO.format(real="DOUBLE PRECISION"),),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

SQLITE_LEGACY_VERSION = 1
"""A SQLite file with ``PRAGMA user_version = 1`` and no ``schema_version``
table was made by the first wave: its tables are version 1's."""

SCHEMA_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY,"
    " description TEXT NOT NULL,"
    " applied_at DOUBLE PRECISION NOT NULL)"
)
"""The one table outside the migrations: it says which of them ran."""


def pending(current: int, where: str) -> tuple[Migration, ...]:
    """The migrations a database at version ``current`` still needs, in order.

    Raises:
        MetadataError: the database is newer than this StreamHouse knows.
    """
    if current > LATEST_VERSION:
        raise MetadataError(
            f"{where} has metadata schema version {current}, but this StreamHouse knows "
            f"versions up to {LATEST_VERSION}: upgrade StreamHouse to use it"
        )
    return tuple(m for m in MIGRATIONS if m.version > current)


def _check_history() -> None:
    versions = [m.version for m in MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1)), "migrations are numbered 1, 2, ..."


_check_history()
