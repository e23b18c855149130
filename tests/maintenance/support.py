"""What the maintenance tests share: writing flushes, reading the log back,
the objects in the store, and scripted doubles that steal the lease or
kill a maintainer at a chosen moment."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from streamhouse import MetadataStore, ObjectStore
from streamhouse._metadata.protocol import MaintenanceLease
from streamhouse._storage.protocol import ObjectInfo

from ..helpers import Row, Stores, read_partition

DAY_MS = 86_400_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def flushes(
    stores: Stores,
    topic: str,
    partition: int,
    batches: Sequence[Sequence[tuple[bytes | None, bytes | None]]],
    timestamp: int | None = None,
) -> None:
    """Write each batch of (key, value) records as one flush: one segment each."""
    async with stores.producer(linger=0) as producer:
        for batch in batches:
            await producer.send_batch(
                topic,
                [v for _, v in batch],
                keys=[k for k, _ in batch],
                partition=partition,
                timestamps=timestamp,
            )


async def log(stores: Stores, topic: str, partition: int = 0) -> list[tuple[int, Any, Any]]:
    """(offset, key, value) of every record of a partition, read from the catalogue."""
    rows: list[Row] = await read_partition(stores.storage, stores.meta, topic, partition)
    return [(offset, key, value) for offset, _, key, value, _ in rows]


async def object_keys(storage: ObjectStore) -> set[str]:
    return {info.key async for info in storage.list("data/")}


async def referenced_keys(meta: MetadataStore, topic: str, partitions: int) -> set[str]:
    keys = set()
    for p in range(partitions):
        keys |= {s.object_key for s in await meta.list_segments(topic, p, 0, limit=100_000)}
    return keys


class Killed(BaseException):
    """A maintainer killed mid-call (a BaseException: nothing catches it)."""


class Killer:
    """Counts the calls a maintainer makes and kills it at the ``at``-th."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls: list[str] = []

    def tick(self, op: str) -> None:
        self.calls.append(op)
        if len(self.calls) == self.at:
            raise Killed(f"killed at call {self.at}, {op}")


class Dying:
    """A MetadataStore whose maintainer dies: it never gives its lease up (the
    test can take it, as if it ran out), and with a Killer, it is killed right
    after a maintenance write lands (before it learns the answer)."""

    _WRITES = frozenset({"retire_segments", "replace_segments", "claim_garbage", "confirm_deleted"})

    def __init__(self, inner: MetadataStore, killer: Killer | None = None) -> None:
        self.inner = inner
        self.killer = killer
        self.lease: MaintenanceLease | None = None

    async def acquire_lease(self, holder: str, ttl: float) -> MaintenanceLease | None:
        self.lease = await self.inner.acquire_lease(holder, ttl)
        return self.lease

    async def release_lease(self, lease: MaintenanceLease) -> None:
        """A killed process gives nothing up."""

    async def expire(self) -> None:
        """The dead maintainer's lease runs out."""
        assert self.lease is not None
        await self.inner.release_lease(self.lease)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        killer = self.killer
        if killer is None or name not in self._WRITES:
            return method

        async def landed_then_killed(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            killer.tick(name)
            return result

        return landed_then_killed


class Fatal:
    """An ObjectStore whose caller a Killer kills at a get, put, delete or list
    (before the call happens)."""

    def __init__(self, inner: ObjectStore, killer: Killer) -> None:
        self.inner = inner
        self.killer = killer

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self.killer.tick("get")
        return await self.inner.get(key, start, end)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self.killer.tick("put")
        await self.inner.put(key, data, if_absent=if_absent)

    async def head(self, key: str) -> ObjectInfo:
        return await self.inner.head(key)

    def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        self.killer.tick("list")
        return self.inner.list(prefix, start_after=start_after)

    async def delete(self, key: str) -> None:
        self.killer.tick("delete")
        await self.inner.delete(key)

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()
