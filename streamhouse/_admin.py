"""open_admin(): topics, consumer groups, offsets, lag, and orphan cleanup."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Sequence

import attrs

from ._config import open_stores
from ._errors import InvalidArgumentError
from ._metadata.protocol import MetadataStore, PartitionState, TopicInfo
from ._names import check_group_id, check_topic_name
from ._storage.keys import OBJECT_PREFIX, object_key_time
from ._storage.protocol import HasTemporaries, ObjectStore
from ._types import OffsetReset, TopicPartition

__all__ = [
    "Admin",
    "GroupPartitionLag",
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
    name: str
    created_at: float
    partitions: tuple[PartitionDescription, ...]


@attrs.frozen
class GroupPartitionLag:
    """A group's progress on one partition: lag = high watermark - committed."""

    topic: str
    partition: int
    committed: int
    high_watermark: int
    lag: int


class Admin:
    """Manages topics and groups; made by :func:`open_admin`."""

    def __init__(self, storage: ObjectStore, metadata: MetadataStore) -> None:
        self._storage = storage
        self._metadata = metadata

    async def create_topic(self, name: str, partitions: int = 1) -> TopicInfo:
        """Create a topic, once the object store is known to be usable.

        Raises:
            StorageError: the object store cannot be used (a bucket that does
                not exist, an unreachable endpoint, a directory that cannot be
                written); nothing was recorded.
            TopicExistsError, InvalidNameError: as the metadata store says.
        """
        await self._storage.check()
        return await self._metadata.create_topic(name, partitions)

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its groups' offsets. Its objects become orphans."""
        await self._metadata.delete_topic(name)

    async def list_topics(self) -> list[TopicInfo]:
        return await self._metadata.list_topics()

    async def describe_topic(self, name: str) -> TopicDescription:
        """A topic's partitions: bounds, segment count and bytes."""
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
        )

    async def list_groups(self) -> list[str]:
        return await self._metadata.list_groups()

    async def describe_group(self, group_id: str) -> list[GroupPartitionLag]:
        """One row per partition the group has committed offsets for, with its lag."""
        committed = await self._metadata.fetch_offsets(group_id)
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

        Returns the offsets written. Do it while no consumer of the group runs:
        a running consumer commits its own positions over them.

        Raises:
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
        await self._metadata.commit_offsets(group_id, offsets)
        return offsets

    async def delete_group(self, group_id: str) -> None:
        """Forget a group's committed offsets."""
        await self._metadata.delete_group(group_id)

    async def delete_orphans(self, grace: float = 3600.0) -> list[str]:
        """Delete uploaded objects that were never committed, older than ``grace`` seconds.

        A producer that crashed between its PUT and its commit leaves such an
        object behind; readers never see it. Objects younger than ``grace``
        may still be on their way to a commit and are left alone. A store
        that writes through temporary files (the local directory) also loses
        those older than ``grace``: a process killed mid-write leaves them.

        Returns:
            The keys of the deleted objects, then the paths of the deleted
            temporary files (``.../.tmp-*``, relative to the store).
        """
        if (
            isinstance(grace, bool)
            or not isinstance(grace, int | float)
            or not math.isfinite(grace)
            or grace < 0
        ):
            raise InvalidArgumentError(
                f"grace must be a finite number of seconds >= 0, not {grace!r}"
            )
        cutoff = time.time() - grace
        candidates = []
        async for info in self._storage.list(OBJECT_PREFIX):
            created = object_key_time(info.key)
            if created is not None and created < cutoff:
                candidates.append(info.key)
        deleted = []
        for start in range(0, len(candidates), 500):
            chunk = candidates[start : start + 500]
            committed = await self._metadata.committed_object_keys(chunk)
            for key in chunk:
                if key not in committed:
                    await self._storage.delete(key)
                    deleted.append(key)
        if isinstance(self._storage, HasTemporaries):
            deleted += await self._storage.delete_stale_temporaries(grace)
        return deleted


@contextlib.asynccontextmanager
async def open_admin(
    *,
    storage: ObjectStore | str | None = None,
    metadata: MetadataStore | str | None = None,
) -> AsyncIterator[Admin]:
    """Open an admin client on the given stores (the embedded default when omitted)."""
    async with open_stores(storage, metadata) as (store, meta):
        yield Admin(store, meta)
