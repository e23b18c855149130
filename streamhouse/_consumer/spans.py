"""Shared reads of packed objects: one GET serves the readers of many partitions.

A producer's flush writes the segments of every partition it holds into one
object (docs/FORMAT.md), so a consumer of many partitions needs a range of
the same object for each of them. Fetched range by range, that is one GET
per partition per flush: 9,999 GETs for 10 flushes to 1,000 partitions,
and S3 bills requests, not bytes read in the same region. Instead the cache
actor fetches a *window* of the object once, from its start up to
``WINDOW_BYTES`` (S3 clips the range at the object's end: a flush of up to
16 MiB, the default batches are 4 MiB, is one GET), and serves every range
inside it from memory, keeping the window while other ranges of it may be
asked for.

Which part of the object: the lookups actor answers the segment lookups of
all the readers asking at once, so it knows which segments of each object
this consumer is about to read; it tells the cache their *span* (from the
first one's start to the last one's end, a plan) before it answers the
readers. The window of an object is its planned span when the span holds
the range asked and fits a window; otherwise, from the object's start.
Without plans a consumer reading a tenth of the partitions packed in an
object, one after another (as a group's assignor gives them: a joining
member takes the last partitions of the others), downloaded the whole
object, ten times its share; with them, about its share (measured on 10
flushes to 1,000 partitions: 13.2 MB for any part of them before, docs/
PERFORMANCE.md for after). Partitions spread across the object (every
tenth) still take the whole of it: S3 answers one range a GET. A range
asked while a window of its object is under way waits for it; if that
window does not hold it, it is fetched afresh once it arrives (it was
planned after the window started). A range larger than a window is
fetched on its own. Memory: the windows held are bounded (``_HELD_BYTES``),
beside those being fetched (one per object in flight), and so are the plans
remembered (``_PLANNED``; one forgotten costs bytes, never a wrong one).

"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

__all__ = ["WINDOW_BYTES", "Windows"]

Ask = TypeVar("Ask")

# A window is at most this many bytes: a whole flush at the producer's
# default batch size (4 MiB) and well beyond.
WINDOW_BYTES = 16 << 20
# Bytes of windows held in memory beyond the asks they were fetched for.
# Readers read ahead two segments and polls share records fairly, but
# partitions do not move at one pace: a reader that falls behind asks for
# a window the others left long ago. Holding 4 windows, 1,000 partitions
# of 10 flushes (1.3 MB objects) took 3.8 GETs an object on a loaded
# machine; 64 MiB held them all (1 GET an object). A window evicted too
# early costs a GET, never a wrong byte.
_HELD_BYTES = 64 << 20
# Objects whose planned span is remembered (about 20 bytes each and the key).
_PLANNED = 1 << 14


def window_of(start: int, end: int) -> tuple[int, int] | None:
    """The window to fetch for ``[start, end)`` without a plan; None: fetch the range alone."""
    if end <= WINDOW_BYTES:
        return 0, WINDOW_BYTES
    return None


class Windows(Generic[Ask]):
    """Object windows in memory, the asks waiting for windows being fetched,
    and the plans that say which part of an object to fetch."""

    def __init__(self, held_bytes: int = _HELD_BYTES, planned: int = _PLANNED) -> None:
        self._held_bytes = held_bytes
        self._bytes = 0
        # key -> (where the window starts in the object, its bytes)
        self._windows: collections.OrderedDict[str, tuple[int, bytes]] = collections.OrderedDict()
        self._waiting: dict[str, list[Ask]] = {}  # key -> asks, while its window is fetched
        self._planned = planned
        self._plans: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._spanned: collections.OrderedDict[str, None] = collections.OrderedDict()

    def plan(self, spans: Mapping[str, tuple[int, int]]) -> None:
        """Remember the span of each object that the readers' segments take
        (the lookups actor's answer); spans of one object not fetched yet join."""
        for key, (start, end) in spans.items():
            if key in self._plans:
                was_start, was_end = self._plans.pop(key)
                start, end = min(start, was_start), max(end, was_end)
            self._plans[key] = (start, end)
        while len(self._plans) > self._planned:
            self._plans.popitem(last=False)

    def window_for(self, key: str, start: int, end: int) -> tuple[int, int] | None:
        """The window to fetch for ``[start, end)``: the object's planned span
        if it holds the range and no span of the object was fetched before,
        else ``window_of``. None: fetch the range alone."""
        planned = self._plans.get(key)
        if (
            planned is not None
            and key not in self._spanned
            and planned[0] <= start
            and end <= planned[1]
            and planned[1] - planned[0] <= WINDOW_BYTES
        ):
            return planned
        return window_of(start, end)

    def fetching(self, key: str, window: tuple[int, int]) -> None:
        """``window`` of ``key`` is being fetched: the object's plan is spent,
        and if that window is a planned span, the next one is from its start.

        A consumer whose partitions change (a group's hand-overs) asks for
        other parts of an object it read part of; a span for each cost 9
        GETs an object and more bytes than the whole object, in a group of
        4 starting at once (29.5 MB of 13.2). Two GETs at most, a span and
        the whole, bound it.
        """
        self._plans.pop(key, None)
        if window != window_of(*window):
            self._spanned[key] = None
            while len(self._spanned) > self._planned:
                self._spanned.popitem(last=False)

    def slice(self, key: str, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` of ``key`` from a window held; None if not held."""
        held = self._windows.get(key)
        if held is None:
            return None
        base, data = held
        if start < base or end > base + len(data):
            return None
        self._windows.move_to_end(key)
        # (A window from the object's start is not copied: bytes[:] is itself.)
        return data[start - base : end - base]

    def wait(self, key: str, ask: Ask) -> bool:
        """Queue ``ask`` for the window of ``key``; True if its fetch must start."""
        asks = self._waiting.get(key)
        if asks is None:
            self._waiting[key] = [ask]
            return True
        asks.append(ask)
        return False

    def waiting(self) -> list[Ask]:
        """Every ask waiting for a window."""
        return [ask for asks in self._waiting.values() for ask in asks]

    def arrived(self, key: str) -> list[Ask]:
        """The asks that waited for the window of ``key`` (its fetch ended)."""
        return self._waiting.pop(key, [])

    def keep(self, key: str, base: int, data: bytes, taken: Iterable[tuple[int, int]]) -> None:
        """Hold the window of ``key`` (from ``base``) unless the asks it came for took all of it."""
        if sum(end - start for start, end in set(taken)) >= len(data):
            return  # an object of one segment (one partition): nothing left to share
        self.drop(key)
        self._windows[key] = (base, data)
        self._bytes += len(data)
        while self._bytes > self._held_bytes and len(self._windows) > 1:
            self._bytes -= len(self._windows.popitem(last=False)[1][1])

    def drop(self, key: str) -> None:
        """Forget the window of ``key`` (its bytes may be the bad ones)."""
        held = self._windows.pop(key, None)
        if held is not None:
            self._bytes -= len(held[1])
