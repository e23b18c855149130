"""The cache actor: owns the cache directory and every byte in it.

Readers ask it for byte ranges of objects. A hit is read from its file; a
miss is fetched from the object store once, however many readers miss the
same range at once (single flight), written to a file and handed to every
asker. The directory never holds more than its byte budget: room is made,
least recently used first, *before* a fetch starts, since the size of a range
is known in advance. A range larger than the whole budget is served without
being cached; with a budget of 0 nothing touches the disk at all.

A file whose bytes turn out corrupt fails its segment checksums; the reader
then asks again with ``refresh``, which drops the file and fetches anew
(bytes read ahead from that file are never served). A failed GET is handed
to its askers and leaves nothing behind: the next ask fetches again.

The actor's state (:class:`_Cache`) belongs to its task alone: the helper
tasks that GET, read and write report back through the actor's own inbox,
and only the actor counts.
"""

from __future__ import annotations

import collections
import functools
import itertools
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import attrs
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from .._metrics import CacheProbe, unread_metrics
from .._storage.protocol import ObjectStore
from .cachedir import CacheDirectory
from .cachework import (
    Admission,
    CacheClient,
    CacheStats,
    Fetch,
    Fetched,
    FetchMany,
    Gathered,
    Miss,
    Plan,
    Prefetch,
    Read,
    Slice,
    Stats,
    Want,
    WindowFetched,
    Writing,
    Written,
    ident_of,
    write_file,
)
from .messages import Reply, drain
from .spans import Windows

__all__ = ["CacheClient", "CacheStats", "Fetch", "Prefetch", "Stats", "run_cache"]


class _Cache:
    """The cache actor's state and its handlers, one per message kind."""

    def __init__(
        self,
        storage: ObjectStore,
        directory: CacheDirectory | None,
        budget: int,
        parked_limit: int,
        own: MemoryObjectSendStream[object],
        tg: anyio.abc.TaskGroup,
        probe: CacheProbe,
        admission: Admission,
    ) -> None:
        self.storage = storage
        self.admission = admission
        self.probe = probe
        self.directory = directory.path if directory is not None else None
        self.budget = budget if directory is not None else 0
        self.parked_limit = parked_limit
        self.own = own
        self.tg = tg
        # The ranges cached, least recently used first, with their sizes; a
        # range enters when its bytes arrive, while its file may still be
        # being written.
        self.lru: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.total = 0
        for found in directory.files if directory is not None else []:
            self.lru[found.ident] = found.size
            self.total += found.size
        probe.bytes.set(self.total)
        self.inflight: dict[str, list[Reply[bytes]]] = {}  # GETs under way, and their askers
        self.reserved: dict[str, int] = {}  # bytes promised to fetches under way
        # Their sum, kept: summed at each miss, it was quadratic (10,000
        # segments missed at once cost 0.5 s).
        self.reserved_total = 0
        self.writing: dict[str, Writing] = {}  # files being written
        self.deferred: dict[str, list[Want]] = {}  # refreshes waiting for a write to end
        self.parked: collections.OrderedDict[str, bytes] = collections.OrderedDict()  # ahead
        # Files being read: (read, waiting replies); a refresh abandons a read.
        self.reading: dict[str, tuple[int, list[Reply[bytes]]]] = {}
        self.windows = Windows[Miss | Slice]()  # packed objects' windows: one GET, many ranges
        self.reads = itertools.count()
        self.writes = itertools.count()
        self.hits = self.misses = self.gets = self.evictions = self.joined = 0

    def path_of(self, ident: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{ident}.bin"

    async def handle(self, msg: object) -> None:
        match msg:
            case Fetch():
                await self.want(
                    Want(msg.key, msg.start, msg.end, msg.reply, msg.refresh, msg.segment)
                )
            case FetchMany():
                await self.want_many(msg)
            case Plan():
                self.windows.plan(msg.spans)
            case Prefetch():
                await self.want(Want(msg.key, msg.start, msg.end, None, False, True))
            case Fetched():
                self.fetched(msg)
            case WindowFetched():
                await self.window_fetched(msg)
            case Read():
                await self.read(msg)
            case Written():
                await self.written(msg)
            case Stats():
                msg.reply.put(self.stats())
            case _:  # pragma: no cover - nothing else is sent here
                raise AssertionError(f"unexpected message {msg!r}")

    def stats(self) -> CacheStats:
        return CacheStats(
            len(self.lru), self.total, self.budget, self.hits, self.misses, self.gets,
            self.evictions, self.joined,
        )  # fmt: skip

    # -- asks ----------------------------------------------------------------------

    async def want(self, want: Want) -> None:
        ident = ident_of(want.key, want.start, want.end)
        if want.refresh and ident in self.writing:
            # Handled once the file is written: then it is dropped.
            self.deferred.setdefault(ident, []).append(want)
            return
        abandoned: list[Reply[bytes]] = []
        if want.refresh:
            await self.forget(ident)
            self.windows.drop(want.key)
            # The bytes read or parked may be the bad ones: none is served.
            self.parked.pop(ident, None)
            abandoned = self.reading.pop(ident, (0, []))[1]
        if ident in self.parked:
            if want.reply is not None:
                want.reply.put(self.parked.pop(ident))
        elif ident in self.lru:
            self.hit(ident, want)
        elif ident in self.inflight:
            self.joined += 1
            if want.reply is not None:
                self.inflight[ident].append(want.reply)
        else:
            await self.miss(ident, want)
        if abandoned:  # a refresh always ends in a fetch: they wait for it too
            self.inflight[ident] += abandoned

    async def want_many(self, msg: FetchMany) -> None:
        """Serve each range of a FetchMany from a window of its object, held
        or being fetched (one GET per object, whatever the ranges asking);
        a range in the cache's files or already asked for, as a Fetch.

        The short way matters at 1,000 partitions: a Fetch's bookkeeping
        (a miss, a reservation, a waiter list) cost about 35 us a range,
        and a cold read asks for 10,000 of them at once.
        """
        parts = Gathered(msg.reply, len(msg.ranges)).parts()
        for (key, start, end), part in zip(msg.ranges, parts, strict=True):
            ident = ident_of(key, start, end)
            window = self.windows.window_for(key, start, end)
            if (
                not start  # perhaps a whole object: then cached as a Fetch would be
                or window is None
                or ident in self.lru
                or ident in self.inflight
            ):
                await self.want(Want(key, start, end, part, False, True))
                continue
            self.misses += 1
            self.probe.misses.inc()
            data = self.parked.pop(ident, None) or self.windows.slice(key, start, end)
            if data is not None:
                part.put(data)
            else:
                self.await_window(key, Slice(part, start, end), window)

    def hit(self, ident: str, want: Want) -> None:
        self.hits += 1
        self.probe.hits.inc()
        self.lru.move_to_end(ident)
        if ident in self.writing:
            if want.reply is not None:
                want.reply.put(self.writing[ident].data)
        elif ident in self.reading:
            if want.reply is not None:
                self.reading[ident][1].append(want.reply)
        else:
            # Read in a thread; a prefetch's bytes are parked for the read
            # that follows it, so the file is read while the reader decodes
            # the segment before.
            token = next(self.reads)
            self.reading[ident] = (token, [want.reply] if want.reply is not None else [])
            self.tg.start_soon(self.read_file, ident, token, want, self.own.clone())

    async def miss(self, ident: str, want: Want) -> None:
        self.misses += 1
        self.probe.misses.inc()
        self.inflight[ident] = [want.reply] if want.reply is not None else []
        size = want.end - want.start
        write = None
        if self.admission.admits(ident, want) and await self.make_room(size):
            self.reserved[ident] = size
            self.reserved_total += size
            write = next(self.writes)
        self.source(Miss(ident, want, write))

    def source(self, miss: Miss) -> None:
        """Serve a miss from a window of its object: held, being fetched, or
        fetched now (module spans); a range too large for one, on its own."""
        want = miss.want
        data = self.windows.slice(want.key, want.start, want.end)
        window = self.windows.window_for(want.key, want.start, want.end)
        if data is not None:
            self.got(miss, data)
        elif not want.segment or window is None:
            self.gets += 1
            self.tg.start_soon(self.fetch, miss, self.own.clone())
        else:
            self.await_window(want.key, miss, window)

    def await_window(self, key: str, ask: Miss | Slice, window: tuple[int, int]) -> None:
        """Queue ``ask`` for a window of ``key``: the one under way, or ``window`` fetched now."""
        if self.windows.wait(key, ask):
            self.gets += 1
            self.windows.fetching(key, window)
            self.tg.start_soon(self.fetch_window, key, window, self.own.clone())
        else:
            self.joined += 1

    def got(self, miss: Miss, data: bytes, *, whole: bool = False) -> None:
        """The bytes of a miss, from a window: handed over now; cached by a
        helper only if they are the ``whole`` object. Ranges of a shared
        object are what a first, sequential read takes once; a file each cost
        2 ms on this disk (50,000 records over 1,000 partitions: 27 s cold
        with the cache, 6 s without). A reader coming back gets the window
        again with one GET."""
        if not whole or miss.write is None or len(data) != miss.want.end - miss.want.start:
            self.fetched(Fetched(miss.ident, data, None, None))
        else:
            self.tg.start_soon(self.deliver, miss, data, self.own.clone())

    async def window_fetched(self, msg: WindowFetched) -> None:
        asks = self.windows.arrived(msg.key)
        base, end = msg.window
        # An ask that joined a window which does not hold its range (planned
        # after the window started) is served afresh; one the window was asked
        # for is served from what came, even cut short (the object ended): its
        # checksums then say what is wrong. (Inline: 10,000 asks at 1,000 partitions.)
        misses: list[Miss] = []
        slices: list[Slice] = []
        outside: list[Miss | Slice] = []
        for ask in asks:
            if isinstance(ask, Miss):
                mine = base <= ask.want.start and ask.want.end <= end
                (misses if mine else outside).append(ask)
            elif base <= ask.start and ask.end <= end:
                slices.append(ask)
            else:
                outside.append(ask)
        if msg.data is None:
            assert msg.error is not None
            for miss in misses:
                self.fetched(Fetched(miss.ident, None, msg.error, None))
            for piece in slices:
                piece.reply.put(msg.error)
        else:
            data = msg.data
            taken = [(m.want.start, m.want.end) for m in misses]
            self.windows.keep(msg.key, base, data, taken + [(p.start, p.end) for p in slices])
            for piece in slices:
                piece.reply.put(data[piece.start - base : piece.end - base])
            for miss in misses:
                want = miss.want
                whole = base == 0 and (want.start, want.end) == (0, len(data))
                self.got(miss, data[want.start - base : want.end - base], whole=whole)
        for ask in outside:
            if isinstance(ask, Miss):
                self.source(ask)
            else:
                await self.want(Want(msg.key, ask.start, ask.end, ask.reply, False, True))

    async def forget(self, ident: str) -> None:
        """Drop the cached file of ``ident``, if any."""
        if ident in self.lru:
            self.total -= self.lru.pop(ident)
            self.probe.bytes.set(self.total)
            await anyio.to_thread.run_sync(self.path_of(ident).unlink, True)

    async def make_room(self, room: int) -> bool:
        """Evict least recently used files until ``room`` more bytes fit; False if they cannot.

        A file still being written is evicted once its write ends, so the
        directory never holds more than the budget, not even for a moment.
        """
        if room <= 0 or self.reserved_total + room > self.budget:
            return False
        while self.lru and self.total + self.reserved_total + room > self.budget:
            ident = next(iter(self.lru))
            if ident in self.writing:
                await self.writing[ident].done.wait()
            if self.lru.get(ident) is not None and next(iter(self.lru)) == ident:
                self.evictions += 1
                self.probe.evictions.inc()
                await self.forget(ident)
        return True

    # -- what the helper tasks report -----------------------------------------------

    def fetched(self, msg: Fetched) -> None:
        waiters = self.inflight.pop(msg.ident, [])
        size = self.reserved.pop(msg.ident, 0)
        self.reserved_total -= size
        if msg.write is not None and msg.data is not None:
            assert msg.ended is not None
            self.writing[msg.ident] = Writing(msg.write, msg.data, msg.ended)
            self.lru[msg.ident] = size
            self.total += size
            self.probe.bytes.set(self.total)
        answer: bytes | Exception
        if msg.data is not None:
            answer = msg.data
        else:
            assert msg.error is not None
            answer = msg.error
        for reply in waiters:
            reply.put(answer)
        if not waiters and msg.write is None and msg.data is not None:
            # A prefetch that the budget could not cache: kept in memory for
            # the read that follows it, instead of fetched twice.
            self.park(msg.ident, msg.data)

    def park(self, ident: str, data: bytes) -> None:
        self.parked[ident] = data
        while len(self.parked) > self.parked_limit:
            self.parked.popitem(last=False)

    async def read(self, msg: Read) -> None:
        current = self.reading.get(msg.ident)
        if current is None or current[0] != msg.token:
            return  # abandoned by a refresh
        waiters = self.reading.pop(msg.ident)[1]
        if msg.data is None:
            # The file went (evicted while it was read): fetch it again.
            for reply in waiters:
                await self.want(attrs.evolve(msg.want, reply=reply, refresh=True))
        elif waiters:
            for reply in waiters:
                reply.put(msg.data)
        else:
            self.park(msg.ident, msg.data)

    async def written(self, msg: Written) -> None:
        current = self.writing.get(msg.ident)
        if current is None or current.token != msg.write:
            return  # a later fetch of the same range is being written
        del self.writing[msg.ident]
        if msg.ident in self.lru and not msg.ok:
            self.total -= self.lru.pop(msg.ident)
            self.probe.bytes.set(self.total)
        for later in self.deferred.pop(msg.ident, []):
            await self.want(later)

    # -- helper tasks ------------------------------------------------------------------

    async def fetch_window(
        self, key: str, window: tuple[int, int], done: MemoryObjectSendStream[object]
    ) -> None:
        with done:
            try:
                data = await self.storage.get(key, *window)
            except Exception as exc:
                await done.send(WindowFetched(key, window, None, exc))
                return
            await done.send(WindowFetched(key, window, data, None))

    async def fetch(self, miss: Miss, done: MemoryObjectSendStream[object]) -> None:
        with done:
            want = miss.want
            try:
                data = await self.storage.get(want.key, want.start, want.end)
            except Exception as exc:
                await done.send(Fetched(miss.ident, None, exc, None))
                return
            await self._deliver(miss, data, done)

    async def deliver(self, miss: Miss, data: bytes, done: MemoryObjectSendStream[object]) -> None:
        with done:
            await self._deliver(miss, data, done)

    async def _deliver(self, miss: Miss, data: bytes, done: MemoryObjectSendStream[object]) -> None:
        ident, want, write = miss.ident, miss.want, miss.write
        if len(data) != want.end - want.start:
            write = None  # clipped at the object's end: not what the name says
        ended = anyio.Event()
        # The askers get the bytes first; the file is written while they
        # decode them.
        await done.send(Fetched(ident, data, None, write, ended))
        if write is not None:
            ok = True
            try:
                writer = functools.partial(write_file, self.path_of(ident), write, data)
                await anyio.to_thread.run_sync(writer)
            except OSError:
                # A full or failing disk costs the cache, not the read:
                # the bytes were handed over already.
                ok = False
            finally:
                ended.set()
            await done.send(Written(ident, write, ok))

    async def read_file(
        self, ident: str, token: int, want: Want, done: MemoryObjectSendStream[object]
    ) -> None:
        with done:
            try:
                data: bytes | None = await anyio.to_thread.run_sync(self.path_of(ident).read_bytes)
            except OSError:  # evicted meanwhile
                data = None
            await done.send(Read(ident, token, want, data))

    def close(self) -> None:
        """Tell every asker still waiting that no answer will come."""
        for waiters in (*self.inflight.values(), *(w for _, w in self.reading.values())):
            for reply in waiters:
                reply.drop()
        for ask in self.windows.waiting():
            if isinstance(ask, Slice):
                ask.reply.drop()


async def run_cache(
    storage: ObjectStore,
    directory: CacheDirectory | None,
    budget: int,
    *,
    parked_limit: int = 8,
    probe: CacheProbe | None = None,
    first_reads: bool = True,
    task_status: TaskStatus[CacheClient] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the cache actor until cancelled; hand a client to the starter.

    ``directory`` None (or a budget of 0) keeps nothing on disk. ``probe``:
    the metrics of its hits, misses, evictions and size. ``first_reads``:
    write whole segments read in order the first time too (cachework's
    Admission; open_consumer's default is False).
    ``parked_limit`` bounds the prefetched ranges held in memory for the
    reads that follow them: read ahead from their files, or fetched when the
    budget cannot cache them (the readers' read-ahead, in segments).
    """
    probe = probe or unread_metrics().cache()
    # 16: readers ask, and helper tasks report, while the actor may wait for
    # a write to end (make_room); a few queued messages keep them going.
    inbox_send, inbox = anyio.create_memory_object_stream[object](16)
    # The actor keeps a clone for its helpers' reports, so it runs until it
    # is cancelled when the consumer closes.
    own = inbox_send.clone()
    cache: _Cache | None = None
    try:
        async with anyio.create_task_group() as tg, own:
            admission = Admission(first_reads)
            cache = _Cache(storage, directory, budget, parked_limit, own, tg, probe, admission)
            task_status.started(CacheClient(inbox_send, probe))
            async for msg in inbox:
                await cache.handle(msg)
    finally:
        if cache is not None:
            cache.close()
        probe.close()
        drain(inbox)  # (before the inbox closes: a closed one gives nothing)
        inbox.close()
        inbox_send.close()
