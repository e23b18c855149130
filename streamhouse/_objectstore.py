"""The ObjectStore protocol, a local-directory store, and stores from URLs.

An object store holds immutable objects under string keys. StreamHouse needs
five operations of it and nothing else: get (whole or a byte range), put
(optionally only if the key is free), head, list by prefix, delete. Both
implementations give them the same semantics, and one test suite runs against
both:

- ``get(key, start, end)`` returns bytes ``[start, end)``, clipped at the end
  of the object; a missing key raises ObjectNotFoundError; a ``start`` at or
  past the end of a non-empty object raises StorageError.
- ``put(key, data, if_absent=True)`` creates the key only if it is free and
  raises ObjectExistsError otherwise; without ``if_absent`` it replaces.
- ``delete`` of a missing key is not an error (S3 semantics).
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import anyio
import anyio.to_thread
import attrs

from ._errors import (
    ClosedError,
    ConfigurationError,
    InvalidArgumentError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
)

__all__ = ["LocalObjectStore", "ObjectInfo", "ObjectStore", "check_key", "object_store_from_url"]

MAX_KEY_LENGTH = 1024

T = TypeVar("T")


@attrs.frozen
class ObjectInfo:
    """What a head or list tells about one object."""

    key: str
    size: int
    etag: str | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """Immutable objects under string keys (see the module docstring)."""

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Return bytes ``[start, end)`` of the object (clipped at its end)."""
        ...

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store ``data`` under ``key``; with ``if_absent``, only if it is free."""
        ...

    async def head(self, key: str) -> ObjectInfo:
        """Return the object's size and etag."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix``, in key order."""
        ...

    async def delete(self, key: str) -> None:
        """Delete the object; a missing key is not an error."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


def check_key(key: object) -> str:
    """Return ``key`` if it is a safe object key, else raise InvalidArgumentError.

    Keys are relative, '/'-separated, with no empty, ``.`` or ``..`` parts, so
    that no key can escape a local store's directory or an S3 prefix.
    """
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"object key must be a non-empty str, not {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgumentError(f"object key is {len(key)} characters; the limit is 1024")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in key or "\x00" in key:
        raise InvalidArgumentError(f"object key {key!r} has an empty, '.' or '..' part")
    if parts[-1].startswith(".tmp-"):
        raise InvalidArgumentError(f"object key {key!r} uses the reserved prefix '.tmp-'")
    return key


def _check_range(key: str, start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise InvalidArgumentError(f"bad byte range [{start}, {end}) for {key!r}")


@attrs.define(eq=False)
class LocalObjectStore:
    """Objects as files under a directory: the embedded default.

    Writes are atomic: data goes to a temporary file that is fsynced and then
    renamed (replace) or hard-linked (create-if-absent, which fails atomically
    when the name is taken). File I/O runs in worker threads.
    """

    root: Path = attrs.field(converter=Path)
    fsync: bool = True
    _limiter: anyio.CapacityLimiter = attrs.field(
        init=False, factory=lambda: anyio.CapacityLimiter(8)
    )
    _closed: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self.root = self.root.resolve()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if self._closed:
            raise ClosedError("the object store is closed")
        return self.root.joinpath(*check_key(key).split("/"))

    async def _run(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        _check_range(key, start, end)
        path = self._path(key)

        def read() -> bytes:
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if start >= size and (size > 0 or start > 0):
                        raise StorageError(
                            f"range [{start}, {end}) is outside {key!r} ({size} bytes)"
                        )
                    f.seek(start)
                    return f.read(-1 if end is None else end - start)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise ObjectNotFoundError(f"no object {key!r} in {self.root}") from None

        return await self._run(read)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
            try:
                with open(tmp, "xb") as f:
                    f.write(data)
                    if self.fsync:
                        os.fsync(f.fileno())
                if if_absent:
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        raise ObjectExistsError(f"object {key!r} already exists") from None
                else:
                    os.replace(tmp, path)
                if self.fsync:
                    fd = os.open(path.parent, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            finally:
                tmp.unlink(missing_ok=True)

        await self._run(write)

    async def head(self, key: str) -> ObjectInfo:
        path = self._path(key)

        def stat() -> ObjectInfo:
            try:
                st = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                raise ObjectNotFoundError(f"no object {key!r} in {self.root}") from None
            if not path.is_file():
                raise ObjectNotFoundError(f"no object {key!r} in {self.root}")
            return ObjectInfo(key, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}")

        return await self._run(stat)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        if self._closed:
            raise ClosedError("the object store is closed")

        def scan() -> list[ObjectInfo]:
            found = []
            for dirpath, _dirs, files in os.walk(self.root):
                rel = os.path.relpath(dirpath, self.root)
                for name in files:
                    if name.startswith(".tmp-"):
                        continue
                    key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                    if key.startswith(prefix):
                        size = os.stat(os.path.join(dirpath, name)).st_size
                        found.append(ObjectInfo(key, size))
            found.sort(key=lambda info: info.key)
            return found

        for info in await self._run(scan):
            yield info

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await self._run(lambda: path.unlink(missing_ok=True))

    async def aclose(self) -> None:
        self._closed = True


def object_store_from_url(
    url: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> ObjectStore:
    """Build a store from ``s3://bucket/prefix`` or ``file:///path``.

    For S3, arguments win over the environment variables AWS's own SDKs read:
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``.

    Raises:
        ConfigurationError: the URL or a credential is missing or malformed.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file URL {url!r} must be file:///absolute/path")
        path = urllib.parse.unquote(parsed.path)
        if not path:
            raise ConfigurationError(f"file URL {url!r} has no path")
        return LocalObjectStore(Path(path))
    if parsed.scheme == "s3":
        from ._s3 import S3ObjectStore

        bucket = parsed.netloc
        if not bucket:
            raise ConfigurationError(f"S3 URL {url!r} has no bucket; use s3://bucket/prefix")
        env = os.environ
        endpoint = endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        access_key = access_key or env.get("AWS_ACCESS_KEY_ID")
        secret_key = secret_key or env.get("AWS_SECRET_ACCESS_KEY")
        if not access_key or not secret_key:
            raise ConfigurationError(
                "S3 needs credentials: pass access_key and secret_key, or set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if not endpoint:
            endpoint = f"https://s3.{region}.amazonaws.com"
        return S3ObjectStore(
            bucket=bucket,
            prefix=parsed.path.strip("/"),
            endpoint=endpoint,
            region=region,
            access_key=access_key,
            secret_key=secret_key,
        )
    raise ConfigurationError(
        f"unsupported storage URL {url!r}; use s3://bucket/prefix or file:///path"
    )
