"""PostgreSQL specifics: URLs, schemas, migrations, LISTEN/NOTIFY, and faults
on a real server (wrong password, wrong port, a server that never answers,
terminated backends, a server killed mid-run and started again)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import psycopg
import pytest
from psycopg import sql

from streamhouse import (
    CommitFailedError,
    ConfigurationError,
    InvalidArgumentError,
    MetadataError,
    MetadataUnavailableError,
    PostgresMetadataStore,
    RetryPolicy,
    TopicPartition,
    metadata_store_from_url,
)
from streamhouse._config import redact_url
from streamhouse._metadata.groups import HeartbeatRequest, MemberRef
from streamhouse._metadata.protocol import SegmentInfo, SegmentSpec
from streamhouse._metadata.schema import LATEST_VERSION, MIGRATIONS

from ..helpers import drop_schema, with_schema
from ..servers.postgres import PASSWORD_ROLE, PostgresServer, crash, running_postgres

pytestmark = pytest.mark.anyio


def spec(topic: str, partition: int, count: int) -> SegmentSpec:
    return SegmentSpec(topic, partition, count, 0, 100, 40, 1, 2)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own, whatever STREAMHOUSE_TEST_POSTGRES_URL says:
    these tests need its password role, and some kill its backends."""
    with running_postgres() as server:
        yield server


def backend_pids(url: str, schema: str, listening: bool | None = None) -> list[int]:
    """The server processes serving the connections of ``schema``'s stores
    (the listeners only, or all but them)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s",
            (f"streamhouse:{schema}",),
        ).fetchall()
    return [
        pid for pid, query in rows if listening is None or query.startswith("LISTEN") == listening
    ]


def terminate(url: str, pids: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def assert_tiled(segments: list[SegmentInfo], total: int) -> None:
    ranges = sorted((s.base_offset, s.end_offset) for s in segments)
    assert ranges[0][0] == 0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges)), str(ranges)
    assert ranges[-1][1] == total


# -- URLs and schemas ----------------------------------------------------------------


def test_urls_name_a_schema_and_hide_the_password() -> None:
    """postgres:// and postgresql:// work; schema defaults to streamhouse; no password in repr."""
    store = metadata_store_from_url("postgresql://app:s3cret@db.example:5433/logs?schema=orders")
    assert isinstance(store, PostgresMetadataStore)
    assert store.schema == "orders"
    assert "s3cret" not in repr(store)
    assert "app:***@db.example:5433/logs" in repr(store)
    other = metadata_store_from_url("postgres://app@db.example/logs?sslmode=disable")
    assert isinstance(other, PostgresMetadataStore)
    assert other.schema == "streamhouse"
    hidden = PostgresMetadataStore("postgresql:///logs?password=s3cret&host=/tmp")
    assert "s3cret" not in repr(hidden)
    with pytest.raises(ConfigurationError) as info:  # libpq quotes what it cannot parse
        PostgresMetadataStore("postgresql://u@h/db?password=s3cret=x&sslmode=bad")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://h/db?schema=bad-name", "schema name 'bad-name'"),
        ("postgresql://h/db?schema=1abc", "not starting with a digit"),
        ("postgresql://h/db?schema=pg_catalog", "reserved"),
        ("postgresql://h/db?schema=a&schema=b", "more than one schema"),
        ("postgresql://h/db?nonsense=1", "bad PostgreSQL URL"),
        ('postgresql://h/db?schema=x";drop', "schema name"),
    ],
)
def test_bad_postgres_urls_are_configuration_errors(url: str, message: str) -> None:
    """A malformed URL or schema name is a ConfigurationError at once."""
    with pytest.raises(ConfigurationError, match=message):
        metadata_store_from_url(url)


async def test_schemas_are_created_and_isolated(postgres_url: str, pg_schema: str) -> None:
    """Two schemas of one database are two independent logs."""
    a = PostgresMetadataStore(postgres_url, schema=pg_schema)
    b = PostgresMetadataStore(postgres_url, schema=pg_schema + "_b")
    try:
        await a.create_topic("t", 1)
        await b.create_topic("t", 2)
        await a.commit_segments("o", [spec("t", 0, 5)])
        assert [s.high_watermark for s in await a.partition_states(["t"])] == [5]
        assert [s.high_watermark for s in await b.partition_states(["t"])] == [0, 0]
    finally:
        await a.aclose()
        await b.aclose()
        drop_schema(postgres_url, pg_schema + "_b")


async def test_the_schema_records_every_migration(postgres_url: str, pg_schema: str) -> None:
    """A new schema holds every migration's version, and no generation column."""
    store = PostgresMetadataStore(postgres_url, schema=pg_schema)
    await store.list_topics()
    await store.aclose()
    with psycopg.connect(postgres_url) as conn:
        versions = conn.execute(f"SELECT version FROM {pg_schema}.schema_version").fetchall()
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'consumer_offsets'",
            (pg_schema,),
        ).fetchall()
    assert [v[0] for v in versions] == [m.version for m in MIGRATIONS]
    assert "generation" not in {c[0] for c in columns}


async def test_a_newer_schema_is_refused(postgres_url: str, pg_schema: str) -> None:
    """A schema written by a newer StreamHouse is a MetadataError naming both versions."""
    store = PostgresMetadataStore(postgres_url, schema=pg_schema)
    await store.list_topics()
    await store.aclose()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {pg_schema}.schema_version VALUES (77, 'future', 0)")
    newer = PostgresMetadataStore(postgres_url, schema=pg_schema)
    with pytest.raises(MetadataError, match=f"version 77.*up to {LATEST_VERSION}"):
        await newer.list_topics()
    await newer.aclose()


async def test_create_false_creates_no_schema(postgres_url: str, pg_schema: str) -> None:
    """With create=False a missing schema is a MetadataError and stays missing."""
    store = metadata_store_from_url(with_schema(postgres_url, pg_schema), create=False)
    with pytest.raises(MetadataError, match="create=False"):
        await store.list_topics()
    await store.aclose()
    with psycopg.connect(postgres_url) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (pg_schema,))
        assert found.fetchone() is None


# -- failures -------------------------------------------------------------------------


async def test_a_wrong_password_is_a_configuration_error(private_pg: PostgresServer) -> None:
    """A wrong password is a ConfigurationError that does not contain it."""
    store = PostgresMetadataStore(private_pg.password_url("not-the-password"))
    with pytest.raises(ConfigurationError, match="password authentication failed") as info:
        await store.list_topics()
    assert "not-the-password" not in str(info.value)
    assert "not-the-password" not in repr(info.value.__cause__)  # (None when there is none)
    await store.aclose()
    right = PostgresMetadataStore(private_pg.password_url(private_pg.password))
    assert await right.list_topics() == []
    await right.aclose()


async def test_a_role_that_may_not_create_the_schema_is_a_configuration_error(
    private_pg: PostgresServer,
) -> None:
    """A role without CREATE on the database gets a ConfigurationError saying so."""
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS limited")
        conn.execute(
            sql.SQL("CREATE ROLE limited LOGIN PASSWORD {}").format(
                sql.Literal(private_pg.password)
            )
        )
    url = private_pg.password_url(private_pg.password).replace(PASSWORD_ROLE, "limited", 1)
    store = PostgresMetadataStore(url, schema="not_allowed")
    with pytest.raises(ConfigurationError, match="may not create"):
        await store.list_topics()
    await store.aclose()


async def test_libpq_environment_supplies_the_password(
    private_pg: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PGPASSWORD works as with any libpq client: the URL need not carry it."""
    monkeypatch.setenv("PGPASSWORD", private_pg.password)
    url = private_pg.password_url("").replace(":@", "@")
    store = PostgresMetadataStore(url, schema="from_env")
    assert await store.list_topics() == []
    await store.aclose()


async def test_a_port_nobody_listens_on_is_unavailable_at_once() -> None:
    """Connection refused is a MetadataUnavailableError, well within the connect timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = PostgresMetadataStore(f"postgresql://postgres@127.0.0.1:{port}/x")
    with anyio.fail_after(5), pytest.raises(MetadataUnavailableError, match="refused"):
        await store.list_topics()
    await store.aclose()


async def test_a_server_that_never_answers_times_out() -> None:
    """A server that accepts and stays silent fails within connect_timeout, not a hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = PostgresMetadataStore(f"postgresql://u@127.0.0.1:{port}/x", connect_timeout=2)
        start = anyio.current_time()
        with anyio.fail_after(10), pytest.raises(MetadataUnavailableError, match="timeout"):
            await store.create_topic("t", 1)
        assert anyio.current_time() - start < 6
        await store.aclose()


async def test_a_slow_statement_hits_statement_timeout(postgres_url: str, pg_schema: str) -> None:
    """A statement blocked past statement_timeout is a MetadataUnavailableError."""
    store = PostgresMetadataStore(postgres_url, schema=pg_schema, statement_timeout=0.2)
    await store.create_topic("t", 1)
    with psycopg.connect(postgres_url) as blocker:
        blocker.execute(f"LOCK TABLE {pg_schema}.partitions IN EXCLUSIVE MODE")
        with pytest.raises(MetadataUnavailableError, match="statement_timeout"):
            await store.commit_segments("o", [spec("t", 0, 1)])
        blocker.rollback()
    assert (await store.commit_segments("o", [spec("t", 0, 1)]))[0].base_offset == 0
    await store.aclose()


async def test_a_refused_member_commit_waits_on_no_offset_row(
    postgres_url: str, pg_schema: str
) -> None:
    """A fenced member's commit writes nothing, so it takes no lock on the
    offsets: with the partition's owner holding its row mid-transaction, the
    refusal comes at once (CommitFailedError), not after a lock wait, a
    statement timeout or a deadlock with the owner."""
    store = PostgresMetadataStore(postgres_url, schema=pg_schema, statement_timeout=1.0)
    await store.create_topic("t", 2)
    tps = {TopicPartition("t", 0): 1, TopicPartition("t", 1): 1}
    a = await store.heartbeat("g", HeartbeatRequest("A", 0, ("t",), 30.0))
    await store.commit_offsets("g", tps, member=MemberRef("A", a.epoch))
    with psycopg.connect(postgres_url) as owner:
        owner.execute(
            f"UPDATE {pg_schema}.consumer_offsets SET \"offset\" = 5 WHERE group_id = 'g'"
        )
        with pytest.raises(CommitFailedError, match="not in the group at epoch"):
            await store.commit_offsets(
                "g", dict.fromkeys(tps, 9), member=MemberRef("A", a.epoch + 7)
            )
        owner.rollback()
    assert {o.offset for o in (await store.fetch_offsets("g")).values()} == {1}
    await store.aclose()


async def test_a_heartbeat_racing_a_group_deletion_never_finds_its_row_gone(
    postgres_url: str, pg_schema: str
) -> None:
    """The group's row is made and locked by one statement. A deletion sent
    by another connection right after that statement waits for the
    heartbeat's lock and goes after it; when the row was made, then locked,
    by two statements, a deletion committed between them (scripted here; a
    fault probe hit it 11 times in 10 s) left nothing to lock: an
    AssertionError that stopped the member's consumer."""
    store = PostgresMetadataStore(postgres_url, schema=pg_schema)
    await store.create_topic("t", 1)
    await store.heartbeat("g", HeartbeatRequest("A", 0, ("t",), 30.0))
    deleter = psycopg.connect(postgres_url, autocommit=True)
    deleting = threading.Thread(
        target=deleter.execute,
        args=(f"DELETE FROM {pg_schema}.consumer_groups WHERE group_id = 'g'",),
    )
    real_execute = psycopg.Connection.execute

    def execute(conn: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        cursor = real_execute(conn, query, *args, **kwargs)
        if not deleting.is_alive() and "INTO consumer_groups" in str(query):
            deleting.start()  # then wait until it committed, or waits for our lock
            with psycopg.connect(postgres_url, autocommit=True) as watch:
                while (
                    deleting.is_alive()
                    and not watch.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE pid = %s "
                        "AND wait_event_type = 'Lock'",
                        (deleter.info.backend_pid,),
                    ).fetchone()
                ):
                    pass
        return cursor

    with mock.patch.object(psycopg.Connection, "execute", execute):
        answer = await store.heartbeat("g", HeartbeatRequest("B", 0, ("t",), 30.0))
    deleting.join()
    deleter.close()
    assert not answer.fenced
    with psycopg.connect(postgres_url) as check:
        row = check.execute(f"SELECT count(*) FROM {pg_schema}.consumer_groups").fetchone()
    assert row == (0,)  # the deletion went after the heartbeat
    again = await store.heartbeat("g", HeartbeatRequest("B", answer.epoch, ("t",), 30.0))
    assert again.member_id == "B"
    await store.aclose()


async def test_terminated_connections_are_retried_without_losing_offsets(
    postgres_url: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """pg_terminate_backend of every store connection costs a retry, no offset."""
    store = PostgresMetadataStore(
        postgres_url, schema=pg_schema, retry=RetryPolicy(attempts=8, base_delay=0.01)
    )
    await store.create_topic("t", 1)
    committed: list[SegmentInfo] = []
    for i in range(6):
        committed += await store.commit_segments(f"o{i}", [spec("t", 0, 3)])
        await anyio.to_thread.run_sync(
            terminate, postgres_url, backend_pids(postgres_url, pg_schema)
        )
    with caplog.at_level(logging.WARNING, "streamhouse"):
        committed += await store.commit_segments("last", [spec("t", 0, 3)])
    assert_tiled(committed, 21)
    assert (await store.partition_states(["t"]))[0].high_watermark == 21
    await store.aclose()


async def test_racing_commits_of_one_object_get_one_set_of_offsets(
    postgres_url: str, pg_schema: str
) -> None:
    """Two stores committing each key at once get one set of offsets per key."""
    # A retry racing its own first attempt waits for it and returns its
    # offsets; two-partition objects in every order also test the lock order.
    a = PostgresMetadataStore(postgres_url, schema=pg_schema)
    b = PostgresMetadataStore(postgres_url, schema=pg_schema)
    await a.create_topic("t", 3)
    answers: dict[str, list[list[SegmentInfo]]] = {}

    async def commit(store: PostgresMetadataStore, i: int) -> None:
        specs = [spec("t", (i + j) % 3, i % 5 + 1) for j in range(2)]
        answers.setdefault(f"o{i}", []).append(await store.commit_segments(f"o{i}", specs))

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(commit, a, i)
            tg.start_soon(commit, b, i)
    assert all(first == second for first, second in answers.values())
    for partition in range(3):
        mine = [s for first, _ in answers.values() for s in first if s.partition == partition]
        assert_tiled(mine, sum(s.record_count for s in mine))
    await a.aclose()
    await b.aclose()


async def test_a_server_killed_mid_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Commits through a SIGKILL of the server and its restart tile the log exactly."""
    # The writer retries each object key until it is acknowledged, as the
    # producer does; a commit whose answer was lost in the crash returns the
    # offsets it got, so no key is counted twice and no offset is skipped.
    directory = Path(tempfile.mkdtemp(prefix="sh-pgk-"))
    acknowledged: dict[str, SegmentInfo] = {}
    outages = 0
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, directory, True)
        # durable: the suite's server acknowledges commits before their WAL
        # is written (synchronous_commit=off), which a crash would lose.
        server = stack.enter_context(running_postgres(directory, durable=True))
        store = PostgresMetadataStore(
            server.url, connect_timeout=2, retry=RetryPolicy(attempts=2, base_delay=0.01)
        )
        await store.create_topic("t", 2)
        with anyio.fail_after(90):
            for i in range(60):
                if i == 20:
                    await anyio.to_thread.run_sync(crash, server)
                key = f"o{i:03d}"
                while key not in acknowledged:
                    try:
                        (info,) = await store.commit_segments(key, [spec("t", i % 2, i + 1)])
                    except MetadataUnavailableError:
                        outages += 1
                        if outages == 1:
                            await anyio.to_thread.run_sync(restart, stack, directory)
                        continue
                    acknowledged[key] = info
        for partition in (0, 1):
            mine = sorted(
                (s for s in acknowledged.values() if s.partition == partition),
                key=lambda s: s.base_offset,
            )
            assert_tiled(mine, sum(s.record_count for s in mine))
            assert await store.list_segments("t", partition, 0, limit=1000) == mine
        await store.aclose()
    assert outages >= 1


def restart(stack: contextlib.ExitStack, directory: Path) -> None:
    """Start the crashed cluster again (it recovers from its WAL)."""
    stack.enter_context(running_postgres(directory, durable=True))


# -- LISTEN/NOTIFY ---------------------------------------------------------------------


async def commit_when_blocked(store: PostgresMetadataStore, key: str, count: int = 1) -> None:
    """Commit to t/0 once every other task waits (the watch is in its thread)."""
    await anyio.wait_all_tasks_blocked()
    await store.commit_segments(key, [spec("t", 0, count)])


async def test_a_watch_wakes_when_another_store_commits(postgres_url: str, pg_schema: str) -> None:
    """A commit through another store (another pool) wakes a watch at once."""
    reader = PostgresMetadataStore(postgres_url, schema=pg_schema)
    writer = PostgresMetadataStore(postgres_url, schema=pg_schema)
    await writer.create_topic("t", 1)
    await writer.create_topic("other", 1)
    watch = reader.watch(["t"])
    await watch.wait(30)  # the first wait returns at once
    with anyio.fail_after(20):
        await watch.wait(30)  # the listener's first LISTEN bumps its generation
    async with anyio.create_task_group() as tg:
        tg.start_soon(commit_when_blocked, writer, "o1", 4)
        start = anyio.current_time()
        with anyio.fail_after(20):
            assert await watch.wait(30) is True
        woke = anyio.current_time() - start
    assert woke < 5
    assert await watch.wait(0) is False  # a look: nothing moved since
    assert (await reader.partition_states(["t"]))[0].high_watermark == 4
    start = anyio.current_time()
    assert await watch.wait(0.3) is False  # a commit elsewhere does not wake a watch of "t"
    await writer.commit_segments("o2", [spec("other", 0, 1)])
    assert anyio.current_time() - start >= 0.3
    await reader.aclose()
    await writer.aclose()


async def test_a_watch_polls_while_its_listener_is_down_and_recovers(
    postgres_url: str, pg_schema: str
) -> None:
    """With the listener's backend terminated, waits fall back to polling, then listen again."""
    reader = PostgresMetadataStore(
        postgres_url, schema=pg_schema, poll_interval=0.05,
        retry=RetryPolicy(attempts=5, base_delay=0.2, max_delay=0.2),
    )  # fmt: skip
    writer = PostgresMetadataStore(postgres_url, schema=pg_schema)
    await writer.create_topic("t", 1)
    watch = reader.watch(["t"])
    await watch.wait(30)
    with anyio.fail_after(20):
        await watch.wait(30)  # listening now
    listener_pids = await anyio.to_thread.run_sync(backend_pids, postgres_url, pg_schema, True)
    assert listener_pids
    await anyio.to_thread.run_sync(terminate, postgres_url, listener_pids)
    with anyio.fail_after(20):
        while True:  # the drop wakes the watch; then it polls every poll_interval
            start = anyio.current_time()
            await watch.wait(30)
            if anyio.current_time() - start < 1:
                break
    with anyio.fail_after(20):
        while not await anyio.to_thread.run_sync(backend_pids, postgres_url, pg_schema, True):
            await watch.wait(30)
    await watch.wait(0)  # takes in the reconnection's wake-up
    async with anyio.create_task_group() as tg:
        tg.start_soon(commit_when_blocked, writer, "o")
        start = anyio.current_time()
        with anyio.fail_after(20):
            await watch.wait(30)
        assert anyio.current_time() - start < 5
    await reader.aclose()
    await writer.aclose()


# -- everywhere a metadata URL goes ----------------------------------------------------


def test_the_command_line_runs_on_postgresql(private_pg: PostgresServer, tmp_path: Path) -> None:
    """The command runs on STREAMHOUSE_METADATA=postgresql://... and never prints its password."""
    env = {
        **os.environ,
        "STREAMHOUSE_HOME": str(tmp_path / "data"),
        "STREAMHOUSE_METADATA": with_schema(private_pg.password_url(private_pg.password), "cli"),
    }

    def run(*args: str, stdin: str = "") -> str:
        result = subprocess.run(
            [sys.executable, "-m", "streamhouse", *args], input=stdin, capture_output=True,
            text=True, cwd=tmp_path, env=env, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert private_pg.password not in result.stdout + result.stderr
        return result.stdout

    run("topics", "create", "orders", "--partitions", "2")
    run("produce", "orders", "--partition", "1", stdin="a\nb\nc\n")
    assert run("consume", "orders", "--group", "g").splitlines()[:3] == ["a", "b", "c"]
    assert "g" in run("groups", "list").split()
    assert not (tmp_path / "data" / "metadata.db").exists()


def test_redacted_urls_keep_no_password() -> None:
    """redact_url hides a PostgreSQL password and leaves other URLs alone."""
    assert redact_url("postgresql://u:pw@h/db?password=x&schema=s") == (
        "postgresql://u:***@h/db?password=***&schema=s"
    )
    assert redact_url("sqlite:///meta.db") == "sqlite:///meta.db"


async def test_a_paused_client_holding_the_groups_lock_is_cut_off(
    postgres_url: str, pg_schema: str
) -> None:
    """A transaction left waiting (its client SIGSTOPped) loses its session, and its locks.

    Found by a process test on the machine's PostgreSQL 15: a member stopped
    inside a heartbeat held its group's row lock, and every other member's
    heartbeat waited on it, so the stopped member's session could never be
    found expired.
    """
    paused = PostgresMetadataStore(postgres_url, schema=pg_schema, idle_in_transaction_timeout=0.5)
    other = PostgresMetadataStore(postgres_url, schema=pg_schema, statement_timeout=20)
    await other.create_topic("t", 1)
    await other.heartbeat("g", HeartbeatRequest("a", 0, ("t",), 10.0, None, frozenset()))
    holding, resume = threading.Event(), threading.Event()
    attempts = itertools.count(1)

    def hold(conn: psycopg.Connection[tuple[object, ...]]) -> int:
        attempt = next(attempts)
        conn.execute("SELECT epoch FROM consumer_groups WHERE group_id = 'g' FOR UPDATE")
        if attempt == 1:
            holding.set()
            resume.wait(30)  # the client stops talking, its transaction open
        conn.execute("SELECT 1")
        return attempt

    async with anyio.create_task_group() as tg:
        result: list[int] = []

        async def paused_call() -> None:
            result.append(await paused._run(hold, write=True))

        tg.start_soon(paused_call)
        await anyio.to_thread.run_sync(holding.wait)
        with anyio.fail_after(15):  # statement_timeout is 20 s: this is the cut-off's work
            joined = await other.heartbeat(
                "g", HeartbeatRequest("b", 0, ("t",), 10.0, None, frozenset())
            )
        resume.set()
    assert joined.epoch > 0
    # The paused client's session was ended; its call was retried on a new one.
    assert result == [2]
    await paused.aclose()
    await other.aclose()


@pytest.mark.parametrize(
    "name", ["connect_timeout", "statement_timeout", "idle_in_transaction_timeout", "poll_interval"]
)
@pytest.mark.parametrize("value", [0, -1, float("nan"), "5"])
def test_bad_timeouts_are_refused_naming_them(name: str, value: object) -> None:
    """A timeout that is not a number of seconds > 0 is refused at once, by name."""
    with pytest.raises(InvalidArgumentError, match=name):
        PostgresMetadataStore("postgresql://u@127.0.0.1/db", **{name: value})  # type: ignore[arg-type]
