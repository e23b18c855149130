"""The cache actor: owns the cache directory and every byte in it.

Readers ask it for byte ranges of objects. A hit is read from its file; a
miss is fetched from the object store once, however many readers miss the
same range at once (single flight), written to a file and handed to every
asker. The directory never holds more than its byte budget: room is made,
least recently used first, *before* a fetch starts, since the size of a range
is known in advance. A range larger than the whole budget is served without
being cached.

On start the directory is scanned: complete files are counted against the
budget, and files that are partial (a ``.tmp`` left by a crash) or whose size
does not match the range in their name are deleted. A file whose bytes turn
out corrupt later fails its segment checksums; the reader then asks again
with ``refresh``, which drops the file and fetches anew.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import os
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import attrs
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from .._errors import ClosedError, StreamHouseError
from .._storage.protocol import ObjectStore
from .messages import drain

__all__ = ["CacheClient", "Fetch", "run_cache"]


@attrs.frozen
class Fetch:
    """Ask for bytes ``[start, end)`` of ``key``; ``reply`` None = prefetch only."""

    key: str
    start: int
    end: int
    reply: MemoryObjectSendStream[bytes | BaseException] | None
    refresh: bool = False


@attrs.frozen
class _Fetched:
    ident: str
    data: bytes | None
    error: BaseException | None
    write: int | None  # the write that will cache the bytes, if any
    ended: anyio.Event | None = None  # set when that write has ended, either way


@attrs.frozen
class _Read:
    ident: str
    token: int
    fetch: Fetch
    data: bytes | None  # None: the file was gone


@attrs.frozen
class _Written:
    ident: str
    write: int
    ok: bool


@attrs.frozen
class _Writing:
    token: int
    data: bytes
    done: anyio.Event


@attrs.frozen
class CacheStats:
    """What the cache did so far: for tests, metrics and the benchmark."""

    files: int
    bytes: int
    budget: int
    hits: int
    misses: int
    gets: int
    evictions: int
    joined: int


@attrs.frozen
class _Stats:
    reply: MemoryObjectSendStream[CacheStats]


def _ident(key: str, start: int, end: int) -> str:
    return f"{hashlib.sha1(key.encode()).hexdigest()[:32]}-{start}-{end}"


def _scan(directory: Path) -> list[tuple[str, int, float]]:
    """Complete cache files (ident, size, atime); removes partial or bad ones."""
    directory.mkdir(parents=True, exist_ok=True)
    found = []
    for entry in os.scandir(directory):
        path = Path(entry.path)
        name = entry.name
        ok = False
        if name.endswith(".bin") and not name.startswith(".tmp"):
            parts = name[: -len(".bin")].split("-")
            if len(parts) == 3 and all(p.isalnum() for p in parts):
                try:
                    start, end = int(parts[1]), int(parts[2])
                    st = entry.stat()
                    ok = st.st_size == end - start
                except ValueError:
                    ok = False
                if ok:
                    found.append((name[: -len(".bin")], st.st_size, st.st_atime))
        if not ok:
            path.unlink(missing_ok=True)
    found.sort(key=lambda f: f[2])
    return found


class CacheClient:
    """The readers' handle on the cache actor: a clone of its inbox."""

    def __init__(self, inbox: MemoryObjectSendStream[object]) -> None:
        self._inbox = inbox

    async def get(self, key: str, start: int, end: int, *, refresh: bool = False) -> bytes:
        """The bytes ``[start, end)`` of ``key``: from the cache, or fetched and cached."""
        send, receive = anyio.create_memory_object_stream[bytes | BaseException](1)
        with receive:
            try:
                await self._inbox.send(Fetch(key, start, end, send, refresh))
            except BaseException:
                send.close()
                raise
            try:
                answer = await receive.receive()
            except anyio.EndOfStream:
                raise ClosedError("the segment cache stopped") from None
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def prefetch(self, key: str, start: int, end: int) -> None:
        await self._inbox.send(Fetch(key, start, end, None))

    async def stats(self) -> CacheStats:
        send, receive = anyio.create_memory_object_stream[CacheStats](1)
        with receive:
            try:
                await self._inbox.send(_Stats(send))
            except BaseException:
                send.close()
                raise
            return await receive.receive()

    def close(self) -> None:
        self._inbox.close()


async def run_cache(
    storage: ObjectStore,
    directory: Path,
    budget: int,
    *,
    parked_limit: int = 8,
    task_status: TaskStatus[MemoryObjectSendStream[object]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the cache actor until cancelled.

    Hands its inbox's send end to the starter through ``task_status``.
    ``parked_limit`` bounds the prefetched ranges held in memory for the
    reads that follow them: read ahead from their files, or fetched when the
    budget cannot cache them (the readers' read-ahead, in segments).
    """
    files = await anyio.to_thread.run_sync(_scan, directory)
    # The ranges cached, least recently used first, with their sizes; a range
    # enters when its bytes arrive, while its file may still be being written.
    lru: collections.OrderedDict[str, int] = collections.OrderedDict()
    total = 0
    for ident, size, _ in files:
        lru[ident] = size
        total += size
    inflight: dict[str, list[MemoryObjectSendStream[bytes | BaseException]]] = {}
    reserved: dict[str, int] = {}  # bytes promised to fetches under way
    writing: dict[str, _Writing] = {}  # files being written
    deferred: dict[str, list[Fetch]] = {}  # refreshes waiting for a write to end
    parked: collections.OrderedDict[str, bytes] = collections.OrderedDict()  # read ahead
    # Files being read: (read, waiting replies); a refresh abandons a read.
    reading: dict[str, tuple[int, list[MemoryObjectSendStream[bytes | BaseException]]]] = {}
    reads = itertools.count()
    counters = collections.Counter[str]()
    writes = itertools.count()
    inbox_send, inbox = anyio.create_memory_object_stream[object](16)

    def path_of(ident: str) -> Path:
        return directory / f"{ident}.bin"

    async def make_room(room: int) -> bool:
        """Evict least recently used files until ``room`` more bytes fit; False if they cannot.

        A file still being written is evicted once its write ends, so the
        directory never holds more than the budget, not even for a moment.
        """
        nonlocal total
        if sum(reserved.values()) + room > budget:
            return False
        while lru and total + sum(reserved.values()) + room > budget:
            ident = next(iter(lru))
            if ident in writing:
                await writing[ident].done.wait()
            if lru.get(ident) is not None and next(iter(lru)) == ident:
                total -= lru.pop(ident)
                counters["evictions"] += 1
                await anyio.to_thread.run_sync(path_of(ident).unlink, True)
        return True

    def write(ident: str, token: int, data: bytes) -> None:
        tmp = directory / f".tmp-{ident}-{token}"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path_of(ident))
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    async def fetch(
        ident: str, msg: Fetch, cache_it: bool, done: MemoryObjectSendStream[object]
    ) -> None:
        with done:
            try:
                counters["gets"] += 1
                data = await storage.get(msg.key, msg.start, msg.end)
            except Exception as exc:
                await done.send(_Fetched(ident, None, exc, None))
                return
            token = next(writes) if cache_it and len(data) == msg.end - msg.start else None
            ended = anyio.Event()
            # The askers get the bytes first; the file is written while they
            # decode them.
            await done.send(_Fetched(ident, data, None, token, ended))
            if token is not None:
                ok = True
                try:
                    await anyio.to_thread.run_sync(write, ident, token, data)
                except OSError:
                    # A full or failing disk costs the cache, not the read:
                    # the bytes were handed over already.
                    ok = False
                finally:
                    ended.set()
                await done.send(_Written(ident, token, ok))

    async def read_file(
        ident: str, token: int, msg: Fetch, done: MemoryObjectSendStream[object]
    ) -> None:
        with done:
            try:
                data: bytes | None = await anyio.to_thread.run_sync(path_of(ident).read_bytes)
            except OSError:  # evicted meanwhile
                data = None
            await done.send(_Read(ident, token, msg, data))

    def answer_with(reply: MemoryObjectSendStream[bytes | BaseException], answer: object) -> None:
        with reply, contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            reply.send_nowait(answer)  # type: ignore[arg-type]

    async def on_fetch(msg: Fetch, tg: anyio.abc.TaskGroup) -> None:
        nonlocal total
        ident = _ident(msg.key, msg.start, msg.end)
        if msg.refresh and ident in writing:
            # Handled once the file is written: then it is dropped.
            deferred.setdefault(ident, []).append(msg)
            return
        if msg.refresh and ident in lru:
            total -= lru.pop(ident)
            await anyio.to_thread.run_sync(path_of(ident).unlink, True)
        abandoned: list[MemoryObjectSendStream[bytes | BaseException]] = []
        if msg.refresh:
            # The bytes read or parked may be the bad ones: none is served.
            parked.pop(ident, None)
            abandoned = reading.pop(ident, (0, []))[1]
        if ident in parked:
            if msg.reply is not None:
                answer_with(msg.reply, parked.pop(ident))
        elif ident in lru:
            counters["hits"] += 1
            lru.move_to_end(ident)
            if ident in writing:
                if msg.reply is not None:
                    answer_with(msg.reply, writing[ident].data)
            elif ident in reading:
                if msg.reply is not None:
                    reading[ident][1].append(msg.reply)
            else:
                # Read in a thread; a prefetch's bytes are parked for the
                # read that follows it, so the file is read while the reader
                # decodes the segment before.
                token = next(reads)
                reading[ident] = (token, [msg.reply] if msg.reply is not None else [])
                tg.start_soon(read_file, ident, token, msg, own.clone())
        elif ident in inflight:
            counters["joined"] += 1
            if msg.reply is not None:
                inflight[ident].append(msg.reply)
        else:
            counters["misses"] += 1
            inflight[ident] = [msg.reply] if msg.reply is not None else []
            size = msg.end - msg.start
            cache_it = await make_room(size)
            if cache_it:
                reserved[ident] = size
            tg.start_soon(fetch, ident, msg, cache_it, own.clone())
        if abandoned:  # a refresh always ends in a fetch: they wait for it too
            inflight[ident] += abandoned

    async def on_fetched(msg: _Fetched) -> None:
        nonlocal total
        waiters = inflight.pop(msg.ident, [])
        size = reserved.pop(msg.ident, 0)
        if msg.write is not None and msg.data is not None:
            assert msg.ended is not None
            writing[msg.ident] = _Writing(msg.write, msg.data, msg.ended)
            lru[msg.ident] = size
            total += size
        answer: bytes | BaseException = (
            msg.data if msg.data is not None else (msg.error or StreamHouseError("fetch failed"))
        )
        for reply in waiters:
            answer_with(reply, answer)
        if not waiters and msg.write is None and msg.data is not None:
            # A prefetch that the budget could not cache: kept in memory for
            # the read that follows it, instead of fetched twice.
            park(msg.ident, msg.data)

    def park(ident: str, data: bytes) -> None:
        parked[ident] = data
        while len(parked) > parked_limit:
            parked.popitem(last=False)

    async def on_read(msg: _Read, tg: anyio.abc.TaskGroup) -> None:
        current = reading.get(msg.ident)
        if current is None or current[0] != msg.token:
            return  # abandoned by a refresh
        waiters = reading.pop(msg.ident)[1]
        if msg.data is None:
            # The file went (evicted while it was read): fetch it again.
            for reply in waiters:
                await on_fetch(attrs.evolve(msg.fetch, reply=reply, refresh=True), tg)
        elif waiters:
            for reply in waiters:
                answer_with(reply, msg.data)
        else:
            park(msg.ident, msg.data)

    async def on_written(msg: _Written, tg: anyio.abc.TaskGroup) -> None:
        nonlocal total
        current = writing.get(msg.ident)
        if current is None or current.token != msg.write:
            return  # a later fetch of the same range is being written
        del writing[msg.ident]
        if msg.ident in lru and not msg.ok:
            total -= lru.pop(msg.ident)
        for later in deferred.pop(msg.ident, []):
            await on_fetch(later, tg)

    # The actor keeps a clone for its own tasks' answers, so it runs until it
    # is cancelled when the consumer closes.
    own = inbox_send.clone()
    task_status.started(inbox_send)
    try:
        async with anyio.create_task_group() as tg, own:
            async for msg in inbox:
                if isinstance(msg, _Stats):
                    with msg.reply:
                        await msg.reply.send(
                            CacheStats(
                                len(lru),
                                total,
                                budget,
                                counters["hits"],
                                counters["misses"],
                                counters["gets"],
                                counters["evictions"],
                                counters["joined"],
                            )
                        )
                elif isinstance(msg, Fetch):
                    await on_fetch(msg, tg)
                elif isinstance(msg, _Fetched):
                    await on_fetched(msg)
                elif isinstance(msg, _Written):
                    await on_written(msg, tg)
                elif isinstance(msg, _Read):
                    await on_read(msg, tg)
            tg.cancel_scope.cancel()
    finally:
        for waiters in (*inflight.values(), *(w for _, w in reading.values())):
            for reply in waiters:
                reply.close()
        drain(inbox)
        inbox.close()
