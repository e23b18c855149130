"""Fixtures shared by the test suite: the S3 server, stores on it, clients.

The S3 server is a private SeaweedFS started once per session on free
loopback ports and stopped by its pid. Setting STREAMHOUSE_TEST_S3_ENDPOINT
(with STREAMHOUSE_TEST_S3_ACCESS_KEY and STREAMHOUSE_TEST_S3_SECRET_KEY) runs
the same tests against any other S3 server, MinIO for one, instead.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import hypothesis
import minio
import pytest
import trio
import trio.testing

from streamhouse import LocalObjectStore, ObjectStore, S3ObjectStore, SQLiteMetadataStore
from streamhouse._s3 import RetryPolicy
from streamhouse._seaweed import S3Server, running_seaweedfs

# Generating large examples can be slow on a loaded 2-core machine; that is
# not what the properties test, so the health check that fails on it is off,
# and the deadline is generous (properties that are about speed set theirs).
hypothesis.settings.register_profile(
    "streamhouse",
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
    deadline=5000,
)
hypothesis.settings.load_profile("streamhouse")

BUCKET = "streamhouse-test"
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps ahead whenever every task is blocked."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """Run async tests under trio, StreamHouse's primary backend.

    A test that asks for ``autojump_clock`` runs on that virtual clock.
    """
    if "autojump_clock" in request.fixturenames:
        return ("trio", {"clock": request.getfixturevalue("autojump_clock")})
    return "trio"


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


def minio_client(server: S3Server) -> minio.Minio:
    parsed = urllib.parse.urlsplit(server.endpoint)
    return minio.Minio(
        parsed.netloc,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=parsed.scheme == "https",
        region=server.region,
    )


def _ensure_bucket(server: S3Server) -> None:
    client = minio_client(server)
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)


@pytest.fixture
def minio_s3(s3_server: S3Server) -> minio.Minio:
    """The independent S3 client that checks what the project wrote."""
    return minio_client(s3_server)


def make_s3_store(
    server: S3Server,
    prefix: str,
    *,
    retry: RetryPolicy = FAST_RETRY,
    transport: httpx.AsyncBaseTransport | None = None,
    secret_key: str | None = None,
    bucket: str = BUCKET,
) -> S3ObjectStore:
    return S3ObjectStore(
        bucket=bucket,
        prefix=prefix,
        endpoint=server.endpoint,
        region=server.region,
        access_key=server.access_key,
        secret_key=secret_key or server.secret_key,
        retry=retry,
        transport=transport,
    )


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


@pytest.fixture
async def meta(tmp_path: Path) -> AsyncIterator[SQLiteMetadataStore]:
    """A metadata store on a fresh SQLite file."""
    store = SQLiteMetadataStore(tmp_path / "meta.db")
    yield store
    await store.aclose()
