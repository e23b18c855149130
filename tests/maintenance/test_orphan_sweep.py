"""The orphan sweep lists only what it has not examined: from the catalogue's
mark on (keys are stamped with their upload time and listed in key order),
on both object stores and both metadata stores."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from streamhouse import (
    MetadataStore,
    ObjectInfo,
    ObjectStore,
    StorageUnavailableError,
    open_admin,
    open_producer,
)
from streamhouse._maintenance import delete_orphans
from streamhouse._maintenance.orphans import MARK_LAG
from streamhouse._storage.keys import object_key_time

from ..helpers import make_s3_store
from ..servers.seaweed import S3Server

pytestmark = pytest.mark.anyio


def stamped(seconds_ago: float, tail: str) -> str:
    """A producer's key for an upload ``seconds_ago``."""
    return f"data/{int((time.time() - seconds_ago) * 1000):013d}-{tail:0>16}.seg"


class Listed:
    """``inner``, noting every key its listings yield."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.keys: list[str] = []

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        async for info in self.inner.list(prefix, start_after=start_after):
            self.keys.append(info.key)
            yield info

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_sweep_starts_where_the_last_one_stopped(
    store: ObjectStore, meta: MetadataStore
) -> None:
    """A sweep deletes the orphans past its grace and raises the mark to an
    hour before its cutoff; the next one lists nothing stamped before the mark
    (an upload stamped there later is kept, never wrongly deleted), deletes
    what is new, and a sweep of a longer grace never lowers the mark."""
    async with open_admin(storage=store, metadata=meta) as admin:
        await admin.create_topic("t")
        async with open_producer(storage=store, metadata=meta, linger=0) as producer:
            await producer.send("t", b"kept")
    old = stamped(5 * 3600, "a")
    await store.put(old, b"crashed between PUT and commit")
    assert await meta.orphan_sweep_mark() == 0.0
    before = time.time()
    swept = await delete_orphans(store, meta, grace=3600)
    assert [info.key for info in swept.objects] == [old]
    mark = await meta.orphan_sweep_mark()
    assert before - 3600 - MARK_LAG <= mark <= time.time() - 3600 - MARK_LAG

    late = stamped(3 * 3600, "b")  # below the mark: a producer's clock far behind
    new = stamped(1.5 * 3600, "c")  # between the mark and the next cutoff
    young = stamped(60, "d")
    for key in (late, new, young):
        await store.put(key, b"never committed")
    listed = Listed(store)
    swept = await delete_orphans(listed, meta, grace=1800)  # type: ignore[arg-type]
    assert [info.key for info in swept.objects] == [new]
    stamps = [object_key_time(key) for key in listed.keys]
    assert all(s is not None and s >= int(mark * 1000) / 1000 for s in stamps), listed.keys
    assert late not in listed.keys
    assert young in listed.keys  # listed, but inside the grace
    second = await meta.orphan_sweep_mark()
    assert second >= time.time() - 1800 - MARK_LAG - 60

    await delete_orphans(store, meta, grace=4 * 3600)
    assert await meta.orphan_sweep_mark() == second  # never lowered
    left = {info.key async for info in store.list("data/")}
    assert {late, young} <= left
    assert old not in left
    assert new not in left


async def test_a_clock_ahead_or_a_short_grace_stops_no_later_sweep(
    store: ObjectStore, meta: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark stays an hour behind the newest key a sweep listed: one pass by
    a maintainer whose clock is a day ahead, or one with a grace of a second
    while an upload is under way (its key stamped before its PUT lands), leaves
    later uploads to later sweeps."""
    await store.put(stamped(0, "a"), b"an upload, never committed")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86400)
    await delete_orphans(store, meta, grace=3600)  # deletes it: a day "past" the grace
    monkeypatch.setattr(time, "time", real)
    assert await meta.orphan_sweep_mark() <= time.time() - MARK_LAG
    after_skew = stamped(1800, "b")  # uploaded after, stamped before the bad clock's cutoff
    await store.put(after_skew, b"never committed")
    under_way = stamped(5, "c")  # stamped; its PUT lands after the next sweep
    assert [o.key for o in (await delete_orphans(store, meta, grace=1)).objects] == [after_skew]
    await store.put(under_way, b"never committed")
    assert [o.key for o in (await delete_orphans(store, meta, grace=0)).objects] == [under_way]


async def test_a_store_without_the_mark_lists_everything(
    store: ObjectStore, meta: MetadataStore
) -> None:
    """A MetadataStore written before the mark (no orphan_sweep_mark) gets the
    sweep of old: every key listed, each orphan past the grace deleted."""

    class Older:
        def __init__(self, inner: MetadataStore) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            if "orphan_sweep_mark" in name:
                raise AttributeError(name)
            return getattr(self.inner, name)

    old = stamped(3 * 3600, "a")
    await store.put(old, b"never committed")
    swept = await delete_orphans(store, Older(meta), grace=3600)  # type: ignore[arg-type]
    assert [info.key for info in swept.objects] == [old]
    assert await meta.orphan_sweep_mark() == 0.0


async def test_s3_listing_starts_after_a_key_on_the_server(
    s3_server: S3Server, s3_prefix: str
) -> None:
    """start-after goes to the server: with two keys a page, listing after the
    fourth of six keys takes one LIST request, not three."""
    lists: list[httpx.Request] = []

    class Counting(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "GET" and "list-type" in request.url.params:
                lists.append(request)
            return await super().handle_async_request(request)

    store = make_s3_store(s3_server, s3_prefix, transport=Counting())
    store.list_page_size = 2
    keys = [f"data/{i}" for i in range(6)]
    for key in keys:
        await store.put(key, b"x")
    assert [info.key async for info in store.list("data/", start_after=keys[3])] == keys[4:]
    assert len(lists) == 1
    assert lists[0].url.params["start-after"] == f"{s3_prefix}/{keys[3]}"
    lists.clear()
    assert [info.key async for info in store.list("data/")] == keys
    assert len(lists) == 3
    await store.aclose()


async def test_an_object_store_without_start_after_is_listed_whole(
    store: ObjectStore, meta: MetadataStore
) -> None:
    """An ObjectStore written before start_after is listed from its first key;
    the mark still keeps the sweep off what was examined before it."""

    class Older:
        def __init__(self, inner: ObjectStore) -> None:
            self.inner = inner

        def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
            return self.inner.list(prefix)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    await store.put(stamped(60, "x"), b"young")
    await delete_orphans(store, meta, grace=3600)  # the mark: two hours ago
    late, new = stamped(3 * 3600, "b"), stamped(1.5 * 3600, "c")
    for key in (late, new):
        await store.put(key, b"never committed")
    swept = await delete_orphans(Older(store), meta, grace=1800)  # type: ignore[arg-type]
    assert [info.key for info in swept.objects] == [new]
    assert late in {info.key async for info in store.list("data/")}


async def test_a_sweep_that_fails_midway_leaves_the_mark_where_it_was(
    store: ObjectStore, meta: MetadataStore
) -> None:
    """A delete that fails (a dead server) ends the sweep with its error and
    the mark unmoved, so the next sweep examines the same keys and deletes
    the orphan."""

    class Dying:
        def __init__(self, inner: ObjectStore) -> None:
            self.inner = inner

        async def delete(self, key: str) -> None:
            raise StorageUnavailableError(f"scripted: DELETE {key} could not reach the server")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    await store.put(stamped(60, "x"), b"young")
    orphan = stamped(3 * 3600, "a")
    await store.put(orphan, b"never committed")
    with pytest.raises(StorageUnavailableError, match="scripted"):
        await delete_orphans(Dying(store), meta, grace=3600)  # type: ignore[arg-type]
    assert await meta.orphan_sweep_mark() == 0.0
    assert [o.key for o in (await delete_orphans(store, meta, grace=3600)).objects] == [orphan]
    assert await meta.orphan_sweep_mark() > 0.0
