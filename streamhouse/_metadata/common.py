"""What every metadata store checks and builds the same way.

The stores validate arguments here, before anything reaches a database, so
that both give the same error for the same bad input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import attrs

from .._errors import (
    InvalidArgumentError,
    MetadataError,
    PartitionNotFoundError,
    TopicNotFoundError,
)
from .._names import check_group_id, check_topic_name
from .._types import TopicPartition
from .groups import MemberRef
from .protocol import SegmentInfo, SegmentSpec, TopicConfig, TopicInfo

__all__ = [
    "check_commit_args",
    "SEGMENT_COLUMNS",
    "TOPIC_COLUMNS",
    "AllTokens",
    "check_offsets",
    "check_partition",
    "check_recommitted",
    "check_lease_request",
    "check_replacement",
    "check_segment_specs",
    "check_timeout",
    "config_row",
    "partition_error",
    "segment",
    "segment_row",
    "topic_info",
]

SEGMENT_COLUMNS = (
    "topic, partition, base_offset, record_count, object_key, position, length, "
    "index_length, min_timestamp, max_timestamp, end_offset, created_at"
)
TOPIC_COLUMNS = (
    "name, partitions, created_at, retention_seconds, retention_bytes, cleanup_policy, "
    "delete_retention_seconds"
)

_INT64_MAX = 2**63 - 1


def segment(row: Sequence[Any]) -> SegmentInfo:
    """A row of ``SEGMENT_COLUMNS`` as a SegmentInfo."""
    return SegmentInfo(*row)


def topic_info(row: Sequence[Any]) -> TopicInfo:
    """A row of ``TOPIC_COLUMNS`` as a TopicInfo."""
    name, partitions, created_at, seconds, size, policy, delete_seconds = row
    return TopicInfo(
        name, partitions, created_at, TopicConfig(seconds, size, policy, delete_seconds)
    )


def config_row(config: TopicConfig) -> tuple[float | None, int | None, str, float]:
    """A TopicConfig as the values of its four columns."""
    if not isinstance(config, TopicConfig):
        raise InvalidArgumentError(f"a topic's settings must be a TopicConfig, not {config!r}")
    return (
        config.retention_seconds,
        config.retention_bytes,
        config.cleanup_policy.value,
        config.delete_retention_seconds,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_partition(partition: object) -> int:
    """``partition`` if it is an int >= 0 (whether it exists is the store's question)."""
    if not _is_int(partition) or partition < 0:  # type: ignore[operator]
        raise InvalidArgumentError(f"partition must be an int >= 0, not {partition!r}")
    return partition  # type: ignore[return-value]


def check_segment_specs(object_key: str, segments: Sequence[SegmentSpec]) -> None:
    """Refuse an empty object, a bad key, or a segment with impossible numbers."""
    if not isinstance(object_key, str) or not object_key or "\x00" in object_key:
        raise InvalidArgumentError(f"object key must be a non-empty str, not {object_key!r}")
    if not segments:
        raise InvalidArgumentError("an object needs at least one segment to commit")
    for spec in segments:
        if not isinstance(spec, SegmentSpec):
            raise InvalidArgumentError(f"segments must be SegmentSpec, not {spec!r}")
        check_topic_name(spec.topic)
        check_partition(spec.partition)
        numbers = (
            spec.record_count, spec.position, spec.length, spec.index_length,
            spec.min_timestamp, spec.max_timestamp,
        )  # fmt: skip
        if not all(_is_int(n) and -_INT64_MAX <= n <= _INT64_MAX for n in numbers):
            raise InvalidArgumentError(f"segment {spec} has a field that is not an int64")
        if spec.record_count <= 0 or spec.length <= 0 or spec.position < 0:
            raise InvalidArgumentError(f"segment {spec} has no records or a bad position")


def check_recommitted(
    object_key: str, found: list[SegmentInfo], specs: Sequence[SegmentSpec]
) -> list[SegmentInfo]:
    """The segments of an object committed before, if they are all still there.

    Raises:
        MetadataError: maintenance has removed or moved some since (retention,
            compaction, merging): the offsets they were given cannot be told.
    """
    if len(found) != len(specs):
        raise MetadataError(
            f"object {object_key!r} was committed, and maintenance has since removed or "
            f"rewritten {len(specs) - len(found)} of its {len(specs)} segments: their "
            "offsets can no longer be told"
        )
    return found


def segment_row(info: SegmentInfo) -> tuple[Any, ...]:
    """A SegmentInfo as the values of ``SEGMENT_COLUMNS``."""
    return attrs.astuple(info)


def check_lease_request(holder: object, ttl: object) -> None:
    """A lease is asked for by a non-empty holder name for a finite ttl > 0."""
    if not isinstance(holder, str) or not holder or "\x00" in holder:
        raise InvalidArgumentError(f"a lease holder must be a non-empty str, not {holder!r}")
    if check_timeout(ttl, "a lease's ttl") == 0:  # type: ignore[arg-type]
        raise InvalidArgumentError(f"a lease's ttl must be > 0, not {ttl!r}")


def check_replacement(
    object_key: str | None, old: Sequence[SegmentInfo], new: Sequence[SegmentInfo]
) -> None:
    """Refuse a rewrite that would change which offsets a partition covers.

    Every new segment lies in the new object and inside the offsets of the
    old segments of its partition; an empty ``new`` (everything removed)
    names no object.
    """
    if not old or not all(isinstance(s, SegmentInfo) for s in (*old, *new)):
        raise InvalidArgumentError("a rewrite replaces at least one SegmentInfo")
    if (object_key is None) != (not new) or any(s.object_key != object_key for s in new):
        raise InvalidArgumentError(
            f"the new segments must all be in object {object_key!r} (None: no new segment)"
        )
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for s in old:
        low, high = spans.get((s.topic, s.partition), (s.base_offset, s.end_offset))
        spans[(s.topic, s.partition)] = (min(low, s.base_offset), max(high, s.end_offset))
    for s in new:
        low, high = spans.get((s.topic, s.partition), (0, -1))
        if not low <= s.base_offset < s.end_offset <= high or s.record_count <= 0:
            raise InvalidArgumentError(
                f"new segment {s.base_offset}..{s.end_offset} of {s.topic}[{s.partition}] "
                "is not within the segments it replaces"
            )


def check_offsets(offsets: Mapping[TopicPartition, int], metadata: str) -> None:
    """Refuse offsets that are not ints in [0, 2**63) or keys that are not partitions."""
    if not isinstance(metadata, str) or "\x00" in metadata:
        raise InvalidArgumentError(f"offset metadata must be a str without NUL, not {metadata!r}")
    for tp, offset in offsets.items():
        if not isinstance(tp, TopicPartition):
            raise InvalidArgumentError(f"offsets are keyed by TopicPartition, not {tp!r}")
        check_topic_name(tp.topic)
        check_partition(tp.partition)
        if not _is_int(offset) or not 0 <= offset <= _INT64_MAX:
            raise InvalidArgumentError(f"offset for {tp} must be an int >= 0, not {offset!r}")


def check_commit_args(
    group_id: str,
    offsets: Mapping[TopicPartition, int],
    metadata: str,
    member: object,
    if_empty: bool = False,
) -> None:
    """What ``commit_offsets`` checks before it reaches its store, on either store."""
    check_group_id(group_id)
    check_offsets(offsets, metadata)
    if member is not None and not isinstance(member, MemberRef):
        raise InvalidArgumentError(f"member must be a MemberRef or None, not {member!r}")
    if if_empty and member is not None:
        raise InvalidArgumentError("if_empty is for a commit by no member, not by one")


def check_timeout(timeout: float, name: str = "timeout") -> float:
    """A wait's timeout (the argument ``name``): a finite number of seconds >= 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArgumentError(f"{name} must be a number of seconds, not {timeout!r}")
    if not math.isfinite(timeout) or timeout < 0:
        raise InvalidArgumentError(f"{name} must be finite and >= 0, not {timeout!r}")
    return float(timeout)


def partition_error(topic: str, partitions: int | None, partition: int) -> Exception:
    """The error for a partition that is not there (``partitions`` None: no topic)."""
    if partitions is None:
        return TopicNotFoundError(f"topic {topic!r} does not exist")
    return PartitionNotFoundError(
        f"topic {topic!r} has partitions 0..{partitions - 1}; there is no partition {partition!r}"
    )


class AllTokens:
    """Hold every token of a limiter: no call runs while held."""

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter
        self._borrowers: list[object] = []

    async def __aenter__(self) -> None:
        for _ in range(int(self._limiter.total_tokens)):
            borrower = object()
            await self._limiter.acquire_on_behalf_of(borrower)
            self._borrowers.append(borrower)

    async def __aexit__(self, *exc: object) -> None:
        for borrower in self._borrowers:
            self._limiter.release_on_behalf_of(borrower)
