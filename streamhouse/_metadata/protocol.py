"""The MetadataStore protocol and the values it trades in.

The metadata store holds the small, hot state: topics and their partitions
(high watermark, log start offset), the catalogue of committed segments, and
consumer groups' committed offsets. Every offset-assigning write is one
transaction. SQLite (``sqlite``) and PostgreSQL (``postgres``) implement
it, on one schema (``schema``), so nothing above this layer knows which one
runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from .._errors import InvalidArgumentError
from .._types import CleanupPolicy, TopicPartition
from .groups import GroupAssignment, HeartbeatRequest, MemberInfo, MemberRef

__all__ = [
    "CatalogueWatch",
    "CommittedOffset",
    "CompactionCheckpoint",
    "Garbage",
    "GroupOffset",
    "MaintenanceLease",
    "MetadataStore",
    "MonitoringSnapshot",
    "PartitionState",
    "PartitionSummary",
    "RetiredSegments",
    "SegmentInfo",
    "SegmentSpec",
    "TopicConfig",
    "TopicInfo",
]


def _seconds_or_none(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None and attribute.name != "delete_retention_seconds":
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and attribute.name == "retention_seconds")
    ):
        bound = "> 0" if attribute.name == "retention_seconds" else ">= 0"
        unlimited = "" if attribute.name == "delete_retention_seconds" else " (or None: unlimited)"
        raise InvalidArgumentError(
            f"{attribute.name} must be a finite number of seconds {bound}{unlimited}, not {value!r}"
        )


def _bytes_or_none(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidArgumentError(
            f"{attribute.name} must be an int of bytes >= 0 (or None: unlimited), not {value!r}"
        )


def _policy(value: CleanupPolicy | str) -> CleanupPolicy:
    return CleanupPolicy.parse(value)


@attrs.frozen
class TopicConfig:
    """A topic's maintenance settings (Kafka's topic configs of the same names).

    Attributes:
        retention_seconds: a segment whose newest record is older than this
            goes; None keeps every segment (no time limit).
        retention_bytes: the oldest segments of a partition go while it holds
            more than this; None: no size limit.
        cleanup_policy: "delete" or "compact" (:class:`CleanupPolicy`).
        delete_retention_seconds: how long a compacted topic keeps a
            tombstone (a record whose value is None) after it was written.

    Raises:
        InvalidArgumentError: a value out of range (the message names it).
    """

    retention_seconds: float | None = attrs.field(default=None, validator=_seconds_or_none)
    retention_bytes: int | None = attrs.field(default=None, validator=_bytes_or_none)
    cleanup_policy: CleanupPolicy = attrs.field(default=CleanupPolicy.DELETE, converter=_policy)
    delete_retention_seconds: float = attrs.field(default=86400.0, validator=_seconds_or_none)


@attrs.frozen
class TopicInfo:
    name: str
    partitions: int
    created_at: float
    config: TopicConfig = TopicConfig()


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
    """A committed segment: where its bytes are and which offsets it holds.

    It covers the offsets ``[base_offset, end_offset)``: ``record_count``
    records, at consecutive offsets unless compaction removed some (then
    ``end_offset - base_offset > record_count``, and the bytes carry the
    offsets, see docs/FORMAT.md). ``created_at`` is when its records were
    committed (seconds since the epoch).
    """

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
    end_offset: int = attrs.field(
        default=attrs.Factory(lambda s: s.base_offset + s.record_count, takes_self=True)
    )
    created_at: float = 0.0


@attrs.frozen
class CommittedOffset:
    """A group's committed offset for one partition (the next offset to consume)."""

    offset: int
    metadata: str = ""
    committed_at: float = 0.0


@attrs.frozen
class MaintenanceLease:
    """The right to maintain the log, held by one maintainer at a time.

    ``epoch`` grows with every new holder: each write maintenance makes is
    conditional on the lease still being this holder's at this epoch (a
    fence), and extends it by ``ttl`` seconds.
    """

    holder: str
    epoch: int
    ttl: float


@attrs.frozen
class RetiredSegments:
    """What retention removed from one partition's catalogue."""

    segments: int
    bytes: int
    log_start_offset: int


@attrs.frozen
class CompactionCheckpoint:
    """How far a partition is compacted.

    Segments starting at ``cleaned_offset`` or later have not been
    compacted yet; ``oldest_tombstone`` is when the oldest tombstone kept by
    the last compaction was committed (None: none kept), so that the next
    pass knows when one is due to go.
    """

    cleaned_offset: int = 0
    oldest_tombstone: float | None = None


@attrs.frozen
class Garbage:
    """An object no segment points into any more, past its grace: to delete
    (``size`` None: committed before the catalogue kept sizes)."""

    key: str
    size: int | None


@attrs.frozen
class PartitionSummary:
    """A partition's bounds and the bytes its segments hold (for monitoring)."""

    topic: str
    partition: int
    log_start_offset: int
    high_watermark: int
    bytes: int


@attrs.frozen
class GroupOffset:
    """A group's committed offset and the timestamp (ms) of its record, if one is stored.

    The timestamp is the catalogue's, not the record's: see ``monitoring.py``.
    """

    group_id: str
    topic: str
    partition: int
    offset: int
    timestamp: int | None


@attrs.frozen
class MonitoringSnapshot:
    """Every partition, every committed offset (of the groups asked), and group members.

    ``members``: the number of live members of each group that has any
    (sessions not run out by the database's clock).
    """

    partitions: list[PartitionSummary]
    offsets: list[GroupOffset]
    members: Mapping[str, int] = attrs.Factory(dict)


class CatalogueWatch(Protocol):
    """Wakes a reader when the catalogue of some topics may have changed.

    Made by ``MetadataStore.watch``. It keeps a cursor: a change that
    happens between two ``wait`` calls is not lost, the next ``wait``
    returns at once. Waking is a hint, never the data: the caller reads
    ``partition_states`` (or the segments) after ``wait`` returns, and a
    wait may return when nothing changed (at the first call, after the
    store lost and regained its listener, or at the timeout).
    """

    @property
    def pushed(self) -> bool:
        """True while changes arrive as notifications (PostgreSQL's LISTEN):
        ``wait(timeout)`` then sleeps until one comes, at no cost. False when
        ``wait`` has to look again and again (SQLite), where a caller that
        waits long should space its own looks out."""
        ...

    async def wait(self, timeout: float) -> bool:
        """Return once the watched topics may have new segments or bounds
        since the previous ``wait`` returned (the first call returns at
        once), or after ``timeout`` seconds.

        Returns:
            True when woken by a possible change, False at the timeout with
            nothing seen (``wait(0)`` is a cheap look: has anything moved?).

        Raises:
            InvalidArgumentError: ``timeout`` is negative or not finite.
            ClosedError: the store was closed.
        """
        ...


@runtime_checkable
class MetadataStore(Protocol):
    """Topics, the segment catalogue, partition bounds and committed offsets."""

    async def create_topic(
        self, name: str, partitions: int, config: TopicConfig | None = None
    ) -> TopicInfo:
        """Create a topic (default settings when ``config`` is None); raise
        TopicExistsError if the name is taken."""
        ...

    async def alter_topic(self, name: str, config: TopicConfig) -> TopicInfo:
        """Replace a topic's settings; raise TopicNotFoundError if there is none."""
        ...

    async def get_topic(self, name: str) -> TopicInfo:
        """Return the topic; raise TopicNotFoundError if there is none."""
        ...

    async def list_topics(self) -> list[TopicInfo]:
        """Every topic, by name."""
        ...

    async def delete_topic(self, name: str) -> None:
        """Delete the topic, its segment rows and its committed offsets; release its
        objects (maintenance deletes those no other topic uses, after its grace)."""
        ...

    async def commit_segments(
        self, object_key: str, segments: Sequence[SegmentSpec]
    ) -> list[SegmentInfo]:
        """Commit every segment of one object in one transaction.

        Each segment gets its partition's high watermark as its base offset,
        which then moves past it. Committing an object key that is already
        committed changes nothing and returns the offsets assigned then
        (MetadataError if maintenance has since removed or moved some of
        them: their offsets can no longer be told).
        """
        ...

    async def list_segments(
        self, topic: str, partition: int, from_offset: int = 0, limit: int = 1000
    ) -> list[SegmentInfo]:
        """Segments holding ``from_offset`` or later, in offset order."""
        ...

    async def list_segments_from(
        self, topic: str, starts: Mapping[int, int], limit: int = 16
    ) -> dict[int, list[SegmentInfo]]:
        """For each partition ``p`` of ``starts``, what ``list_segments(topic,
        p, starts[p], limit)`` returns, in one query (a consumer of 1,000
        partitions looks its readers' segments up together)."""
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
        self,
        group_id: str,
        offsets: Mapping[TopicPartition, int],
        metadata: str = "",
        *,
        member: MemberRef | None = None,
        if_empty: bool = False,
    ) -> None:
        """Store a group's offsets, all in one transaction.

        With ``member``, only if that member is live at its epoch and owns
        every partition of ``offsets`` (else CommitFailedError, and nothing
        is written); without, unconditionally (manual assignment), or with
        ``if_empty`` only while the group has no live member (else
        GroupNotEmptyError, and nothing is written: Admin.reset_offsets).
        """
        ...

    async def fetch_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, CommittedOffset]:
        """A group's committed offsets (all, or those of ``partitions``)."""
        ...

    async def list_groups(self) -> list[str]:
        """Every group with a committed offset, by name."""
        ...

    async def delete_group(self, group_id: str, *, if_empty: bool = False) -> None:
        """Forget every offset the group committed, and its members; with
        ``if_empty``, only while it has no live member (else GroupNotEmptyError)."""
        ...

    # -- group membership (see streamhouse/_metadata/groups.py) -------------

    async def heartbeat(self, group_id: str, request: HeartbeatRequest) -> GroupAssignment:
        """Join (epoch 0) or stay in the group, in one transaction timed by the
        database's clock: expire dead members, release what the member gave
        up, rebalance when membership or partitions changed, and answer what
        the member owns and must give up (or that it is fenced)."""
        ...

    async def leave_group(self, group_id: str, member: MemberRef) -> None:
        """Leave at once (a static member keeps its partitions until its
        session runs out)."""
        ...

    async def describe_group_members(self, group_id: str) -> list[MemberInfo]:
        """The group's live members and what each owns."""
        ...

    async def monitoring_snapshot(self, groups: Sequence[str] | None = None) -> MonitoringSnapshot:
        """Every partition's bounds and bytes, and the committed offsets of ``groups``
        (all when None) with their records' timestamps, in ONE query: what the
        exporter serves (see ``monitoring.py``)."""
        ...

    # -- maintenance (see streamhouse/_maintenance) ------------------------
    # Every call that changes the catalogue takes the lease, and raises
    # LeaseLostError, changing nothing, unless the lease is still the
    # caller's; it extends the lease by its ttl.

    async def acquire_lease(self, holder: str, ttl: float) -> MaintenanceLease | None:
        """Take the maintenance lease for ``ttl`` seconds, with a new epoch;
        None while another holder's lease has not expired."""
        ...

    async def renew_lease(self, lease: MaintenanceLease) -> None:
        """Extend the lease by its ttl; LeaseLostError if it is no longer ours."""
        ...

    async def release_lease(self, lease: MaintenanceLease) -> None:
        """Give the lease up (nothing happens if it is no longer ours)."""
        ...

    async def retire_segments(
        self, lease: MaintenanceLease, topic: str, partition: int, log_start: int
    ) -> RetiredSegments:
        """In one transaction: move the partition's log start up to ``log_start``
        (never down, never past the high watermark), remove the segments that
        end at or below it, and release their objects."""
        ...

    async def replace_segments(
        self,
        lease: MaintenanceLease,
        object_key: str | None,
        object_size: int,
        old: Sequence[SegmentInfo],
        new: Sequence[SegmentInfo],
    ) -> bool:
        """In one transaction: remove ``old``, add ``new`` (all of whose bytes
        are in ``object_key``, uploaded already; None when ``new`` is empty),
        commit the object and release the objects of ``old``.

        Returns False, changing nothing, if some segment of ``old`` is no
        longer in the catalogue as given (its topic was deleted); True if it
        is done, or was done by an earlier call whose answer was lost.
        """
        ...

    async def compaction_checkpoints(self, topic: str) -> dict[int, CompactionCheckpoint]:
        """Every partition's compaction checkpoint (partitions never compacted
        have the default one)."""
        ...

    async def set_compaction_checkpoint(
        self, lease: MaintenanceLease, topic: str, partition: int, checkpoint: CompactionCheckpoint
    ) -> None:
        """Record how far a partition is compacted."""
        ...

    async def claim_garbage(
        self, lease: MaintenanceLease, grace: float, limit: int, forget_after: float
    ) -> list[Garbage]:
        """Objects to delete from the object store, at most ``limit``, claimed
        for this lease's epoch: those released more than ``grace`` seconds ago
        that no segment points into, and those an earlier maintainer claimed
        and never confirmed deleted (it was killed mid-pass). Objects released
        but still pointed into are unmarked (the last segment to go releases
        them again). Rows of objects deleted more than ``forget_after`` seconds
        ago are dropped."""
        ...

    async def orphan_sweep_mark(self) -> float:
        """Time (0: never) before which an orphan sweep examined every object key."""
        ...

    async def advance_orphan_sweep_mark(self, to: float) -> None:
        """Raise the mark to ``to`` (never lower it)."""
        ...

    async def confirm_deleted(self, keys: Sequence[str]) -> None:
        """Record that these claimed objects are gone from the object store (not
        fenced: it states a fact, whoever holds the lease now)."""
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
