"""SQLite specifics: first-wave files migrate, paths fail clearly, read-only
use creates nothing, and a watch sees other connections' commits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from streamhouse import (
    ConfigurationError,
    MetadataError,
    SQLiteMetadataStore,
    TopicPartition,
    metadata_store_from_url,
)
from streamhouse._metadata.protocol import SegmentSpec
from streamhouse._metadata.schema import LATEST_VERSION, MIGRATIONS

pytestmark = pytest.mark.anyio

# The schema exactly as the first wave's sqlite.py wrote it (PRAGMA
# user_version = 1, no schema_version table), copied from main at ea94acb.
FIRST_WAVE_SCHEMA = """
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


def first_wave_file(path: Path) -> None:
    """A metadata file as the first wave left it: one topic, a segment, an offset."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(FIRST_WAVE_SCHEMA)
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO topics VALUES ('old', 2, 1.5)")
    conn.executemany("INSERT INTO partitions (topic, partition) VALUES ('old', ?)", [(0,), (1,)])
    conn.execute("UPDATE partitions SET high_watermark = 7 WHERE partition = 0")
    conn.execute("INSERT INTO objects VALUES ('obj-1', 2.0)")
    conn.execute("INSERT INTO segments VALUES ('old', 0, 0, 7, 'obj-1', 0, 100, 40, 1, 2, 2.0)")
    conn.execute("INSERT INTO consumer_offsets VALUES ('g', 'old', 0, 5, 'm', 3, 2.5)")
    conn.close()


async def test_a_first_wave_file_opens_and_migrates(tmp_path: Path) -> None:
    """A file made by the first wave keeps its data and reaches the latest version."""
    path = tmp_path / "old.db"
    first_wave_file(path)
    store = SQLiteMetadataStore(path)
    assert (await store.get_topic("old")).partitions == 2
    assert (await store.partition_states(["old"]))[0].high_watermark == 7
    assert (await store.fetch_offsets("g"))[TopicPartition("old", 0)].offset == 5
    more = await store.commit_segments("obj-2", [SegmentSpec("old", 0, 3, 0, 10, 4, 1, 2)])
    assert more[0].base_offset == 7
    # Version 3: old segments get their end offsets, old objects their sizes.
    assert [(s.base_offset, s.end_offset) for s in await store.list_segments("old", 0)] == [
        (0, 7), (7, 10),
    ]  # fmt: skip
    assert (await store.get_topic("old")).config.cleanup_policy == "delete"
    await store.aclose()
    conn = sqlite3.connect(path)
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
    columns = [row[1] for row in conn.execute("PRAGMA table_info(consumer_offsets)")]
    (user_version,) = conn.execute("PRAGMA user_version").fetchone()
    conn.close()
    assert versions == [m.version for m in MIGRATIONS]
    assert user_version == LATEST_VERSION
    assert "generation" not in columns
    conn = sqlite3.connect(path)
    sizes = dict(conn.execute("SELECT key, size FROM objects").fetchall())
    conn.close()
    assert sizes == {"obj-1": 100, "obj-2": 10}


async def test_a_newer_file_is_refused_naming_both_versions(tmp_path: Path) -> None:
    """A file from a newer StreamHouse raises MetadataError with both versions."""
    path = tmp_path / "new.db"
    store = SQLiteMetadataStore(path)
    await store.list_topics()
    await store.aclose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', 0)", (99,))
    conn.close()
    newer = SQLiteMetadataStore(path)
    with pytest.raises(MetadataError, match=f"version 99.*up to {LATEST_VERSION}"):
        await newer.list_topics()
    await newer.aclose()


async def test_a_path_that_cannot_be_made_is_a_configuration_error(tmp_path: Path) -> None:
    """A database under a regular file raises ConfigurationError naming the path."""
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / "sub" / "meta.db"
    store = metadata_store_from_url(f"sqlite:///{path}")
    with pytest.raises(ConfigurationError, match=str(path)):
        await store.list_topics()
    await store.aclose()


@pytest.mark.parametrize("kind", ["directory", "not a database"])
async def test_a_path_that_is_no_database_is_a_configuration_error(
    tmp_path: Path, kind: str
) -> None:
    """A directory or a foreign file at the path raises ConfigurationError naming it."""
    path = tmp_path / "meta.db"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"this is not a SQLite database, just text" * 100)
    store = SQLiteMetadataStore(path)
    with pytest.raises(ConfigurationError, match=str(path)):
        await store.list_topics()
    await store.aclose()


async def test_a_read_only_store_creates_nothing(tmp_path: Path) -> None:
    """With create=False a missing file reads as empty, makes no file, refuses writes."""
    path = tmp_path / "absent" / "meta.db"
    store = SQLiteMetadataStore(path, create=False)
    assert await store.list_topics() == []
    assert await store.partition_states(["t"]) == []
    assert await store.list_groups() == []
    await store.watch(["t"]).wait(0)
    with pytest.raises(MetadataError, match="create=False"):
        await store.create_topic("t", 1)
    assert not path.parent.exists()
    await store.aclose()
    writer = SQLiteMetadataStore(path)
    await writer.create_topic("t", 1)
    await writer.aclose()
    reader = SQLiteMetadataStore(path, create=False)
    assert [t.name for t in await reader.list_topics()] == ["t"]
    await reader.aclose()


async def test_a_watch_wakes_on_another_connections_commit(
    tmp_path: Path, autojump_clock: object
) -> None:
    """A watch waits out its timeout when idle and wakes when another store commits."""
    path = tmp_path / "meta.db"
    reader = SQLiteMetadataStore(path, watch_interval=0.05)
    writer = SQLiteMetadataStore(path)
    await writer.create_topic("t", 1)
    watch = reader.watch(["t"])
    assert await watch.wait(10) is True  # the first wait returns at once
    start = anyio.current_time()
    assert await watch.wait(1.0) is False  # the timeout, nothing seen
    assert anyio.current_time() - start == pytest.approx(1.0)
    assert await watch.wait(0) is False  # a look: nothing moved
    await writer.commit_segments("o", [SegmentSpec("t", 0, 1, 0, 10, 4, 1, 2)])
    start = anyio.current_time()
    assert await watch.wait(10) is True
    assert anyio.current_time() - start <= 0.05 + 1e-9
    await reader.aclose()
    await writer.aclose()


async def test_open_stores_can_leave_the_metadata_uncreated(tmp_path: Path) -> None:
    """open_stores(create_metadata=False) reads a missing database as empty, making nothing."""
    from streamhouse import LocalObjectStore
    from streamhouse._config import open_stores

    url = f"sqlite:///{tmp_path / 'absent' / 'meta.db'}"
    storage = LocalObjectStore(tmp_path / "objects")
    async with open_stores(storage, url, create_metadata=False) as (_, meta):
        assert await meta.list_topics() == []
    assert not (tmp_path / "absent").exists()
    await storage.aclose()
