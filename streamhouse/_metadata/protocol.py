"""The MetadataStore protocol and the values it trades in.

The metadata store holds the small, hot state: topics and their partitions
(high watermark, log start offset), the catalogue of committed segments, and
consumer groups' committed offsets. Every offset-assigning write is one
transaction. SQLite (``sqlite``) and PostgreSQL (``postgres``) implement
it, on one schema (``schema``), so nothing above this layer knows which one
runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

from .._types import TopicPartition

__all__ = [
    "CatalogueWatch",
    "CommittedOffset",
    "MetadataStore",
    "PartitionState",
    "SegmentInfo",
    "SegmentSpec",
    "TopicInfo",
]


@attrs.frozen
class TopicInfo:
    name: str
    partitions: int
    created_at: float


@attrs.frozen
class PartitionState:
    """A partition's bounds: offsets ``[log_start_offset, high_watermark)`` exist."""

    topic: str
    partition: int
    log_start_offset: int
    high_watermark: int


@attrs.frozen
class SegmentSpec:
    """A segment uploaded inside an object, before its offsets are assigned."""

    topic: str
    partition: int
    record_count: int
    position: int
    length: int
    index_length: int
    min_timestamp: int
    max_timestamp: int


@attrs.frozen
class SegmentInfo:
    """A committed segment: where its bytes are and which offsets it holds."""

    topic: str
    partition: int
    base_offset: int
    record_count: int
    object_key: str
    position: int
    length: int
    index_length: int
    min_timestamp: int
    max_timestamp: int

    @property
    def end_offset(self) -> int:
        """One past the last offset in the segment."""
        return self.base_offset + self.record_count


@attrs.frozen
class CommittedOffset:
    """A group's committed offset for one partition (the next offset to consume)."""

    offset: int
    metadata: str = ""
    committed_at: float = 0.0


class CatalogueWatch(Protocol):
    """Wakes a reader when the catalogue of some topics may have changed.

    Made by ``MetadataStore.watch``. It keeps a cursor: a change that
    happens between two ``wait`` calls is not lost, the next ``wait``
    returns at once. Waking is a hint, never the data: the caller reads
    ``partition_states`` (or the segments) after ``wait`` returns, and a
    wait may return when nothing changed (at the first call, after the
    store lost and regained its listener, or at the timeout).
    """

    async def wait(self, timeout: float) -> None:
        """Return once the watched topics may have new segments or bounds
        since the previous ``wait`` returned (the first call returns at
        once), or after ``timeout`` seconds.

        Raises:
            InvalidArgumentError: ``timeout`` is negative or not finite.
            ClosedError: the store was closed.
        """
        ...


@runtime_checkable
class MetadataStore(Protocol):
    """Topics, the segment catalogue, partition bounds and committed offsets."""

    async def create_topic(self, name: str, partitions: int) -> TopicInfo:
        """Create a topic; raise TopicExistsError if the name is taken."""
        ...

    async def get_topic(self, name: str) -> TopicInfo:
        """Return the topic; raise TopicNotFoundError if there is none."""
        ...

    async def list_topics(self) -> list[TopicInfo]:
        """Every topic, by name."""
        ...

    async def delete_topic(self, name: str) -> None:
        """Delete the topic, its segment rows and its committed offsets."""
        ...

    async def commit_segments(
        self, object_key: str, segments: Sequence[SegmentSpec]
    ) -> list[SegmentInfo]:
        """Commit every segment of one object in one transaction.

        Each segment gets its partition's high watermark as its base offset,
        which then moves past it. Committing an object key that is already
        committed changes nothing and returns the offsets assigned then.
        """
        ...

    async def find_segment(self, topic: str, partition: int, offset: int) -> SegmentInfo | None:
        """The segment holding ``offset``, or None (O(log n))."""
        ...

    async def list_segments(
        self, topic: str, partition: int, from_offset: int = 0, limit: int = 1000
    ) -> list[SegmentInfo]:
        """Segments holding ``from_offset`` or later, in offset order."""
        ...

    async def partition_states(self, topics: Sequence[str]) -> list[PartitionState]:
        """Bounds of every partition of ``topics``, in one query."""
        ...

    async def segment_stats(self, topic: str) -> dict[int, tuple[int, int]]:
        """Per partition with segments: (segment count, total bytes)."""
        ...

    async def committed_object_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` belong to committed objects."""
        ...

    async def commit_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, int], metadata: str = ""
    ) -> None:
        """Store a group's offsets, all in one transaction."""
        ...

    async def fetch_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, CommittedOffset]:
        """A group's committed offsets (all, or those of ``partitions``)."""
        ...

    async def list_groups(self) -> list[str]:
        """Every group with a committed offset, by name."""
        ...

    async def delete_group(self, group_id: str) -> None:
        """Forget every offset the group committed."""
        ...

    def watch(self, topics: Sequence[str]) -> CatalogueWatch:
        """A watch on the catalogue of ``topics`` (see CatalogueWatch).

        How it learns of changes is the store's business: SQLite polls a
        change counter locally (cheap, no query of the tables); PostgreSQL
        listens for the NOTIFY every segment commit sends in its
        transaction, and polls while its listener connection is down.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...
