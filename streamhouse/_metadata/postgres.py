"""PostgresMetadataStore: the metadata of many machines in one PostgreSQL.

psycopg 3 with a psycopg_pool connection pool, synchronous, each call in a
worker thread through anyio behind a capacity limiter the size of the pool
(psycopg's async API needs asyncio; StreamHouse runs under trio too). One
URL names the server and a schema, ``postgresql://user@host/db?schema=NAME``;
the schema is created if missing, so one database holds many isolated logs.
Everything else in the URL is libpq's own, and so are its other sources
(PGHOST, PGPASSWORD, ~/.pgpass, ...): the URL goes to libpq as it is.

Offsets: a segment commit is one transaction that first claims its object
key (``INSERT ... ON CONFLICT DO NOTHING``: a second commit of the same key,
even one racing the first, waits for it and returns its offsets), then
locks the partition rows it moves with ``SELECT ... ORDER BY ... FOR
UPDATE`` (one fixed order for every writer: no deadlock), moves their high
watermarks, inserts the segments and NOTIFYs the topics (see
``pg_listen``). Producers on many machines therefore get gap-free,
disjoint offsets.

Failures: a connection that breaks mid-call (the server restarted, an
administrator terminated the backend) is retried with the retry policy on
a fresh connection; retrying is safe because every write is one transaction
and a segment commit whose answer was lost finds its object key claimed and
returns the offsets it got. No connection within ``connect_timeout`` is a
MetadataUnavailableError; a wrong password, role or database a
ConfigurationError; every statement runs under ``statement_timeout``.
psycopg's exceptions never leave this module, and the password never
appears in a repr, a log line or an error.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import psycopg
import psycopg.conninfo
import psycopg.errors
import psycopg_pool
from psycopg import sql

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
from .._retry import RetryBurst, RetryPolicy, retry_call
from . import pg_queries as q
from .common import (
    AllTokens,
    check_recommitted,
    check_segment_specs,
    check_timeout,
    config_row,
    segment,
    topic_info,
)
from .monitoring import PostgresMonitoring
from .pg_groups import PostgresGroups
from .pg_listen import Listener, PostgresWatch, channel_for, notify_payload
from .pg_maint import PostgresMaintenance
from .pg_url import check_schema_name, redact, split_postgres_url
from .protocol import (
    CatalogueWatch,
    PartitionState,
    SegmentInfo,
    SegmentSpec,
    TopicConfig,
    TopicInfo,
)

__all__ = ["PostgresMetadataStore"]

T = TypeVar("T")
Conn = psycopg.Connection[Any]
log = logging.getLogger("streamhouse.metadata")
_BIGINT_MAX = 2**63 - 1

_CONFIG_ERRORS = (
    "password authentication failed", "no password supplied", "authentication failed",
    "does not exist", "pg_hba.conf", "permission denied", "invalid", "certificate",
)  # fmt: skip
# Errors after which the same call may succeed on another connection.
_TRANSIENT = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    # The server ended a session whose transaction waited past
    # idle_in_transaction_timeout (its client was paused): the transaction
    # was rolled back, so the call may run again on a new connection.
    psycopg.errors.IdleInTransactionSessionTimeout,
)


class _BrokenConnection(MetadataUnavailableError):
    """A call's connection broke (or it lost a serialization race): the same
    call may succeed on another connection, so it is retried."""


class PostgresMetadataStore(PostgresMaintenance, PostgresGroups, PostgresMonitoring):
    """The MetadataStore protocol on a schema of a PostgreSQL database.

    Args:
        url: ``postgresql://[user[:password]@][host][:port][/dbname][?param=value...]``
            (``postgres://`` too), passed to libpq as it is except for
            ``schema=NAME``.
        schema: the schema holding the tables (created if missing); wins over
            the URL's ``schema``; ``streamhouse`` by default.
        connect_timeout: seconds to get a connection before a call fails
            with MetadataUnavailableError.
        statement_timeout: seconds any one statement may run.
        idle_in_transaction_timeout: seconds a transaction of this store may
            sit waiting for its client before the server ends the session,
            releasing its locks. Ours send their statements back to back
            (milliseconds); one that waits this long belongs to a paused
            client (SIGSTOP, a frozen VM, a network partition), and a paused
            group member holding its group's row lock stalled every other
            member's heartbeat until it came back.
        max_connections: the pool's size, and the calls running at once.
        retry: how calls whose connection broke are retried.
        poll_interval: how often a watch looks while the listener is down.
        create: create the schema and tables if missing; with ``False`` a
            missing schema is a MetadataError and nothing is created.

    Raises:
        ConfigurationError: a malformed URL or schema name (at once); a
            wrong password, role or database (at the first call).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        connect_timeout: float = 10.0,
        statement_timeout: float = 30.0,
        idle_in_transaction_timeout: float = 5.0,
        max_connections: int = 4,
        retry: RetryPolicy | None = None,
        poll_interval: float = 0.05,
        create: bool = True,
    ) -> None:
        conninfo, url_schema = split_postgres_url(url)
        self._conninfo = conninfo
        self.schema: str = (
            check_schema_name(schema) if schema is not None else url_schema or "streamhouse"
        )
        for name, value in (("connect_timeout", connect_timeout),
                            ("statement_timeout", statement_timeout),
                            ("idle_in_transaction_timeout", idle_in_transaction_timeout),
                            ("poll_interval", poll_interval)):  # fmt: skip
            if check_timeout(value, name) == 0:
                raise InvalidArgumentError(f"{name} must be > 0, not {value!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) \
                or max_connections < 1:  # fmt: skip
            raise InvalidArgumentError(
                f"max_connections must be an int >= 1, not {max_connections!r}"
            )
        self.connect_timeout = float(connect_timeout)
        self.statement_timeout = float(statement_timeout)
        self.idle_in_transaction_timeout = float(idle_in_transaction_timeout)
        self.max_connections = max_connections
        self.retry = retry or RetryPolicy()
        self.poll_interval = float(poll_interval)
        self.create = create
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
        self._secret = params.get("password")
        # Named for pg_stat_activity, unless the URL names it.
        self._application = None if "application_name" in params else f"streamhouse:{self.schema}"
        self._where = f"{redact(conninfo)} (schema {self.schema})"
        self._burst = RetryBurst(log, f"PostgreSQL at {self._where}")
        self._channel = channel_for(self.schema)
        self._limiter = anyio.CapacityLimiter(max_connections)
        # Watches wait in threads of their own, so that they never hold a
        # token the store's calls need; 64 bounds the threads of cancelled
        # waits still blocked until their timeout.
        self._watch_limiter = anyio.CapacityLimiter(64)
        self._lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[Conn] | None = None
        self._listener: Listener | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresMetadataStore({self._where!r})"

    # -- plumbing ----------------------------------------------------------

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc).strip()
        if self._secret:
            text = text.replace(str(self._secret), "***")
        return text

    def _connect(self) -> Conn:
        """A new connection outside the pool (migrations, the listener)."""
        try:
            return psycopg.connect(self._conninfo, **self._connect_kwargs())
        except psycopg.Error as exc:
            text = self._scrub(exc)
            if any(marker in text for marker in _CONFIG_ERRORS):
                raise ConfigurationError(f"cannot use {self._where}: {text}") from exc
            raise MetadataUnavailableError(f"cannot reach {self._where}: {text}") from exc

    def _connect_kwargs(self) -> dict[str, Any]:
        # libpq counts whole seconds and treats less than 2 as 2.
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(self.connect_timeout)),
        }
        if self._application:
            kwargs["application_name"] = self._application
        return kwargs

    def _configure(self, conn: Conn) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        for setting, seconds in (
            ("statement_timeout", self.statement_timeout),
            ("idle_in_transaction_session_timeout", self.idle_in_transaction_timeout),
        ):
            conn.execute(
                "SELECT set_config(%s, %s, false)", (setting, f"{math.ceil(seconds * 1000)}ms")
            )

    def _open_pool(self) -> psycopg_pool.ConnectionPool[Conn]:
        """The pool, opened (and the schema migrated) by the first call."""
        with self._lock:
            if self._closed:
                raise ClosedError("the metadata store is closed")
            if self._pool is not None:
                return self._pool
            with self._connect() as conn:
                self._configure(conn)
                try:
                    q.migrate(conn, self.schema, self._where, create=self.create)
                except psycopg.errors.InsufficientPrivilege as exc:
                    raise ConfigurationError(
                        f"{self._where}: the role may not create or upgrade the schema "
                        f"({self._scrub(exc)}); grant it CREATE on the database, or have "
                        "the schema created by one that may"
                    ) from exc
            pool = psycopg_pool.ConnectionPool(
                self._conninfo,
                kwargs=self._connect_kwargs(),
                min_size=1, max_size=self.max_connections, open=False,
                configure=self._configure, timeout=self.connect_timeout,
                num_workers=1, name=f"streamhouse-{self.schema}",
            )  # fmt: skip
            try:
                pool.open(wait=True, timeout=self.connect_timeout)
            except psycopg_pool.PoolTimeout:
                pool.close()
                raise MetadataUnavailableError(
                    f"no connection to {self._where} within {self.connect_timeout}s"
                ) from None
            self._pool = pool
            return pool

    def _call(self, fn: Callable[[Conn], T], write: bool, check: bool) -> T:
        pool = self._open_pool()
        if check:
            pool.check()  # drop the idle connections that broke with the last one
        with pool.connection(timeout=self.connect_timeout) as conn:
            if not write:
                return fn(conn)
            with conn.transaction():
                return fn(conn)

    async def _run(self, fn: Callable[[Conn], T], *, write: bool = False) -> T:
        """Run ``fn`` in a worker thread, retrying broken connections (the one
        retry loop of ``_retry``), and translate psycopg's errors."""
        broken = False

        async def attempt() -> T:
            nonlocal broken
            if self._closed:
                raise ClosedError("the metadata store is closed")
            try:
                return await anyio.to_thread.run_sync(
                    self._call, fn, write, broken, limiter=self._limiter
                )
            except psycopg_pool.PoolClosed:
                raise ClosedError("the metadata store is closed") from None
            except psycopg_pool.PoolTimeout as exc:
                raise MetadataUnavailableError(
                    f"no connection to {self._where} within {self.connect_timeout}s"
                ) from exc
            except psycopg.errors.QueryCanceled as exc:
                raise MetadataUnavailableError(
                    f"{self._where}: a statement ran past statement_timeout "
                    f"({self.statement_timeout}s)"
                ) from exc
            except _TRANSIENT as exc:
                broken = True
                raise _BrokenConnection(f"{self._where}: {self._scrub(exc)}") from exc
            except psycopg.Error as exc:
                raise MetadataError(f"{self._where}: {self._scrub(exc)}") from exc

        return await retry_call(
            attempt, policy=self.retry, burst=self._burst, retriable=_BrokenConnection
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close_all() -> None:
            with self._lock:
                pool, self._pool = self._pool, None
                listener, self._listener = self._listener, None
            if listener is not None:
                listener.stop()
            if pool is not None:
                pool.close(timeout=5)

        with anyio.CancelScope(shield=True):
            # Calls in flight hold tokens; wait for them, then close.
            async with AllTokens(self._limiter):
                await anyio.to_thread.run_sync(close_all)

    # -- watching ----------------------------------------------------------

    def watch(self, topics: Sequence[str]) -> CatalogueWatch:
        for topic in topics:
            check_topic_name(topic)
        return PostgresWatch(self._listening, topics, self.poll_interval, self._watch_limiter)

    def _listening(self) -> Listener:
        with self._lock:
            if self._closed:
                raise ClosedError("the metadata store is closed")
            if self._listener is None:
                self._listener = Listener(self._connect, self._channel, self.retry, self._where)
                self._listener.start()
            return self._listener

    # -- topics ------------------------------------------------------------

    async def create_topic(
        self, name: str, partitions: int, config: TopicConfig | None = None
    ) -> TopicInfo:
        check_topic_name(name)
        check_partition_count(partitions)
        config = TopicConfig() if config is None else config
        values = (name, partitions, time.time(), *config_row(config))

        def create(conn: Conn) -> TopicInfo:
            row = conn.execute(q.INSERT_TOPIC, values).fetchone()
            if row is None:
                existing = conn.execute(q.GET_TOPIC, (name,)).fetchone()
                # The same values: this is a retry whose first answer was lost.
                if existing is None or tuple(existing) != values:
                    raise TopicExistsError(f"topic {name!r} already exists")
            conn.execute(q.INSERT_PARTITIONS, (name, partitions))
            return topic_info(values)

        return await self._run(create, write=True)

    async def get_topic(self, name: str) -> TopicInfo:
        check_topic_name(name)

        def get(conn: Conn) -> TopicInfo:
            row = conn.execute(q.GET_TOPIC, (name,)).fetchone()
            if row is None:
                raise TopicNotFoundError(f"topic {name!r} does not exist")
            return topic_info(row)

        return await self._run(get)

    async def list_topics(self) -> list[TopicInfo]:
        return await self._run(lambda conn: [topic_info(r) for r in conn.execute(q.LIST_TOPICS)])

    async def delete_topic(self, name: str) -> None:
        check_topic_name(name)
        now = time.time()
        runs = 0

        def delete(conn: Conn) -> None:
            nonlocal runs
            runs += 1
            if conn.execute(q.DELETE_TOPIC, (name,)).rowcount == 0:
                if runs > 1:
                    return  # an earlier try whose answer was lost deleted it
                raise TopicNotFoundError(f"topic {name!r} does not exist")
            conn.execute(q.RELEASE_TOPIC_OBJECTS, (now, name))
            for statement in q.DELETE_TOPIC_ROWS:
                conn.execute(statement, (name,))
            conn.execute(q.NOTIFY, (self._channel, name))

        await self._run(delete, write=True)

    # -- segments ----------------------------------------------------------

    async def commit_segments(
        self, object_key: str, segments: Sequence[SegmentSpec]
    ) -> list[SegmentInfo]:
        check_segment_specs(object_key, segments)
        segments = list(segments)
        committed_at = time.time()
        payload = notify_payload([s.topic for s in segments])

        def commit(conn: Conn) -> list[SegmentInfo]:
            try:
                return q.commit_object(
                    conn, object_key, segments, committed_at, self._channel, payload
                )
            except q.AlreadyCommitted:
                # A retry, or a commit racing it: the offsets assigned then.
                found = [segment(r) for r in conn.execute(q.OBJECT_SEGMENTS, (object_key,))]
                return check_recommitted(object_key, found, segments)

        # Not write=True: commit_object runs its own transaction, pipelined.
        return await self._run(commit)

    async def list_segments(
        self, topic: str, partition: int, from_offset: int = 0, limit: int = 1000
    ) -> list[SegmentInfo]:
        def segments(conn: Conn) -> list[SegmentInfo]:
            rows = conn.execute(
                q.LIST_SEGMENTS, (topic, partition, topic, partition, from_offset, limit)
            )
            return [s for s in map(segment, rows) if s.end_offset > from_offset]

        return await self._run(segments)

    async def list_segments_from(
        self, topic: str, starts: Mapping[int, int], limit: int = 16
    ) -> dict[int, list[SegmentInfo]]:
        def segments(conn: Conn) -> dict[int, list[SegmentInfo]]:
            # An offset past bigint (a seek may ask for one) holds no segment,
            # as the largest bigint does not: one bad offset must not fail
            # the query for every partition asking with it.
            offsets = [min(o, _BIGINT_MAX) for o in starts.values()]
            rows = conn.execute(q.LIST_SEGMENTS_FROM, (list(starts), offsets, topic, topic, limit))
            found: dict[int, list[SegmentInfo]] = {p: [] for p in starts}
            for s in map(segment, rows):
                if s.end_offset > starts[s.partition]:
                    found[s.partition].append(s)
            return found

        return await self._run(segments)

    async def partition_states(self, topics: Sequence[str]) -> list[PartitionState]:
        names = list(topics)
        return await self._run(
            lambda conn: [PartitionState(*r) for r in conn.execute(q.PARTITION_STATES, (names,))]
        )

    async def segment_stats(self, topic: str) -> dict[int, tuple[int, int]]:
        return await self._run(
            lambda conn: {p: (n, size) for p, n, size in conn.execute(q.SEGMENT_STATS, (topic,))}
        )

    async def committed_object_keys(self, keys: Sequence[str]) -> set[str]:
        names = list(keys)
        return await self._run(
            lambda conn: {r[0] for r in conn.execute(q.COMMITTED_KEYS, (names,))}
        )
