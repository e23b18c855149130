"""Test helpers: stores on the test servers, a reference reader, scripted
doubles at the I/O seams, and the few steps many tests share."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple

import anyio
import httpx
import minio
import psycopg
from psycopg import sql

from streamhouse import (
    ConsumedRecord,
    Consumer,
    MetadataStore,
    ObjectStore,
    Producer,
    S3ObjectStore,
    StorageUnavailableError,
    open_consumer,
    open_producer,
)
from streamhouse._codec import iter_segment
from streamhouse._errors import MetadataUnavailableError
from streamhouse._metadata.protocol import SegmentInfo, SegmentSpec
from streamhouse._retry import RetryPolicy
from streamhouse._storage.protocol import ObjectInfo

from .servers.seaweed import S3Server

BUCKET = "streamhouse-test"
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01)


def drop_schema(url: str, schema: str) -> None:
    """Drop a test's PostgreSQL schema and everything in it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def with_schema(url: str, schema: str) -> str:
    """A PostgreSQL URL with ``schema=`` added to its query."""
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def minio_client(server: S3Server) -> minio.Minio:
    """The independent S3 client that checks what the project wrote."""
    parsed = urllib.parse.urlsplit(server.endpoint)
    return minio.Minio(
        parsed.netloc,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=parsed.scheme == "https",
        region=server.region,
    )


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


class Stores(NamedTuple):
    """An object store and a metadata store, and clients opened on both."""

    storage: ObjectStore
    meta: MetadataStore

    def consumer(
        self, topics: Any, **kwargs: Any
    ) -> contextlib.AbstractAsyncContextManager[Consumer]:
        return open_consumer(topics, storage=self.storage, metadata=self.meta, **kwargs)

    def producer(self, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[Producer]:
        return open_producer(storage=self.storage, metadata=self.meta, **kwargs)


async def produce(stores: Stores, topic: str, partition: int, count: int, start: int = 0) -> None:
    """Write ``count`` records ``<topic>-<partition>-<i>`` (keys ``k<i>``) to a partition."""
    async with stores.producer(linger=0) as producer:
        numbers = range(start, start + count)
        await producer.send_batch(
            topic,
            [b"%s-%d-%d" % (topic.encode(), partition, i) for i in numbers],
            keys=[b"k%d" % i for i in numbers],
            partition=partition,
        )


async def poll_until(consumer: Consumer, count: int) -> list[ConsumedRecord]:
    """Poll until ``count`` records came, within 30 s."""
    got: list[ConsumedRecord] = []
    with anyio.fail_after(30):
        while len(got) < count:
            got += await consumer.poll(timeout=5)
    return got


Row = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]


async def read_partition(
    storage: ObjectStore, metadata: MetadataStore, topic: str, partition: int
) -> list[Row]:
    """Every record of a partition, read the simplest way: segment by segment."""
    out: list[Row] = []
    for seg in await metadata.list_segments(topic, partition, 0, limit=100_000):
        data = await storage.get(seg.object_key, seg.position, seg.position + seg.length)
        for block in iter_segment(data, name=seg.object_key, base=seg.position):
            headers = block.headers or [()] * block.record_count
            out += [(*row, h) for row, h in zip(block.rows(seg.base_offset), headers, strict=True)]
    return out


class FlakyStore:
    """An ObjectStore that fails puts as scripted, then passes calls through."""

    def __init__(self, inner: ObjectStore, put_failures: int = 0) -> None:
        self.inner = inner
        self.put_failures = put_failures
        self.puts: list[str] = []

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if self.put_failures:
            self.put_failures -= 1
            raise StorageUnavailableError(f"scripted failure of PUT {key}")
        self.puts.append(key)
        await self.inner.put(key, data, if_absent=if_absent)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return await self.inner.get(key, start, end)

    async def head(self, key: str) -> ObjectInfo:
        return await self.inner.head(key)

    def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.list(prefix, start_after=start_after)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()


class NeverAnswers(httpx.AsyncBaseTransport):
    """An httpx transport that takes requests and never answers.

    Requests whose method is not in ``silent`` get an empty 200 answer (so a
    store's ``check()`` passes while its PUTs hang).
    """

    def __init__(self, silent: frozenset[str] | None = None) -> None:
        self.silent = silent or frozenset({"GET", "PUT", "HEAD", "DELETE"})
        self.requests: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method not in self.silent:
            return httpx.Response(200, content=b"<ListBucketResult/>")
        self.requests.append(anyio.current_time())
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


class LostAnswerMetadata:
    """A MetadataStore whose first segment commits succeed but report failure.

    That is the worst case for a retry: the offsets were assigned, and the
    caller does not know it.
    """

    def __init__(self, inner: MetadataStore, lost: int = 1) -> None:
        self.inner = inner
        self.lost = lost
        self.commits = 0

    async def commit_segments(
        self, object_key: str, segments: Sequence[SegmentSpec]
    ) -> list[SegmentInfo]:
        result = await self.inner.commit_segments(object_key, segments)
        self.commits += 1
        if self.lost:
            self.lost -= 1
            raise MetadataUnavailableError("scripted: the commit's answer was lost")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
