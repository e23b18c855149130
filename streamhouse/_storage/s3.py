"""S3ObjectStore: the ObjectStore protocol over S3's REST API with httpx.

Requests are signed with SigV4 by httpx-auth, use path-style addressing
(``endpoint/bucket/prefix/key``, which every S3-compatible server accepts) and
share one connection pool. Failures that another attempt may cure (5xx,
throttling, connection errors, timeouts) are retried with exponential backoff
and full jitter; everything else is mapped from S3's error XML to the
project's errors on the first answer.
"""

from __future__ import annotations

import hashlib
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from typing import Final

import anyio
import attrs
import httpx
import httpx_auth

from .._errors import (
    ClosedError,
    InvalidArgumentError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    StorageUnavailableError,
)
from .._retry import RetryPolicy
from .protocol import ObjectInfo, check_key

__all__ = ["S3ObjectStore"]

_NS: Final = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_RETRIABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
_RETRIABLE_CODES: Final = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeTooSkewed",
    }
)
_AUTH_CODES: Final = frozenset(
    {
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
        "AuthorizationHeaderMalformed",
    }
)


class _Retriable(Exception):
    """A failure worth another attempt; carries the error to raise at the end."""

    def __init__(self, error: StorageError) -> None:
        self.error = error


def _error_fields(response: httpx.Response) -> tuple[str, str]:
    """Return S3's error Code and Message, or the HTTP status when there is no XML."""
    try:
        root = ET.fromstring(response.content)
    except ET.ParseError:
        return (f"HTTP{response.status_code}", response.reason_phrase)
    code = root.findtext("Code") or root.findtext(f"{_NS}Code") or f"HTTP{response.status_code}"
    message = root.findtext("Message") or root.findtext(f"{_NS}Message") or ""
    return code, message


@attrs.define(eq=False)
class S3ObjectStore:
    """Objects in an S3 bucket (AWS, MinIO, SeaweedFS, ...) under a key prefix.

    Args:
        bucket: the bucket, which must exist (see :meth:`create_bucket`).
        prefix: a key prefix, without leading or trailing '/'.
        endpoint: ``http(s)://host:port`` of the S3 API.
        region: the SigV4 signing region.
        access_key, secret_key: the credentials; never shown in reprs or errors.
        retry: the retry policy for transient failures.
        timeout: seconds for connect, read, write and pool waits.
        max_connections: requests in flight at once (more wait their turn).
        list_page_size: keys asked for per LIST request (S3 allows 1,000).
        transport: an httpx transport to use instead of the network (tests
            use it to script failures).
    """

    bucket: str
    prefix: str
    endpoint: str
    region: str
    access_key: str = attrs.field(repr=False)
    secret_key: str = attrs.field(repr=False)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    timeout: float = 30.0
    max_connections: int = 64
    list_page_size: int = 1000
    transport: httpx.AsyncBaseTransport | None = attrs.field(default=None, repr=False)
    _client: httpx.AsyncClient = attrs.field(init=False, repr=False)
    _slots: anyio.Semaphore = attrs.field(init=False, repr=False)
    _closed: bool = attrs.field(init=False, default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.prefix = self.prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        auth = httpx_auth.AWS4Auth(
            access_id=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            service="s3",
        )
        self._client = httpx.AsyncClient(
            base_url=self.endpoint.rstrip("/"),
            auth=auth,
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            ),
            transport=self.transport,
        )
        # httpx's pool slows down quadratically with its queue of waiting
        # requests (1,000 concurrent puts: 63 s instead of 5 s), so requests
        # queue here instead, and the pool never has more than it can serve.
        self._slots = anyio.Semaphore(self.max_connections)

    def __repr__(self) -> str:
        return (
            f"S3ObjectStore(endpoint={self.endpoint!r}, bucket={self.bucket!r}, "
            f"prefix={self.prefix!r})"
        )

    def _full_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _url(self, full_key: str = "") -> str:
        path = f"/{self.bucket}"
        if full_key:
            path += "/" + urllib.parse.quote(full_key, safe="/-_.~")
        return path

    def _where(self, key: str | None) -> str:
        return f"s3://{self.bucket}" if key is None else f"s3://{self.bucket}/{self._full_key(key)}"

    async def _request(
        self,
        method: str,
        key: str | None,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        ok: frozenset[int] = frozenset({200, 204, 206}),
    ) -> httpx.Response:
        """Send one request, retrying transient failures; map errors.

        ``key`` None addresses the bucket itself.
        """
        if self._closed:
            raise ClosedError("the object store is closed")
        url = self._url() if key is None else self._url(self._full_key(key))
        where = self._where(key)
        last: StorageError | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                await anyio.sleep(self.retry.delay(attempt - 1))
            try:
                async with self._slots:
                    response = await self._client.request(
                        method, url, params=params, headers=headers, content=content
                    )
            except httpx.TimeoutException as exc:
                last = StorageUnavailableError(f"{method} {where}: timed out ({exc!r})")
                last.__cause__ = exc
                continue
            except httpx.TransportError as exc:
                last = StorageUnavailableError(
                    f"{method} {where}: cannot reach {self.endpoint} ({exc})"
                )
                last.__cause__ = exc
                continue
            if response.status_code in ok:
                return response
            try:
                self._raise_for(method, where, response, attempt)
            except _Retriable as retriable:
                last = retriable.error
                continue
        assert last is not None
        raise StorageUnavailableError(
            f"{last} (gave up after {self.retry.attempts} attempts)"
        ) from (last.__cause__ or last)

    def _raise_for(self, method: str, where: str, response: httpx.Response, attempt: int) -> None:
        status = response.status_code
        code, message = _error_fields(response) if method != "HEAD" else (f"HTTP{status}", "")
        what = f"{method} {where}: {code}" + (f" ({message})" if message else "")
        if status in _RETRIABLE_STATUS or code in _RETRIABLE_CODES:
            raise _Retriable(StorageUnavailableError(what))
        if status == 404:
            raise ObjectNotFoundError(what)
        if status == 412:
            raise ObjectExistsError(what)
        if status in (401, 403) or code in _AUTH_CODES:
            raise StorageAuthError(what + "; check the access key and secret key")
        raise StorageError(what)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if start < 0 or (end is not None and end < start):
            raise InvalidArgumentError(f"bad byte range [{start}, {end}) for {key!r}")
        if end is not None and end == start:
            await self.head(key)
            return b""
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            response = await self._request("GET", key, headers=headers)
        except StorageError as exc:
            if "InvalidRange" in str(exc):
                raise StorageError(f"range [{start}, {end}) is outside {self._where(key)}") from exc
            raise
        return response.content

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        if if_absent:
            headers["If-None-Match"] = "*"
        try:
            await self._request("PUT", key, headers=headers, content=bytes(data))
        except ObjectExistsError:
            # A retried conditional PUT can meet its own first attempt, which
            # succeeded but whose answer was lost: the object then holds
            # exactly our bytes, and the put has succeeded.
            info = await self.head(key)
            if info.etag == hashlib.md5(data, usedforsecurity=False).hexdigest():
                return
            raise

    async def head(self, key: str) -> ObjectInfo:
        response = await self._request("HEAD", key, ok=frozenset({200}))
        etag = response.headers.get("etag")
        return ObjectInfo(
            key, int(response.headers.get("content-length", 0)), etag.strip('"') if etag else None
        )

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        token: str | None = None
        while True:
            params = {
                "list-type": "2", "prefix": base + prefix, "max-keys": str(self.list_page_size),
            }  # fmt: skip
            if token:
                params["continuation-token"] = token
            response = await self._request("GET", None, params=params)
            try:
                root = ET.fromstring(response.content)
            except ET.ParseError as exc:
                raise StorageError(f"LIST s3://{self.bucket}: unreadable answer") from exc
            for item in root.iter(f"{_NS}Contents"):
                full = item.findtext(f"{_NS}Key") or ""
                size = int(item.findtext(f"{_NS}Size") or 0)
                etag = (item.findtext(f"{_NS}ETag") or "").strip('"') or None
                yield ObjectInfo(full[len(base) :], size, etag)
            token = root.findtext(f"{_NS}NextContinuationToken")
            if root.findtext(f"{_NS}IsTruncated") != "true" or not token:
                return

    async def delete(self, key: str) -> None:
        await self._request("DELETE", key, ok=frozenset({200, 204, 404}))

    async def create_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        try:
            await self._request("PUT", None, ok=frozenset({200}))
        except StorageError as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                raise

    async def aclose(self) -> None:
        self._closed = True
        await self._client.aclose()
