"""LocalObjectStore: objects as files under a directory (the embedded default)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import attrs

from .._errors import ClosedError, ObjectExistsError, ObjectNotFoundError, StorageError
from .protocol import ObjectInfo, check_key, check_range

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

    async def _run(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

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
