"""SQLite's side of the schema (migrating a file at open) and its catalogue watch."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import attrs

from .common import check_timeout
from .schema import (
    LATEST_VERSION,
    MIGRATIONS,
    SCHEMA_VERSION_TABLE,
    SQLITE_LEGACY_VERSION,
    Dialect,
    pending,
)

__all__ = ["SQLiteWatch", "migrate", "write_transaction"]

T = TypeVar("T")


def write_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _schema_version(conn: sqlite3.Connection) -> int:
    """The newest migration applied (the first wave's files say so in user_version)."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if has_table:
        (version,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        return int(version)
    (legacy,) = conn.execute("PRAGMA user_version").fetchone()
    return SQLITE_LEGACY_VERSION if legacy == SQLITE_LEGACY_VERSION else 0


def migrate(conn: sqlite3.Connection, where: str) -> None:
    """Bring the database to LATEST_VERSION in one transaction (see ``schema``)."""

    def apply(c: sqlite3.Connection) -> None:
        current = _schema_version(c)  # again: another process may have migrated
        todo = pending(current, where)
        if not todo:
            return
        c.execute(SCHEMA_VERSION_TABLE)
        now = time.time()
        if (
            current == SQLITE_LEGACY_VERSION
            and not c.execute("SELECT 1 FROM schema_version").fetchone()
        ):
            c.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                (current, MIGRATIONS[current - 1].description + " (first wave)", now),
            )
        for migration in todo:
            for statement in migration.statements(Dialect.SQLITE):
                c.execute(statement)
            c.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                (migration.version, migration.description, now),
            )
        # Kept in step for tools that read it (sqlite3's .dbinfo, the first wave).
        c.execute(f"PRAGMA user_version = {LATEST_VERSION}")

    if _schema_version(conn) != LATEST_VERSION:
        write_transaction(conn, apply)


@attrs.define(eq=False)
class SQLiteWatch:
    """A CatalogueWatch on SQLite: cheap local polling of ``data_version``.

    SQLite has no notifications; a look at the counter costs a thread hop
    and no query of the tables, so polling every ``watch_interval`` is far
    cheaper than refreshing the partitions that often. Any commit to the
    file wakes every watch (the counter is per database, not per topic).
    """

    _interval: float
    _counter: Callable[[], Awaitable[int | None]]
    _seen: int | None = None
    _started: bool = False

    @property
    def pushed(self) -> bool:
        return False  # no notifications: every wait looks at the counter

    async def wait(self, timeout: float) -> bool:
        timeout = check_timeout(timeout)
        deadline = anyio.current_time() + timeout
        while True:
            version = await self._counter()
            if not self._started or version != self._seen:
                self._started, self._seen = True, version
                return True
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return False
            await anyio.sleep(min(remaining, self._interval))
