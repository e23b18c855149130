"""The cache actor's messages: what it is asked, what its helper tasks
report, and its file writes.

Kept apart so that the actor's module (cache) reads in one sitting.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from .._metrics import CacheProbe
from .messages import Reply, Request

T = TypeVar("T")

__all__ = [
    "Admission",
    "CacheClient",
    "CacheStats",
    "Fetch",
    "FetchMany",
    "Prefetch",
    "Stats",
    "Fetched",
    "Gathered",
    "Miss",
    "Read",
    "Slice",
    "Want",
    "WindowFetched",
    "Writing",
    "Written",
    "ident_of",
    "write_file",
]


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
class Fetch(Request[bytes]):
    """Bytes ``[start, end)`` of ``key``; ``refresh``: not from the cached copy;
    ``segment``: a whole segment, perhaps of an object that packs several
    (fetched with the others, module spans), not a block read on purpose."""

    key: str
    start: int
    end: int
    refresh: bool = False
    segment: bool = False


@attrs.frozen
class Prefetch:
    """Bring segment ``[start, end)`` of ``key`` near: a Fetch of it follows soon (one-way)."""

    key: str
    start: int
    end: int


@attrs.frozen
class Stats(Request[CacheStats]):
    pass


@attrs.frozen
class FetchMany(Request[list[bytes]]):
    """Whole segments ``(key, start, end)``, answered together (one wake-up
    of the asker for all of them), or with the first error of any."""

    ranges: Sequence[tuple[str, int, int]]


@attrs.frozen
class Slice:
    """A range of a FetchMany waiting for the window of its object."""

    reply: Reply[bytes]
    start: int
    end: int


class Gathered:
    """The answers of a FetchMany, gathered: one part reply per range."""

    __slots__ = ("datas", "left", "reply")

    def __init__(self, reply: Reply[list[bytes]], count: int) -> None:
        self.reply = reply
        self.left = count
        self.datas: list[bytes] = [b""] * count

    def parts(self) -> list[Reply[bytes]]:
        return [_Part(self, i) for i in range(self.left)]


class _Part(Reply[bytes]):
    """The reply of one range of a FetchMany, as the actor's waiter lists hold it."""

    __slots__ = ("_gathered", "_i")

    def __init__(self, gathered: Gathered, i: int) -> None:  # (no Event of its own)
        self._gathered = gathered
        self._i = i

    @property
    def wanted(self) -> bool:
        return self._gathered.reply.wanted

    def put(self, answer: bytes | Exception) -> bool:
        g = self._gathered
        if isinstance(answer, Exception):
            return g.reply.put(answer)  # the first error is the answer
        g.datas[self._i] = answer
        g.left -= 1
        return g.reply.put(g.datas) if not g.left else g.reply.wanted

    def drop(self) -> None:
        self._gathered.reply.drop()


@attrs.frozen
class Want:
    """A Fetch or a Prefetch (``reply`` None), as the actor handles both."""

    key: str
    start: int
    end: int
    reply: Reply[bytes] | None
    refresh: bool
    segment: bool  # a whole segment: served from a window of its object


@attrs.frozen
class Fetched:
    ident: str
    data: bytes | None
    error: Exception | None
    write: int | None  # the write that will cache the bytes, if any
    ended: anyio.Event | None = None  # set when that write has ended, either way


@attrs.frozen
class Miss:
    """A range to fetch (and to cache if ``write`` is not None)."""

    ident: str
    want: Want
    write: int | None


@attrs.frozen
class WindowFetched:
    key: str
    window: tuple[int, int]  # the range asked for (the object may end before its end)
    data: bytes | None
    error: Exception | None


@attrs.frozen
class Plan:
    """The span of each object that segments the readers are about to read
    take (module spans; one-way, from the lookups actor)."""

    spans: Mapping[str, tuple[int, int]]


@attrs.frozen
class Read:
    ident: str
    token: int
    want: Want
    data: bytes | None  # None: the file was gone


@attrs.frozen
class Written:
    ident: str
    write: int
    ok: bool


@attrs.frozen
class Writing:
    token: int
    data: bytes
    done: anyio.Event


class CacheClient:
    """The readers' (and the facade's) handle on the cache actor: a clone of its inbox."""

    def __init__(self, inbox: MemoryObjectSendStream[object], probe: CacheProbe) -> None:
        self._inbox = inbox
        self._latency = probe.fetch_latency

    async def get(
        self, key: str, start: int, end: int, *, refresh: bool = False, segment: bool = False
    ) -> bytes:
        """The bytes ``[start, end)`` of ``key``: from the cache, or fetched and cached."""
        reply = Reply[bytes]()
        return await self._ask(Fetch(reply, key, start, end, refresh, segment), reply)

    async def get_many(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes]:
        """The bytes of each whole segment ``(key, start, end)``, in one ask:
        the cache serves them in one round (one GET per window it needs)."""
        reply = Reply[list[bytes]]()
        return await self._ask(FetchMany(reply, ranges), reply)

    async def _ask(self, request: object, reply: Reply[T]) -> T:
        """Send ``request`` and wait for its ``reply``, timed (the fetch latency)."""
        started = time.perf_counter()
        await self._inbox.send(request)
        try:
            answer = await reply.wait()
        finally:
            reply.abandon()
        self._latency.observe(time.perf_counter() - started)
        return answer

    async def prefetch(self, key: str, start: int, end: int) -> None:
        await self._inbox.send(Prefetch(key, start, end))

    async def plan(self, spans: Mapping[str, tuple[int, int]]) -> None:
        """Say which span of each object the readers are about to read (module spans)."""
        await self._inbox.send(Plan(spans))

    async def stats(self) -> CacheStats:
        reply = Reply[CacheStats]()
        await self._inbox.send(Stats(reply))
        try:
            return await reply.wait()
        finally:
            reply.abandon()


class Admission:
    """Which missed ranges the cache writes to its directory.

    A whole segment read in order (``Want.segment``) is written only when it
    is missed a second time: a sequential first read does not come back to
    what it read, and writing it cost a cold read of 174 MB from S3 about
    0.9 s of CPU on this 2-core machine (1.9 s against 1.2 s without the
    writes), beside the object store's own. A second miss (a seek back, a
    replay, a partition that came back) is written; so is every range read
    on purpose (an index, or the blocks after a seek into a segment), and
    every range with ``first_reads`` (open_consumer's ``cache_first_reads``).
    The misses remembered are bounded (``remembered``, least recent out):
    one forgotten costs a later write, never a wrong byte.
    """

    def __init__(self, first_reads: bool, remembered: int = 1 << 16) -> None:
        self.first_reads = first_reads
        self.remembered = remembered
        self.once: collections.OrderedDict[str, None] = collections.OrderedDict()

    def admits(self, ident: str, want: Want) -> bool:
        if self.first_reads or not want.segment or want.refresh:
            return True
        if ident in self.once:
            del self.once[ident]
            return True
        self.once[ident] = None
        if len(self.once) > self.remembered:
            self.once.popitem(last=False)
        return False


def write_file(path: Path, token: int, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.stem}-{token}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=4096)
def _digest(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:32]


def ident_of(key: str, start: int, end: int) -> str:
    """The name of the cache file of ``[start, end)`` of ``key``."""
    return f"{_digest(key)}-{start}-{end}"
