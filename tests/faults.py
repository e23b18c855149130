"""Scripted faults at the I/O seams: an object store and a metadata store that fail on cue.

Two kinds of plan decide what each call does:

- :class:`Script`, for tests that want one exact fault: ``down`` fails every
  call while True, ``fail_next`` fails the next n calls, ``only`` limits
  the script to some operations, ``lose_answers`` runs the call and then
  fails it (the worst case for a retry: done, and the caller does not know);
- :class:`FaultPlan`, for properties and chaos: a seeded random source
  decides per call whether it passes, fails before it runs, fails after it
  ran (a lost answer) or is delayed; never more than ``most_in_a_row``
  faults in a row per operation, so bounded retries succeed.

:class:`FaultyStore` and :class:`FaultyMetadata` wrap a real store with a
plan; :class:`CountingStore` wraps one to count its requests (what an S3
bill counts). Transient faults raise StorageUnavailableError or
MetadataUnavailableError, as the real stores do when the network or the
database fails.
"""

from __future__ import annotations

import collections
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio

from streamhouse import MetadataStore, ObjectStore
from streamhouse._errors import MetadataUnavailableError, StorageUnavailableError
from streamhouse._storage.protocol import ObjectInfo

T = TypeVar("T")

ErrorType = Callable[[str], Exception]


class Plan(Protocol):
    async def around(self, name: str, error: ErrorType, call: Callable[[], Awaitable[T]]) -> T: ...


class Script:
    """Deterministic faults: see the module docstring."""

    def __init__(self, *, only: set[str] | None = None) -> None:
        self.down = False
        self.fail_next = 0
        self.lose_answers = False
        self.only = only
        self.calls: collections.Counter[str] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()

    async def around(self, name: str, error: ErrorType, call: Callable[[], Awaitable[T]]) -> T:
        self.calls[name] += 1
        if self.only is not None and name not in self.only:
            return await call()
        if not (self.down or self.fail_next):
            return await call()
        self.fail_next = max(0, self.fail_next - 1)
        self.faults[name] += 1
        if self.lose_answers:
            await call()
            raise error(f"scripted: the answer of {name} was lost")
        raise error(f"scripted: {name} failed")


class FaultPlan:
    """Seeded random faults: see the module docstring."""

    def __init__(
        self,
        seed: int,
        *,
        rate: float = 0.15,
        most_in_a_row: int = 2,
        delay: float = 0.001,
        only: set[str] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.most_in_a_row = most_in_a_row
        self.delay = delay
        self.only = only
        self.in_a_row: collections.Counter[str] = collections.Counter()
        self.faults: collections.Counter[tuple[str, str]] = collections.Counter()

    async def around(self, name: str, error: ErrorType, call: Callable[[], Awaitable[T]]) -> T:
        if self.only is not None and name not in self.only:
            return await call()
        roll = self.rng.random()
        if self.in_a_row[name] >= self.most_in_a_row or roll >= self.rate:
            self.in_a_row[name] = 0
            return await call()
        self.in_a_row[name] += 1
        kind = self.rng.choice(["before", "after", "delay"])
        self.faults[(name, kind)] += 1
        if kind == "delay":
            await anyio.sleep(self.rng.uniform(0, self.delay))
            return await call()
        if kind == "after":
            await call()
            raise error(f"fault plan: the answer of {name} was lost")
        raise error(f"fault plan: {name} failed")


class FaultyStore:
    """An ObjectStore whose every operation goes through a plan."""

    def __init__(self, inner: ObjectStore, plan: Plan) -> None:
        self.inner = inner
        self.plan = plan
        self.gets: list[tuple[str, int, int | None]] = []

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self.gets.append((key, start, end))
        return await self.plan.around(
            "get", StorageUnavailableError, lambda: self.inner.get(key, start, end)
        )

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        await self.plan.around(
            "put", StorageUnavailableError, lambda: self.inner.put(key, data, if_absent=if_absent)
        )

    async def head(self, key: str) -> ObjectInfo:
        return await self.plan.around("head", StorageUnavailableError, lambda: self.inner.head(key))

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        async def first_page() -> list[ObjectInfo]:
            return [info async for info in self.inner.list(prefix, start_after=start_after)]

        for info in await self.plan.around("list", StorageUnavailableError, first_page):
            yield info

    async def delete(self, key: str) -> None:
        await self.plan.around("delete", StorageUnavailableError, lambda: self.inner.delete(key))

    async def check(self) -> None:
        # Not faulted: only a producer's open calls it, and a plan's faults
        # are meant for the reads and writes it scripts.
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()


class CountingStore:
    """An ObjectStore that counts the GETs and PUTs it passes to a real one."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.gets = 0
        self.puts = 0
        self.ranges: collections.Counter[str] = collections.Counter()  # GETs per object key

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self.gets += 1
        self.ranges[key] += 1
        return await self.inner.get(key, start, end)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self.puts += 1
        await self.inner.put(key, data, if_absent=if_absent)

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


class FaultyMetadata:
    """A MetadataStore whose every call but ``aclose`` goes through a plan."""

    def __init__(self, inner: MetadataStore, plan: Plan) -> None:
        self.inner = inner
        self.plan = plan

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name in ("aclose", "watch") or not callable(method):
            # (A watch is a hint, and its wait not a call the plans script.)
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.plan.around(
                name, MetadataUnavailableError, lambda: method(*args, **kwargs)
            )

        return call
