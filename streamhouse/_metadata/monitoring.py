"""What monitoring reads of the catalogue: every partition and every group offset, at once.

``MetadataStore.monitoring_snapshot`` answers the exporter's scrape with ONE
query, however many partitions and groups there are (a UNION of three
selects): each partition's bounds and stored bytes, each committed offset
with the timestamp of its record, as the catalogue knows it, and each
group's count of live members (sessions not run out by the database's
clock).

The timestamp is the ``min_timestamp`` of the segment holding the committed
offset (or of the next segment, when the offset is in a gap compaction left
or below the log start): the catalogue keeps no timestamp per record, and
reading the record's bytes would cost a GET per partition. So the age it
gives is that of the oldest record of that segment: older than the record
at the offset by at most the segment's span (one producer flush, 50 ms at
the default linger). Both look-ups are index seeks on the segments' primary
key (topic, partition, base_offset); measured with the exporter at 10,000
partitions, see docs/METRICS.md.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import InvalidArgumentError
from .._names import check_group_id
from .protocol import GroupOffset, MonitoringSnapshot, PartitionSummary

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresMonitoring", "SQLiteMonitoring"]

T = TypeVar("T")


def _statement(placeholder: str, groups: str | None, bytes_type: str, now: str) -> str:
    seg = "s.topic = o.topic AND s.partition = o.partition"
    where = "" if groups is None else f" WHERE o.group_id {groups}"
    members = "" if groups is None else f" AND m.group_id {groups}"
    return (
        "SELECT 'p', p.topic, p.partition, p.log_start_offset, p.high_watermark, "
        f"CAST(COALESCE((SELECT SUM(s.length) FROM segments AS s WHERE s.topic = p.topic "
        f"AND s.partition = p.partition), 0) AS {bytes_type}), NULL "
        "FROM partitions AS p "
        "UNION ALL "
        "SELECT 'g', o.topic, o.partition, o.\"offset\", COALESCE("
        '(SELECT CASE WHEN s.end_offset > o."offset" THEN s.min_timestamp END '
        f'FROM segments AS s WHERE {seg} AND s.base_offset <= o."offset" '
        "ORDER BY s.base_offset DESC LIMIT 1), "
        f"(SELECT s.min_timestamp FROM segments AS s WHERE {seg} "
        'AND s.base_offset > o."offset" ORDER BY s.base_offset LIMIT 1)), '
        f"NULL, o.group_id FROM consumer_offsets AS o{where} "
        "UNION ALL "
        "SELECT 'm', NULL, NULL, COUNT(*), NULL, NULL, m.group_id FROM group_members AS m "
        f"WHERE m.expires_at > ({now}){members} GROUP BY m.group_id"
    ).replace("?", placeholder)


# "Now" as membership reads it: the database's clock, in seconds since 1970.
_SQLITE_NOW = "(julianday('now') - 2440587.5) * 86400.0"
_POSTGRES_NOW = "extract(epoch FROM clock_timestamp())::float8"


_SQLITE_ALL = _statement("?", None, "INTEGER", _SQLITE_NOW)
_SQLITE_GROUPS = _statement("?", "IN (SELECT value FROM json_each(?))", "INTEGER", _SQLITE_NOW)
_POSTGRES_ALL = _statement("%s", None, "BIGINT", _POSTGRES_NOW)
_POSTGRES_GROUPS = _statement("%s", "= ANY(?)", "BIGINT", _POSTGRES_NOW)


def _snapshot(rows: Iterable[Sequence[Any]]) -> MonitoringSnapshot:
    partitions: list[PartitionSummary] = []
    offsets: list[GroupOffset] = []
    members: dict[str, int] = {}
    for kind, topic, partition, a, b, size, group in rows:
        if kind == "p":
            partitions.append(PartitionSummary(topic, partition, a, b, size))
        elif kind == "g":
            offsets.append(GroupOffset(group, topic, partition, a, b))
        else:
            members[group] = a
    return MonitoringSnapshot(partitions, offsets, members)


def _groups(groups: Sequence[str] | None) -> list[str] | None:
    if groups is None:
        return None
    if isinstance(groups, str) or not isinstance(groups, Sequence | set | frozenset):
        raise InvalidArgumentError(f"groups must be a sequence of group ids, not {groups!r}")
    return [check_group_id(g) for g in groups]


class SQLiteMonitoring:
    """``monitoring_snapshot`` on SQLite (a mixin of SQLiteMetadataStore)."""

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # pragma: no cover - SQLiteMetadataStore's

    async def monitoring_snapshot(self, groups: Sequence[str] | None = None) -> MonitoringSnapshot:
        names = _groups(groups)
        if names is None:
            return await self._run(lambda conn: _snapshot(conn.execute(_SQLITE_ALL)))
        param = (json.dumps(names),) * 2  # the offsets' filter and the members'
        return await self._run(lambda conn: _snapshot(conn.execute(_SQLITE_GROUPS, param)))


class PostgresMonitoring:
    """``monitoring_snapshot`` on PostgreSQL (a mixin of PostgresMetadataStore)."""

    async def _run(self, fn: Callable[[psycopg.Connection[Any]], T], *, write: bool = False) -> T:
        raise NotImplementedError  # pragma: no cover - PostgresMetadataStore's

    async def monitoring_snapshot(self, groups: Sequence[str] | None = None) -> MonitoringSnapshot:
        names = _groups(groups)
        if names is None:
            return await self._run(lambda conn: _snapshot(conn.execute(_POSTGRES_ALL)))
        param = (names, names)  # the offsets' filter and the members'
        return await self._run(lambda conn: _snapshot(conn.execute(_POSTGRES_GROUPS, param)))
