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

The cost: a consumer that reads few of the partitions packed in an object
downloads bytes it does not use (a group member with a tenth of the
partitions, ten times its share). GETs on S3 cost $0.0004 per 1,000 and
transfer inside a region nothing; at 1,000 partitions the range-by-range
reads were also 4-8x slower (one request's latency each). A range larger
than a window is fetched on its own. Memory: the windows held are bounded
(``_HELD_BYTES``), beside those being fetched (one per object in flight).

:class:`Windows` is the cache actor's (one owner): the windows held, least
recently used first, and the asks waiting for a window under way.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

__all__ = ["WINDOW_BYTES", "Windows"]

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


def window_of(start: int, end: int) -> tuple[int, int] | None:
    """The window to fetch for ``[start, end)``; None: fetch the range alone."""
    if end <= WINDOW_BYTES:
        return 0, WINDOW_BYTES
    return None


class Windows:
    """Object windows in memory, and the asks waiting for windows being fetched."""

    def __init__(self, held_bytes: int = _HELD_BYTES) -> None:
        self._held_bytes = held_bytes
        self._bytes = 0
        self._windows: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._waiting: dict[str, list[object]] = {}  # key -> asks, while its window is fetched

    def slice(self, key: str, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` of ``key`` from a window held; None if not held."""
        data = self._windows.get(key)
        if data is None or end > len(data):
            return None
        self._windows.move_to_end(key)
        return data[start:end]  # (the whole window is not copied: bytes[:] is itself)

    def wait(self, key: str, ask: object) -> bool:
        """Queue ``ask`` for the window of ``key``; True if its fetch must start."""
        asks = self._waiting.get(key)
        if asks is None:
            self._waiting[key] = [ask]
            return True
        asks.append(ask)
        return False

    def waiting(self) -> list[object]:
        """Every ask waiting for a window."""
        return [ask for asks in self._waiting.values() for ask in asks]

    def arrived(self, key: str) -> list[object]:
        """The asks that waited for the window of ``key`` (its fetch ended)."""
        return self._waiting.pop(key, [])

    def keep(self, key: str, data: bytes, taken: Iterable[tuple[int, int]]) -> None:
        """Hold the window of ``key`` unless the asks it came for took all of it."""
        if sum(end - start for start, end in set(taken)) >= len(data):
            return  # an object of one segment (one partition): nothing left to share
        self.drop(key)
        self._windows[key] = data
        self._bytes += len(data)
        while self._bytes > self._held_bytes and len(self._windows) > 1:
            self._bytes -= len(self._windows.popitem(last=False)[1])

    def drop(self, key: str) -> None:
        """Forget the window of ``key`` (its bytes may be the bad ones)."""
        self._bytes -= len(self._windows.pop(key, b""))
