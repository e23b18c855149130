"""LocalObjectStore: objects as files under a directory (the embedded default).

Every OSError is translated here into a StorageError (a missing file into
ObjectNotFoundError), with the original as ``__cause__``.
"""

from __future__ import annotations

import builtins
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import attrs

from .._errors import (
    ClosedError,
    InvalidArgumentError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
)
from .protocol import TEMPORARY_PREFIX, ObjectInfo, check_key, check_range

__all__ = ["LocalObjectStore"]

T = TypeVar("T")


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

    async def _run(self, fn: Callable[[], T], what: str = "") -> T:
        try:
            return await anyio.to_thread.run_sync(fn, limiter=self._limiter)
        except OSError as exc:
            raise StorageError(f"{what or 'file I/O'} in {self.root}: {exc}") from exc

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        check_range(key, start, end)
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

        return await self._run(read, f"GET {key!r}")

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}")
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

        await self._run(write, f"PUT {key!r}")

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

        return await self._run(stat, f"HEAD {key!r}")

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        if self._closed:
            raise ClosedError("the object store is closed")

        def scan() -> list[ObjectInfo]:
            found = []
            for dirpath, _dirs, files in os.walk(self.root):
                rel = os.path.relpath(dirpath, self.root)
                for name in files:
                    if name.startswith(TEMPORARY_PREFIX):
                        continue
                    key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                    if key.startswith(prefix) and key > start_after:
                        size = os.stat(os.path.join(dirpath, name)).st_size
                        found.append(ObjectInfo(key, size))
            found.sort(key=lambda info: info.key)
            return found

        for info in await self._run(scan, f"LIST {prefix!r}"):
            yield info

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await self._run(lambda: path.unlink(missing_ok=True), f"DELETE {key!r}")

    async def check(self) -> None:
        """Check that the directory exists or can be made, and takes a file.

        Raises:
            StorageError: it cannot be created or written (the message says
                why, e.g. a permission or a file in the way).
        """
        if self._closed:
            raise ClosedError("the object store is closed")

        def probe() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f"{TEMPORARY_PREFIX}check-{uuid.uuid4().hex}"
            try:
                with open(tmp, "xb") as f:
                    f.write(b"streamhouse")
            finally:
                tmp.unlink(missing_ok=True)

        await self._run(probe, "writing a test file")

    async def delete_stale_temporaries(self, older_than: float) -> builtins.list[str]:
        """Delete temporary files last written more than ``older_than`` seconds ago.

        A process killed in the middle of a put leaves its temporary file
        (``.tmp-*``) behind; nothing else would ever remove it. A put in
        progress keeps writing to its temporary, so a grace of minutes or
        more leaves live ones alone.

        Returns:
            The deleted files' paths relative to the root, '/'-separated.
        """
        if (
            isinstance(older_than, bool)
            or not isinstance(older_than, int | float)
            or not math.isfinite(older_than)
            or older_than < 0
        ):
            raise InvalidArgumentError(
                f"older_than must be a finite number of seconds >= 0, not {older_than!r}"
            )
        if self._closed:
            raise ClosedError("the object store is closed")
        cutoff = time.time() - older_than

        def sweep() -> builtins.list[str]:
            deleted = []
            for dirpath, _dirs, files in os.walk(self.root):
                rel = os.path.relpath(dirpath, self.root)
                for name in files:
                    if not name.startswith(TEMPORARY_PREFIX):
                        continue
                    path = os.path.join(dirpath, name)
                    try:
                        if os.stat(path).st_mtime >= cutoff:
                            continue
                        os.unlink(path)
                    except FileNotFoundError:  # its put finished or failed meanwhile
                        continue
                    deleted.append(name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}")
            return sorted(deleted)

        return await self._run(sweep, "deleting stale temporaries")

    async def aclose(self) -> None:
        self._closed = True
