"""S3ObjectStore: the ObjectStore protocol over S3's REST API with httpx.

Requests are signed with SigV4 by httpx-auth (its AWS4Auth signs a session
token as ``X-Amz-Security-Token`` too), with credentials asked of a
:class:`~.credentials.CredentialProvider` before each attempt, so temporary
credentials refresh under a running store. Requests use path-style
addressing (``endpoint/bucket/prefix/key``, which every S3-compatible server
accepts) and share one connection pool.

Time limits: each attempt has ``timeout`` seconds in all (30 by default:
Kafka's request.timeout.ms) plus one second per MiB of body it sends or
expects, of which at most ``connect_timeout`` (5) to connect. httpx's own
timeouts bound each socket operation, not a request: an endpoint that
trickles a byte now and then, or a slow body, would never trip them, so a
cancel scope bounds the whole attempt. An endpoint that
accepts and never answers thus costs ``timeout`` per attempt, not 30 s per
socket read.

Failures that another attempt may cure (5xx, throttling, connection errors,
timeouts, a credential source that did not answer) are retried by the one
retry loop (``_retry``: capped backoff with jitter, an outage logged as it
starts and ends); everything else is mapped from S3's error XML to the
project's errors on the first answer. Every foreign exception is translated
here, with the original as ``__cause__``.
"""

from __future__ import annotations

import hashlib
import math
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
    ConfigurationError,
    InvalidArgumentError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    StorageUnavailableError,
)
from .._log import get_logger
from .._retry import RetryBurst, RetryPolicy, current_deadline, deadline_at, retry_call
from .credentials import CredentialProvider, Credentials, StaticCredentials
from .protocol import ObjectInfo, check_key

__all__ = ["S3ObjectStore", "check_endpoint"]

_log = get_logger("storage")

_NS: Final = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# Bytes per second below which a transfer counts as stalled: an attempt gets
# ``timeout`` plus one second per MiB of body it sends or expects, so a
# 128 MiB object on a slow link is not cut off at 30 s.
_SLOWEST_TRANSFER: Final = 2**20
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


def _error_fields(response: httpx.Response) -> tuple[str, str]:
    """Return S3's error Code and Message, or the HTTP status when there is no XML."""
    try:
        root = ET.fromstring(response.content)
    except ET.ParseError:
        return (f"HTTP{response.status_code}", response.reason_phrase)
    code = root.findtext("Code") or root.findtext(f"{_NS}Code") or f"HTTP{response.status_code}"
    message = root.findtext("Message") or root.findtext(f"{_NS}Message") or ""
    return code, message


def check_endpoint(endpoint: object) -> str:
    """Return ``endpoint`` without a trailing '/' if it is ``http(s)://host[:port]``.

    Raises:
        ConfigurationError: it is not a str, or not such a URL.
    """
    if not isinstance(endpoint, str):
        raise ConfigurationError(f"S3 endpoint must be a str, not {type(endpoint).__name__}")
    if "@" in endpoint:  # user:password@ would be echoed below
        raise ConfigurationError("S3 endpoint must be http(s)://host[:port], with no user")
    try:
        parsed = urllib.parse.urlsplit(endpoint)
        parsed.port  # noqa: B018 - raises ValueError for a port out of range
        httpx.URL(endpoint)
    except (ValueError, httpx.InvalidURL) as exc:
        raise ConfigurationError(f"S3 endpoint {endpoint!r} is not a valid URL: {exc}") from exc
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or parsed.query
        or parsed.fragment
    ):
        raise ConfigurationError(f"S3 endpoint {endpoint!r} must look like http(s)://host[:port]")
    return endpoint.rstrip("/")


def _check_seconds(what: str, value: object, *, zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        raise InvalidArgumentError(f"{what} must be a finite number of seconds > 0, not {value!r}")
    return float(value)


@attrs.define(eq=False)
class S3ObjectStore:
    """Objects in an S3 bucket (AWS, MinIO, SeaweedFS, ...) under a key prefix.

    Args:
        bucket: the bucket, which must exist (see :meth:`check` and
            :meth:`create_bucket`).
        prefix: a key prefix, without leading or trailing '/'.
        endpoint: ``http(s)://host:port`` of the S3 API.
        region: the SigV4 signing region.
        access_key, secret_key, session_token: fixed credentials; never
            shown in reprs or errors. Give these or ``credentials``.
        credentials: where to get (and refresh) credentials instead, e.g.
            an :class:`~.credentials.AwsCredentialChain`.
        retry: the retry policy for transient failures.
        timeout: seconds one attempt of a request may take in all, plus one
            second per MiB of body sent or expected.
        connect_timeout: seconds an attempt may spend connecting.
        max_connections: requests in flight at once (more wait their turn).
        list_page_size: keys asked for per LIST request (S3 allows 1,000).
        transport: an httpx transport to use instead of the network (tests
            use it to script failures).

    Raises:
        ConfigurationError: the endpoint, bucket or credentials are malformed
            or missing.
        InvalidArgumentError: a time limit or size is out of range.
    """

    bucket: str
    prefix: str
    endpoint: str
    region: str
    access_key: str | None = attrs.field(default=None, repr=False)
    secret_key: str | None = attrs.field(default=None, repr=False)
    session_token: str | None = attrs.field(default=None, repr=False)
    credentials: CredentialProvider | None = attrs.field(default=None, repr=False)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    timeout: float = 30.0
    connect_timeout: float = 5.0
    max_connections: int = 64
    list_page_size: int = 1000
    transport: httpx.AsyncBaseTransport | None = attrs.field(default=None, repr=False)
    _client: httpx.AsyncClient = attrs.field(init=False, repr=False)
    _slots: anyio.Semaphore = attrs.field(init=False, repr=False)
    _burst: RetryBurst = attrs.field(init=False, repr=False)
    _signed_with: Credentials | None = attrs.field(init=False, default=None, repr=False)
    _auth: httpx.Auth | None = attrs.field(init=False, default=None, repr=False)
    _closed: bool = attrs.field(init=False, default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.endpoint = check_endpoint(self.endpoint)
        if not isinstance(self.bucket, str) or not self.bucket or len(self.bucket) > 255:
            raise ConfigurationError(f"S3 bucket must be a non-empty name, not {self.bucket!r}")
        if "/" in self.bucket or not self.bucket.isprintable() or " " in self.bucket:
            raise ConfigurationError(f"S3 bucket name {self.bucket!r} has '/' or spaces")
        if not isinstance(self.region, str) or not self.region:
            raise ConfigurationError(f"S3 region must be a non-empty str, not {self.region!r}")
        self.prefix = self.prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.timeout = _check_seconds("timeout", self.timeout)
        self.connect_timeout = _check_seconds("connect_timeout", self.connect_timeout)
        for name in ("max_connections", "list_page_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be an int >= 1, not {value!r}")
        if self.credentials is None:
            if not self.access_key or not self.secret_key:
                raise ConfigurationError(
                    "S3ObjectStore needs access_key and secret_key, or credentials"
                )
            self.credentials = StaticCredentials(
                Credentials(self.access_key, self.secret_key, self.session_token or None)
            )
        self._client = httpx.AsyncClient(
            base_url=self.endpoint,
            timeout=httpx.Timeout(self.timeout, connect=min(self.connect_timeout, self.timeout)),
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
        self._burst = RetryBurst(_log, f"S3 at {self.endpoint}")

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

    async def _signer(self) -> httpx.Auth:
        """The SigV4 signer for the current credentials (asked for before every attempt)."""
        assert self.credentials is not None
        creds = await self.credentials.get()
        if creds is not self._signed_with or self._auth is None:
            self._auth = httpx_auth.AWS4Auth(
                access_id=creds.access_key,
                secret_key=creds.secret_key,
                region=self.region,
                service="s3",
                security_token=creds.session_token,
            )
            self._signed_with = creds
        return self._auth

    async def _request(
        self,
        method: str,
        key: str | None,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        ok: frozenset[int] = frozenset({200, 204, 206}),
        transfer: int = 0,
    ) -> httpx.Response:
        """Send one request, retrying transient failures; map errors.

        ``key`` None addresses the bucket itself; ``transfer`` is the body
        size expected either way, which earns the attempt more time.
        """
        if self._closed:
            raise ClosedError("the object store is closed")
        url = self._url() if key is None else self._url(self._full_key(key))
        where = self._where(key)
        attempts = 0

        async def attempt() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return await self._attempt(method, url, where, params, headers, content, ok, transfer)

        try:
            return await retry_call(
                attempt, policy=self.retry, burst=self._burst, retriable=StorageUnavailableError
            )
        except StorageUnavailableError as last:
            raise StorageUnavailableError(f"{last} (gave up after {attempts} attempts)") from (
                last.__cause__ or last
            )

    async def _attempt(
        self,
        method: str,
        url: str,
        where: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        content: bytes | None,
        ok: frozenset[int],
        transfer: int,
    ) -> httpx.Response:
        """One attempt: sign, send within the time limit, map the answer."""
        auth = await self._signer()
        async with self._slots:
            start = anyio.current_time()
            limit = self.timeout + transfer / _SLOWEST_TRANSFER
            deadline = current_deadline()
            if deadline is not None:  # the caller's: the last attempt ends by it
                limit = min(limit, deadline - start)
                if limit <= 0:
                    raise StorageUnavailableError(f"{method} {where}: the caller's deadline passed")
            try:
                with anyio.fail_after(limit):
                    response = await self._client.request(
                        method, url, params=params, headers=headers, content=content, auth=auth
                    )
            except TimeoutError as exc:
                raise StorageUnavailableError(
                    f"{method} {where}: no answer from {self.endpoint} within {limit:.3g} s"
                ) from exc
            except httpx.TimeoutException as exc:
                raise StorageUnavailableError(f"{method} {where}: timed out ({exc!r})") from exc
            except httpx.TransportError as exc:
                raise StorageUnavailableError(
                    f"{method} {where}: cannot reach {self.endpoint} ({exc!r})"
                ) from exc
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
                raise StorageError(f"{method} {where}: {exc!r}") from exc
        _log.debug(
            "%s %s: %d in %.3f s", method, where, response.status_code,
            anyio.current_time() - start,
        )  # fmt: skip
        if response.status_code not in ok:
            self._raise_for(method, where, response)
        return response

    def _raise_for(self, method: str, where: str, response: httpx.Response) -> None:
        status = response.status_code
        code, message = _error_fields(response) if method != "HEAD" else (f"HTTP{status}", "")
        what = f"{method} {where}: {code}" + (f" ({message})" if message else "")
        if status in _RETRIABLE_STATUS or code in _RETRIABLE_CODES:
            raise StorageUnavailableError(what)
        if status == 404:
            raise ObjectNotFoundError(what)
        if status == 412:
            raise ObjectExistsError(what)
        if status in (401, 403) or code in _AUTH_CODES:
            raise StorageAuthError(what + "; check the credentials")
        raise StorageError(what)

    async def check(self) -> None:
        """Check that the endpoint answers, the credentials work and the bucket exists.

        One LIST of at most one key under the prefix: unlike a HEAD of the
        bucket, its error answer has a body, so the message can say
        SignatureDoesNotMatch or AccessDenied rather than only 403.

        The check as a whole, retries included, takes at most ``timeout``
        seconds: it runs when a client opens, where an endpoint that accepts
        and never answers cost 5 attempts of 30 s (150 s) before the user
        heard anything.

        Raises:
            ObjectNotFoundError: the bucket does not exist (the message names
                it and the endpoint).
            StorageAuthError: the credentials are refused.
            StorageUnavailableError: the endpoint did not answer.
        """
        prefix = f"{self.prefix}/" if self.prefix else ""
        params = {"list-type": "2", "max-keys": "1", "prefix": prefix}
        try:
            with deadline_at(anyio.current_time() + self.timeout):
                await self._request("GET", None, params=params, ok=frozenset({200}))
        except ObjectNotFoundError as exc:
            raise ObjectNotFoundError(
                f"bucket {self.bucket!r} does not exist at {self.endpoint}; create it first "
                "(S3ObjectStore.create_bucket or `streamhouse storage create-bucket`)"
            ) from exc
        except StorageAuthError as exc:
            raise StorageAuthError(f"{exc} (bucket {self.bucket!r} at {self.endpoint})") from exc

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
            response = await self._request(
                "GET", key, headers=headers, transfer=0 if end is None else end - start
            )
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
            await self._request(
                "PUT", key, headers=headers, content=bytes(data), transfer=len(data)
            )
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
        try:
            size = int(response.headers.get("content-length", 0))
        except ValueError as exc:
            raise StorageError(f"HEAD {self._where(key)}: unreadable Content-Length") from exc
        return ObjectInfo(key, size, etag.strip('"') if etag else None)

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        token: str | None = None
        while True:
            params = {
                "list-type": "2", "prefix": base + prefix, "max-keys": str(self.list_page_size),
            }  # fmt: skip
            if token:
                params["continuation-token"] = token
            elif start_after:
                params["start-after"] = base + start_after
            response = await self._request("GET", None, params=params)
            try:
                root = ET.fromstring(response.content)
            except ET.ParseError as exc:
                raise StorageError(f"LIST s3://{self.bucket}: unreadable answer") from exc
            for item in root.iter(f"{_NS}Contents"):
                full = item.findtext(f"{_NS}Key") or ""
                if full[len(base) :] <= start_after:
                    continue  # a server that ignores start-after: the order still holds
                size = int(item.findtext(f"{_NS}Size") or 0)
                etag = (item.findtext(f"{_NS}ETag") or "").strip('"') or None
                yield ObjectInfo(full[len(base) :], size, etag)
            token = root.findtext(f"{_NS}NextContinuationToken")
            if root.findtext(f"{_NS}IsTruncated") != "true" or not token:
                return

    async def delete(self, key: str) -> None:
        await self._request("DELETE", key, ok=frozenset({200, 204, 404}))

    async def create_bucket(self) -> None:
        """Create the bucket if it does not exist yet (kept public for the CLI).

        Outside ``us-east-1`` the request names the region, as AWS requires.
        """
        body = None
        if self.region != "us-east-1":
            body = (
                f'<CreateBucketConfiguration xmlns="{_NS[1:-1]}">'
                f"<LocationConstraint>{self.region}</LocationConstraint>"
                "</CreateBucketConfiguration>"
            ).encode()
        try:
            await self._request("PUT", None, ok=frozenset({200}), content=body)
        except StorageError as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                raise

    async def aclose(self) -> None:
        self._closed = True
        await self._client.aclose()
