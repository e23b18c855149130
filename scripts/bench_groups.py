"""Consumer group figures: how long partitions are unowned when members come and go.

    python scripts/bench.py --groups [--json]

One topic of 64 partitions on a local object store (the figures are about
membership, not the data path), a producer writing to every partition all
along, and members that are consumers in this process (each with its own
tasks, as separate processes would be), auto-commit on, heartbeats every
0.1 s, sessions of 2 s. The group goes through: members joining one by one
(1 -> 2 -> 3 -> 4), one leaving (close), one crashing (cut off from the
metadata store and abandoned without leaving). After each event the clock
runs until every partition is owned again by the live members, balanced
(counts within one), each member's ``assignment()`` agreeing: that time is
the figure. Records delivered twice are counted per event: 0 is the promise
for joins and leaves; after a crash, what the crashed member processed past
its last commit comes again. On SQLite and on an embedded PostgreSQL
(loopback TCP).
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (puts tests/ on the path)
import trio

from streamhouse import (
    LocalObjectStore,
    MetadataStore,
    MetadataUnavailableError,
    PostgresMetadataStore,
    SQLiteMetadataStore,
    open_consumer,
    open_producer,
)
from tests.helpers import drop_schema
from tests.servers.postgres import running_postgres

PARTITIONS = 64
HEARTBEAT = 0.1
SESSION = 2.0


class Cuttable:
    """A MetadataStore a crashed member loses (every call fails once cut)."""

    def __init__(self, inner: MetadataStore) -> None:
        self.inner = inner
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.cut:
                raise MetadataUnavailableError("bench: this member crashed")
            return await attr(*args, **kwargs)

        return call


class Member:
    def __init__(self, name: str, storage: LocalObjectStore, meta: MetadataStore) -> None:
        self.name = name
        self.storage = storage
        self.meta = Cuttable(meta)
        self.stop = trio.Event()
        self.consumer: Any = None
        self.scope = trio.CancelScope()

    async def run(self, seen: collections.Counter[tuple[int, int]], ready: trio.Event) -> None:
        with self.scope:
            async with open_consumer(
                "g-bench", group_id="bench", storage=self.storage, metadata=self.meta,
                offset_reset="earliest", heartbeat_interval=HEARTBEAT, session_timeout=SESSION,
                auto_commit_interval=0.2, close_timeout=2.0,
            ) as consumer:  # fmt: skip
                self.consumer = consumer
                ready.set()
                while not self.stop.is_set():
                    for r in await consumer.poll(timeout=0.05):
                        seen[(r.partition, r.offset)] += 1


async def settled(meta: MetadataStore, members: list[Member]) -> bool:
    live = [m for m in members if m.consumer is not None]
    described = await meta.describe_group_members("bench")
    if len(described) != len(live):
        return False
    owned = [m.assignment for m in described]
    if sum(map(len, owned)) != PARTITIONS or len(frozenset().union(*owned)) != PARTITIONS:
        return False
    counts = [len(m.consumer.assignment()) for m in live]
    return sum(counts) == PARTITIONS and max(counts) - min(counts) <= 1


async def until_settled(meta: MetadataStore, members: list[Member]) -> float:
    started = time.perf_counter()
    with trio.fail_after(60):
        # Polled: what is measured is when the store and the consumers agree.
        while not await settled(meta, members):  # noqa: ASYNC110
            await trio.sleep(0.01)
    return time.perf_counter() - started


async def produce_forever(storage: LocalObjectStore, meta: MetadataStore) -> None:
    async with open_producer(storage=storage, metadata=meta, linger=0.02) as producer:
        n = 0
        while True:
            for p in range(PARTITIONS):
                await producer.send_batch("g-bench", [b"%d" % (n + i) for i in range(5)],
                                          partition=p)  # fmt: skip
            n += 5
            await trio.sleep(0.05)


async def one_store(meta: MetadataStore, root: Path) -> dict[str, Any]:
    storage = LocalObjectStore(root / "objects")
    await meta.create_topic("g-bench", PARTITIONS)
    seen: collections.Counter[tuple[int, int]] = collections.Counter()
    members: list[Member] = []
    events: dict[str, dict[str, float]] = {}

    def twice() -> int:
        return sum(n - 1 for n in seen.values() if n > 1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce_forever, storage, meta)

        async def event(name: str) -> None:
            before = twice()
            seconds = await until_settled(meta, members)
            await trio.sleep(1.0)  # let records flow under the new assignment
            events[name] = {"seconds": round(seconds, 3), "twice": twice() - before}

        for i in range(4):
            member = Member(f"m{i}", storage, meta)
            members.append(member)
            ready = trio.Event()
            nursery.start_soon(member.run, seen, ready)
            await ready.wait()
            await event(f"join {i} -> {i + 1}")
        leaving = members.pop()
        leaving.stop.set()
        await event("one leaves (4 -> 3)")
        crashed = members.pop()
        crashed.meta.cut = True
        crashed.scope.cancel()
        await event("one crashes (3 -> 2)")
        nursery.cancel_scope.cancel()
    await storage.aclose()
    return events


async def run_groups(postgres: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sqlite = SQLiteMetadataStore(root / "meta.db")
        out["SQLite"] = await one_store(sqlite, root / "sqlite")
        await sqlite.aclose()
        if postgres:
            with running_postgres(tcp=True, durable=True) as pg:
                schema = f"bench_{uuid.uuid4().hex[:8]}"
                store = PostgresMetadataStore(pg.url, schema=schema)
                try:
                    out["PostgreSQL (embedded, loopback TCP)"] = await one_store(store, root / "pg")
                finally:
                    await store.aclose()
                    with contextlib.suppress(Exception):
                        drop_schema(pg.url, schema)
    return out


def groups(args: Any) -> dict[str, Any]:
    return {"groups": trio.run(run_groups, True)}


def print_groups(result: dict[str, Any]) -> None:
    print(f"consumer groups: {PARTITIONS} partitions, heartbeat {HEARTBEAT}s, session {SESSION}s")
    for store, events in result["groups"].items():
        print(f"  {store}")
        for name, figures in events.items():
            print(f"    {name:22} owned again after {figures['seconds']:6.3f} s, "
                  f"records delivered twice: {figures['twice']}")  # fmt: skip
