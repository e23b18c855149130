"""An ObjectStore that counts and times every request of the store it wraps.

The clients wrap their store in it (``open_consumer``, ``open_producer``),
so the storage metrics are the same for S3 and a local directory, and a
store passed in by the application is measured per client. A request is
one call of the protocol (its retries inside the store included); a
``list`` counts once, when its iteration ends. A request cancelled (a
deadline, a close) is not counted: it neither worked nor failed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from .._metrics import StorageProbe
from .protocol import ObjectInfo, ObjectStore

__all__ = ["MeteredObjectStore"]


class MeteredObjectStore:
    """``inner`` with every request counted, timed and its bytes added up."""

    def __init__(self, inner: ObjectStore, probe: StorageProbe) -> None:
        self.inner = inner
        self._probe = probe

    def __repr__(self) -> str:
        return repr(self.inner)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        started = time.perf_counter()
        try:
            data = await self.inner.get(key, start, end)
        except Exception:
            self._probe.request("get", False, started)
            raise
        self._probe.request("get", True, started)
        self._probe.read(len(data))
        return data

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        started = time.perf_counter()
        try:
            await self.inner.put(key, data, if_absent=if_absent)
        except Exception:
            self._probe.request("put", False, started)
            raise
        self._probe.request("put", True, started)
        self._probe.written(len(data))

    async def head(self, key: str) -> ObjectInfo:
        started = time.perf_counter()
        try:
            info = await self.inner.head(key)
        except Exception:
            self._probe.request("head", False, started)
            raise
        self._probe.request("head", True, started)
        return info

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        started = time.perf_counter()
        try:
            async for info in self.inner.list(prefix, start_after=start_after):
                yield info
        except Exception:
            self._probe.request("list", False, started)
            raise
        self._probe.request("list", True, started)

    async def delete(self, key: str) -> None:
        started = time.perf_counter()
        try:
            await self.inner.delete(key)
        except Exception:
            self._probe.request("delete", False, started)
            raise
        self._probe.request("delete", True, started)

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()
