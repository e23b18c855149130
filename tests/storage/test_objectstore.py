"""The ObjectStore protocol, on a local directory and on the S3 server alike."""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from pathlib import Path

import httpx
import minio
import pytest
import trio

from streamhouse import (
    ConfigurationError,
    InvalidArgumentError,
    LocalObjectStore,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStore,
    S3ObjectStore,
    StorageAuthError,
    StorageError,
    StorageUnavailableError,
    object_store_from_url,
)
from streamhouse._retry import RetryPolicy
from streamhouse._storage.credentials import Credentials, StaticCredentials
from tests.servers.seaweed import S3Server

from ..helpers import BUCKET, make_s3_store

pytestmark = pytest.mark.anyio


async def test_put_then_get_returns_the_bytes(store: ObjectStore) -> None:
    """A put object reads back whole and by byte range."""
    data = bytes(range(256)) * 10
    await store.put("a/b/obj.bin", data)
    assert await store.get("a/b/obj.bin") == data
    assert await store.get("a/b/obj.bin", 10, 20) == data[10:20]
    assert await store.get("a/b/obj.bin", 2500) == data[2500:]
    assert await store.get("a/b/obj.bin", 2550, 9999) == data[2550:]
    assert await store.get("a/b/obj.bin", 5, 5) == b""


async def test_empty_object_reads_back_empty(store: ObjectStore) -> None:
    """An empty object exists and is empty."""
    await store.put("empty", b"")
    assert await store.get("empty") == b""
    assert (await store.head("empty")).size == 0


async def test_range_past_the_end_is_an_error(store: ObjectStore) -> None:
    """A range starting at or past the end raises StorageError naming the key."""
    await store.put("short", b"0123456789")
    with pytest.raises(StorageError, match="short"):
        await store.get("short", 10, 20)


async def test_missing_key_is_not_found(store: ObjectStore) -> None:
    """get and head of a missing key raise ObjectNotFoundError."""
    with pytest.raises(ObjectNotFoundError, match="nope"):
        await store.get("nope")
    with pytest.raises(ObjectNotFoundError):
        await store.head("dir/nope")


async def test_conditional_create_refuses_a_taken_key(store: ObjectStore) -> None:
    """put(if_absent=True) creates once, then raises ObjectExistsError."""
    await store.put("once", b"first", if_absent=True)
    with pytest.raises(ObjectExistsError, match="once"):
        await store.put("once", b"second", if_absent=True)
    assert await store.get("once") == b"first"
    await store.put("once", b"third")
    assert await store.get("once") == b"third"


async def test_concurrent_conditional_creates_have_one_winner(store: ObjectStore) -> None:
    """Of many racing conditional creates of one key, exactly one wins."""
    winners: list[int] = []

    async def create(i: int) -> None:
        try:
            await store.put("race", f"writer {i}".encode(), if_absent=True)
        except ObjectExistsError:
            return
        winners.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(create, i)
    assert len(winners) == 1
    assert await store.get("race") == f"writer {winners[0]}".encode()


async def test_head_gives_the_size(store: ObjectStore) -> None:
    """head returns the key and size of an object."""
    await store.put("sized", b"x" * 1234)
    info = await store.head("sized")
    assert (info.key, info.size) == ("sized", 1234)


async def test_list_yields_keys_under_a_prefix_in_order(store: ObjectStore) -> None:
    """list yields exactly the keys under the prefix, sorted, with sizes."""
    for key in ["p/b", "p/a", "p/c/d", "q/a", "pp"]:
        await store.put(key, key.encode())
    listed = [(info.key, info.size) async for info in store.list("p/")]
    assert listed == [("p/a", 3), ("p/b", 3), ("p/c/d", 5)]
    everything = [info.key async for info in store.list()]
    assert everything == ["p/a", "p/b", "p/c/d", "pp", "q/a"]


async def test_delete_removes_and_is_idempotent(store: ObjectStore) -> None:
    """delete removes the object; deleting a missing key is fine."""
    await store.put("gone", b"x")
    await store.delete("gone")
    with pytest.raises(ObjectNotFoundError):
        await store.get("gone")
    await store.delete("gone")


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../up", "a/./b", "a/..", "x/.tmp-1"])
async def test_unsafe_keys_are_refused(store: ObjectStore, key: str) -> None:
    """Keys that could escape the store or collide with temp files are refused."""
    with pytest.raises(InvalidArgumentError):
        await store.put(key, b"x")


async def test_s3_writes_are_what_an_independent_client_reads(
    s3_server: S3Server, minio_s3: minio.Minio, s3_prefix: str
) -> None:
    """What S3ObjectStore writes, the minio SDK reads back byte for byte."""
    store = make_s3_store(s3_server, s3_prefix)
    data = bytes(range(256)) * 4096
    await store.put("seg/0001.obj", data)
    response = minio_s3.get_object(BUCKET, f"{s3_prefix}/seg/0001.obj")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()
    minio_s3.put_object(BUCKET, f"{s3_prefix}/from-minio", io.BytesIO(b"hello"), 5)
    assert await store.get("from-minio") == b"hello"
    stat = minio_s3.stat_object(BUCKET, f"{s3_prefix}/seg/0001.obj")
    assert stat.size == len(data)
    assert (await store.head("seg/0001.obj")).etag == hashlib.md5(data).hexdigest()
    await store.aclose()


async def test_s3_list_pages_through_many_keys(s3_server: S3Server, s3_prefix: str) -> None:
    """list follows continuation tokens from page to page."""
    store = make_s3_store(s3_server, s3_prefix)
    store.list_page_size = 100
    keys = [f"k/{i:05d}" for i in range(250)]
    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(store.put, key, b"")
    assert [info.key async for info in store.list("k/")] == keys
    await store.aclose()


async def test_wrong_credentials_are_an_auth_error(s3_server: S3Server, s3_prefix: str) -> None:
    """A wrong secret key raises StorageAuthError without echoing the secret."""
    store = make_s3_store(s3_server, s3_prefix, secret_key="not-the-secret")
    with pytest.raises(StorageAuthError) as caught:
        await store.put("x", b"x")
    assert "not-the-secret" not in str(caught.value)
    assert "not-the-secret" not in repr(store)
    await store.aclose()


async def test_missing_bucket_is_not_found(s3_server: S3Server, s3_prefix: str) -> None:
    """A bucket that does not exist raises ObjectNotFoundError naming it."""
    store = make_s3_store(s3_server, s3_prefix, bucket="no-such-bucket-here")
    with pytest.raises(ObjectNotFoundError, match="no-such-bucket-here"):
        await store.get("x")
    await store.aclose()


async def test_dead_endpoint_is_unavailable_after_retries() -> None:
    """A server that does not answer raises StorageUnavailableError after the retries."""
    import socket

    with socket.socket() as s:  # a port with no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = S3ObjectStore(
        bucket="b", prefix="", endpoint=f"http://127.0.0.1:{port}", region="us-east-1",
        access_key="a", secret_key="s", retry=RetryPolicy(attempts=3, base_delay=0.001),
    )  # fmt: skip
    with pytest.raises(StorageUnavailableError, match="3 attempts"):
        await store.get("x")
    await store.aclose()


def scripted(*answers: int | Exception) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport that answers each request with the next status or error."""
    pending = list(answers)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        body = b"payload" if answer in (200, 206) and request.method == "GET" else b""
        if answer == 503:
            body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
        return httpx.Response(answer, content=body, headers={"etag": '"e"'})

    return httpx.MockTransport(handle), seen


def _scripted_store(transport: httpx.MockTransport) -> S3ObjectStore:
    return S3ObjectStore(
        bucket="b", prefix="p", endpoint="http://s3.test", region="us-east-1",
        access_key="a", secret_key="s", retry=RetryPolicy(attempts=4, base_delay=0.5),
        transport=transport,
    )  # fmt: skip


async def test_throttling_and_5xx_are_retried_with_backoff(autojump_clock: trio.abc.Clock) -> None:
    """SlowDown, 500 and a dropped connection are retried until the store answers."""
    transport, seen = scripted(503, 500, httpx.ConnectError("reset"), 200)
    store = _scripted_store(transport)
    start = trio.current_time()
    assert await store.get("k") == b"payload"
    assert len(seen) == 4
    assert seen[0].url.path == "/b/p/k"
    # full jitter: three waits, each at most 0.5 * 2**i seconds
    assert 0 <= trio.current_time() - start <= 0.5 + 1.0 + 2.0
    await store.aclose()


async def test_retries_give_up_with_the_last_error(autojump_clock: trio.abc.Clock) -> None:
    """A store that keeps failing raises StorageUnavailableError naming the failure."""
    transport, seen = scripted(503, 503, 503, 503)
    store = _scripted_store(transport)
    with pytest.raises(StorageUnavailableError, match="SlowDown"):
        await store.get("k")
    assert len(seen) == 4
    await store.aclose()


async def test_client_errors_are_not_retried() -> None:
    """A 403 is answered at once, not retried."""
    transport, seen = scripted(403)
    store = _scripted_store(transport)
    with pytest.raises(StorageAuthError):
        await store.get("k")
    assert len(seen) == 1
    await store.aclose()


async def test_retried_conditional_put_that_had_succeeded_succeeds(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A conditional PUT whose first answer was lost meets its own object and succeeds."""
    data = b"payload"
    etag = hashlib.md5(data).hexdigest()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200, headers={"etag": f'"{etag}"', "content-length": "7"})
        return httpx.Response(412)

    store = _scripted_store(httpx.MockTransport(handle))
    await store.put("k", data, if_absent=True)
    with pytest.raises(ObjectExistsError):
        await store.put("k", b"other bytes", if_absent=True)
    await store.aclose()


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    """A closed store raises ClosedError."""
    from streamhouse import ClosedError

    store = LocalObjectStore(tmp_path)
    await store.aclose()
    with pytest.raises(ClosedError):
        await store.get("x")


def test_urls_build_the_right_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """file:// and s3:// URLs build stores; S3 settings come from AWS_* variables."""
    local = object_store_from_url(f"file://{tmp_path}")
    assert isinstance(local, LocalObjectStore)
    assert local.root == tmp_path.resolve()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    s3 = object_store_from_url("s3://bucket/some/prefix/")
    assert isinstance(s3, S3ObjectStore)
    assert (s3.bucket, s3.prefix, s3.endpoint, s3.region) == (
        "bucket", "some/prefix", "http://127.0.0.1:9000", "eu-west-3",
    )  # fmt: skip
    assert "very-secret" not in repr(s3)
    explicit = object_store_from_url("s3://b", endpoint="http://other:1", access_key="x")
    assert isinstance(explicit, S3ObjectStore)
    assert explicit.endpoint == "http://other:1"
    assert isinstance(explicit.credentials, StaticCredentials)
    assert explicit.credentials.credentials == Credentials("x", "very-secret")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x/y", "unsupported storage URL"),
        ("s3:///prefix", "no bucket"),
        ("file://host/path", "file:///absolute/path"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    """A malformed storage URL raises ConfigurationError saying what is wrong."""
    with pytest.raises(ConfigurationError, match=message):
        object_store_from_url(url)


@pytest.mark.parametrize(
    "endpoint",
    ["http://h:port", "http://[bad", "ftp://h", "http://", "h:9000", "http://h:99999", 5],
)
def test_malformed_endpoints_are_configuration_errors(endpoint: object) -> None:
    """A malformed S3 endpoint raises ConfigurationError at construction, not httpx's error."""
    with pytest.raises(ConfigurationError, match="endpoint"):
        object_store_from_url("s3://b", endpoint=endpoint, access_key="a", secret_key="s")  # type: ignore[arg-type]


def test_an_endpoint_with_a_password_is_refused_without_echoing_it() -> None:
    """An endpoint carrying user:password@ is refused and the password is not shown."""
    with pytest.raises(ConfigurationError) as caught:
        object_store_from_url(
            "s3://b", endpoint="http://me:hunter2@h:9000", access_key="a", secret_key="s"
        )
    assert "hunter2" not in str(caught.value)


async def test_local_check_creates_the_directory(tmp_path: Path) -> None:
    """check() on a local store makes its directory and leaves no file behind."""
    store = LocalObjectStore(tmp_path / "a" / "b")
    await store.check()
    assert list((tmp_path / "a" / "b").iterdir()) == []


async def test_local_check_names_what_is_wrong(tmp_path: Path) -> None:
    """check() on a directory that cannot be made raises StorageError naming the path."""
    (tmp_path / "file").write_bytes(b"in the way")
    store = LocalObjectStore(tmp_path / "file" / "objects")
    with pytest.raises(StorageError, match="file/objects") as caught:
        await store.check()
    assert isinstance(caught.value.__cause__, OSError)


async def test_local_os_errors_are_storage_errors(tmp_path: Path) -> None:
    """An OSError under a local store comes out as StorageError with the OSError as cause."""
    store = LocalObjectStore(tmp_path)
    await store.put("a", b"a file")
    with pytest.raises(StorageError, match="PUT 'a/b'") as caught:
        await store.put("a/b", b"x")  # 'a' is a file, not a directory
    assert isinstance(caught.value.__cause__, FileExistsError)


async def test_s3_check_passes_on_an_existing_bucket(s3_server: S3Server, s3_prefix: str) -> None:
    """check() on the S3 server's bucket succeeds."""
    store = make_s3_store(s3_server, s3_prefix)
    await store.check()
    await store.aclose()


async def test_s3_check_names_a_missing_bucket_and_the_endpoint(
    s3_server: S3Server, s3_prefix: str
) -> None:
    """check() of a missing bucket raises one StorageError naming bucket and endpoint."""
    store = make_s3_store(s3_server, s3_prefix, bucket="no-such-bucket-here")
    with pytest.raises(StorageError) as caught:
        await store.check()
    assert "'no-such-bucket-here' does not exist" in str(caught.value)
    assert s3_server.endpoint in str(caught.value)
    await store.aclose()


async def test_create_bucket_makes_a_bucket_check_accepts(
    s3_server: S3Server, minio_s3: minio.Minio
) -> None:
    """create_bucket makes the bucket, is idempotent, and check() passes after it."""
    name = f"sh-{uuid.uuid4().hex[:12]}"
    store = make_s3_store(s3_server, "", bucket=name)
    await store.create_bucket()
    await store.create_bucket()
    await store.check()
    assert minio_s3.bucket_exists(name)
    await store.aclose()
    minio_s3.remove_bucket(name)


async def test_stale_temporaries_are_deleted_and_live_ones_kept(tmp_path: Path) -> None:
    """delete_stale_temporaries removes .tmp-* files older than the grace, nothing else."""
    store = LocalObjectStore(tmp_path)
    await store.put("data/x.seg", b"committed or not, not a temporary")
    old = time.time() - 7200
    for rel in ("data/.tmp-killed", ".tmp-killed-too"):
        (tmp_path / rel).write_bytes(b"half written")
        os.utime(tmp_path / rel, (old, old))
    (tmp_path / "data" / ".tmp-in-progress").write_bytes(b"being written now")
    assert await store.delete_stale_temporaries(3600) == [".tmp-killed-too", "data/.tmp-killed"]
    left = sorted(os.listdir(tmp_path / "data")) + sorted(os.listdir(tmp_path))
    assert left == [".tmp-in-progress", "x.seg", "data"]
    with pytest.raises(InvalidArgumentError, match="older_than"):
        await store.delete_stale_temporaries(float("nan"))
