"""open_admin(): topics and their settings, consumer groups, offsets, lag, maintenance."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from types import EllipsisType
from typing import Any

import attrs

from ._codec import Codec
from ._config import open_stores
from ._errors import InvalidArgumentError
from ._maintenance import MaintenanceReport, Settings, check_grace, delete_orphans, maintain
from ._metadata.groups import not_empty
from ._metadata.protocol import MetadataStore, PartitionState, TopicConfig, TopicInfo
from ._names import check_group_id, check_topic_name
from ._storage.protocol import ObjectStore
from ._types import CleanupPolicy, OffsetReset, TopicPartition

__all__ = [
    "Admin",
    "GroupMember",
    "GroupPartitionLag",
    "MaintenanceReport",
    "PartitionDescription",
    "TopicDescription",
    "open_admin",
]


@attrs.frozen
class PartitionDescription:
    partition: int
    log_start_offset: int
    high_watermark: int
    segments: int
    bytes: int


@attrs.frozen
class TopicDescription:
    """A topic: its partitions and its maintenance settings (None: unlimited)."""

    name: str
    created_at: float
    partitions: tuple[PartitionDescription, ...]
    retention_seconds: float | None = None
    retention_bytes: int | None = None
    cleanup_policy: CleanupPolicy = CleanupPolicy.DELETE
    delete_retention_seconds: float = 86400.0


@attrs.frozen
class GroupPartitionLag:
    """A group's progress on one partition: lag = high watermark - committed.

    ``member_id``: the member that owns the partition now (None: no member).
    """

    topic: str
    partition: int
    committed: int
    high_watermark: int
    lag: int
    member_id: str | None = None


@attrs.frozen
class GroupMember:
    """A live member of a consumer group.

    Attributes:
        member_id: the member's id (a new one each time a consumer opens).
        instance_id: its ``group_instance_id`` (a static member), or None.
        epoch: the group epoch it joined at; its commits are checked against it.
        assignment: the partitions it owns now.
        last_heartbeat: when its last heartbeat came, by the metadata
            database's clock (seconds since the epoch).
    """

    member_id: str
    instance_id: str | None
    epoch: int
    assignment: frozenset[TopicPartition]
    last_heartbeat: float


class Admin:
    """Manages topics and groups; made by :func:`open_admin`."""

    def __init__(self, storage: ObjectStore, metadata: MetadataStore) -> None:
        self._storage = storage
        self._metadata = metadata

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        retention_seconds: float | None = None,
        retention_bytes: int | None = None,
        cleanup_policy: CleanupPolicy | str = "delete",
        delete_retention_seconds: float = 86400.0,
    ) -> TopicInfo:
        """Create a topic, once the object store is known to be usable.

        Args:
            name: letters, digits, ``.``, ``_``, ``-`` (Kafka's rules).
            partitions: how many.
            retention_seconds: maintenance removes a segment once its newest
                record is older than this; None (the default) keeps records
                however old.
            retention_bytes: maintenance removes a partition's oldest
                segments while it holds more than this; None: no limit.
            cleanup_policy: "delete", or "compact": maintenance then keeps
                only the newest record of each key, and the producer refuses
                records without a key. Retention applies under both.
            delete_retention_seconds: how long a compacted topic keeps a
                tombstone (a record whose value is None).

        Raises:
            StorageError: the object store cannot be used (a bucket that does
                not exist, an unreachable endpoint, a directory that cannot be
                written); nothing was recorded.
            InvalidArgumentError: a setting is out of range (the message names it).
            TopicExistsError, InvalidNameError: as the metadata store says.
        """
        config = TopicConfig(
            retention_seconds, retention_bytes, cleanup_policy, delete_retention_seconds
        )
        await self._storage.check()
        return await self._metadata.create_topic(name, partitions, config)

    async def alter_topic(
        self,
        name: str,
        *,
        retention_seconds: float | EllipsisType | None = ...,
        retention_bytes: int | EllipsisType | None = ...,
        cleanup_policy: CleanupPolicy | str | EllipsisType = ...,
        delete_retention_seconds: float | EllipsisType = ...,
    ) -> TopicInfo:
        """Change some of a topic's settings (those not given stay as they are).

        The settings are those of :meth:`create_topic`; None means unlimited.
        They take effect at the next maintenance pass; producers learn of a
        change to the cleanup policy within half a minute (they cache it).

        Raises:
            TopicNotFoundError: there is no such topic.
            InvalidArgumentError: a setting is out of range.
        """
        check_topic_name(name)
        current = (await self._metadata.get_topic(name)).config
        changes: dict[str, Any] = {
            field: value
            for field, value in (
                ("retention_seconds", retention_seconds),
                ("retention_bytes", retention_bytes),
                ("cleanup_policy", cleanup_policy),
                ("delete_retention_seconds", delete_retention_seconds),
            )
            if value is not ...
        }
        return await self._metadata.alter_topic(name, attrs.evolve(current, **changes))

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its groups' offsets.

        Its objects go at the next maintenance pass after the grace period
        (those no other topic's segments share).
        """
        await self._metadata.delete_topic(name)

    async def list_topics(self) -> list[TopicInfo]:
        return await self._metadata.list_topics()

    async def describe_topic(self, name: str) -> TopicDescription:
        """A topic's settings, and its partitions: bounds, segment count and bytes."""
        info = await self._metadata.get_topic(name)
        states = await self._metadata.partition_states([name])
        stats = await self._metadata.segment_stats(name)
        return TopicDescription(
            info.name,
            info.created_at,
            tuple(
                PartitionDescription(
                    s.partition,
                    s.log_start_offset,
                    s.high_watermark,
                    *stats.get(s.partition, (0, 0)),
                )
                for s in states
            ),
            info.config.retention_seconds,
            info.config.retention_bytes,
            info.config.cleanup_policy,
            info.config.delete_retention_seconds,
        )

    async def list_groups(self) -> list[str]:
        return await self._metadata.list_groups()

    async def describe_group_members(self, group_id: str) -> list[GroupMember]:
        """The group's live members, by member id, with the partitions each owns."""
        check_group_id(group_id)
        return [
            GroupMember(m.member_id, m.instance_id, m.epoch, m.assignment, m.last_heartbeat)
            for m in await self._metadata.describe_group_members(group_id)
        ]

    async def describe_group(self, group_id: str) -> list[GroupPartitionLag]:
        """One row per partition the group has committed offsets for, with its
        lag and the member that owns it now."""
        committed = await self._metadata.fetch_offsets(group_id)
        owners = {
            tp: m.member_id
            for m in await self._metadata.describe_group_members(group_id)
            for tp in m.assignment
        }
        topics = sorted({tp.topic for tp in committed})
        states = {
            TopicPartition(s.topic, s.partition): s
            for s in await self._metadata.partition_states(topics)
        }
        rows = []
        for tp in sorted(committed):
            state = states.get(tp)
            if state is None:  # the topic was deleted since
                continue
            offset = committed[tp].offset
            rows.append(
                GroupPartitionLag(
                    tp.topic,
                    tp.partition,
                    offset,
                    state.high_watermark,
                    max(0, state.high_watermark - max(offset, state.log_start_offset)),
                    owners.get(tp),
                )
            )
        return rows

    async def reset_offsets(
        self,
        group_id: str,
        topic: str,
        to: OffsetReset | str | int,
        *,
        partitions: Sequence[int] | None = None,
    ) -> dict[TopicPartition, int]:
        """Set a group's offsets on a topic to earliest, latest or an offset.

        Returns the offsets written. Only while no member of the group runs:
        a running one would commit its own positions over them.

        Raises:
            GroupNotEmptyError: the group has live members.
            InvalidArgumentError: the offset is outside some partition's
                [log start, high watermark].
        """
        check_group_id(group_id)
        check_topic_name(topic)
        states: list[PartitionState] = await self._metadata.partition_states([topic])
        if not states:
            await self._metadata.get_topic(topic)  # raises TopicNotFoundError
        if partitions is not None:
            wanted = set(partitions)
            missing = wanted - {s.partition for s in states}
            if missing:
                raise InvalidArgumentError(f"topic {topic!r} has no partition {sorted(missing)}")
            states = [s for s in states if s.partition in wanted]
        offsets: dict[TopicPartition, int] = {}
        for s in states:
            if isinstance(to, int) and not isinstance(to, bool):
                if not s.log_start_offset <= to <= s.high_watermark:
                    raise InvalidArgumentError(
                        f"offset {to} is outside partition {s.partition} of {topic!r}: "
                        f"[{s.log_start_offset}, {s.high_watermark}]"
                    )
                offset = to
            else:
                reset = OffsetReset.parse(to)  # type: ignore[arg-type]
                if reset is OffsetReset.NONE:
                    raise InvalidArgumentError("reset to 'earliest', 'latest' or an offset")
                offset = s.log_start_offset if reset is OffsetReset.EARLIEST else s.high_watermark
            offsets[TopicPartition(topic, s.partition)] = offset
        await self.check_group_empty(group_id, "resetting its offsets")
        await self._metadata.commit_offsets(group_id, offsets, if_empty=True)
        return offsets

    async def delete_group(self, group_id: str) -> None:
        """Forget a group's committed offsets.

        Raises:
            GroupNotEmptyError: the group has live members.
        """
        check_group_id(group_id)
        await self.check_group_empty(group_id, "deleting it")
        await self._metadata.delete_group(group_id, if_empty=True)

    async def check_group_empty(self, group_id: str, doing: str) -> None:
        """Raise GroupNotEmptyError, naming ``doing``, if the group has live members.

        A check before the act, for its message; reset_offsets and
        delete_group write with ``if_empty``, which checks again inside the
        write's transaction, so a member that joins between the two is
        seen there (and nothing is written).
        """
        members = await self._metadata.describe_group_members(group_id)
        if members:
            raise not_empty(group_id, [m.member_id for m in members], doing)

    async def maintain(
        self,
        *,
        grace: float = 60.0,
        orphan_grace: float = 3600.0,
        target_bytes: int = 4 * 2**20,
        lease_ttl: float = 30.0,
    ) -> MaintenanceReport:
        """Run one maintenance pass: retention, compaction, merging, cleanup.

        Nothing runs in a broker, so this is the job that keeps the log from
        growing forever; ``streamhouse maintain`` runs it in a loop. One pass
        applies each topic's time and size retention (moving the log start),
        compacts compacted topics (the newest record of each key stays, at
        its offset), merges runs of small segments into objects of about
        ``target_bytes``, and deletes the objects nothing points into any
        more, uploads never committed, and stale temporary files.

        One maintainer acts at a time, under a lease in the metadata store:
        if another holds it, this returns at once with an empty report whose
        ``skipped`` is true. Readers never notice a pass: a rewritten segment
        holds the same records at the same offsets, and no object is deleted
        until ``grace`` seconds after the last segment pointing into it went.
        A consumer whose position retention removed applies its offset_reset.

        Args:
            grace: seconds an object nothing points into is kept (readers
                that looked it up before finish); segments committed more
                recently than this are not rewritten.
            orphan_grace: seconds an upload never committed is kept (a
                producer's commit may come that late: at least its
                delivery_timeout).
            target_bytes: the size merging aims for (the producer's
                max_batch_bytes); runs of segments under half of it merge.
            lease_ttl: seconds the lease outlives a maintainer killed
                mid-pass (the next one waits that long); renewed while the
                pass runs.

        Raises:
            InvalidArgumentError: an argument is out of range.
            StorageError, MetadataError: a store failed; the pass stopped where
                it was, and the next pass finishes or undoes what it left.
        """
        if isinstance(target_bytes, bool) or not isinstance(target_bytes, int) or target_bytes < 1:
            raise InvalidArgumentError(f"target_bytes must be an int >= 1, not {target_bytes!r}")
        if check_grace("lease_ttl", lease_ttl) == 0:
            raise InvalidArgumentError("lease_ttl must be > 0")
        settings = Settings(
            grace=check_grace("grace", grace),
            orphan_grace=check_grace("orphan_grace", orphan_grace),
            target_bytes=target_bytes,
            codec=Codec.LZ4,
            lease_ttl=float(lease_ttl),
        )
        return await maintain(self._storage, self._metadata, settings)

    async def delete_orphans(self, grace: float = 3600.0) -> list[str]:
        """Delete uploaded objects that were never committed, older than ``grace`` seconds.

        A producer that crashed between its PUT and its commit leaves such an
        object behind; readers never see it. Objects younger than ``grace``
        may still be on their way to a commit and are left alone. A store
        that writes through temporary files (the local directory) also loses
        those older than ``grace``: a process killed mid-write leaves them.
        :meth:`maintain` does this too (with its ``orphan_grace``).

        Returns:
            The keys of the deleted objects, then the paths of the deleted
            temporary files (``.../.tmp-*``, relative to the store).
        """
        orphans = await delete_orphans(self._storage, self._metadata, check_grace("grace", grace))
        return [info.key for info in orphans.objects] + list(orphans.temporaries)


@contextlib.asynccontextmanager
async def open_admin(
    *,
    storage: ObjectStore | str | None = None,
    metadata: MetadataStore | str | None = None,
) -> AsyncIterator[Admin]:
    """Open an admin client on the given stores (the embedded default when omitted)."""
    async with open_stores(storage, metadata) as (store, meta):
        yield Admin(store, meta)
