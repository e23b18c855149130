"""Checks of what callers pass, made before anything reaches an actor.

Each raises InvalidArgumentError naming the argument and the value, so a bad
call hurts only its caller: no actor ever sees a value of the wrong type.
``bool`` is refused where an int is wanted (it is an int to Python, never
what the caller meant).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from .._errors import InvalidArgumentError
from .._names import check_topic_name
from .._types import TopicPartition

__all__ = [
    "check_count",
    "check_offsets",
    "check_partition",
    "check_partitions",
    "check_seconds",
    "check_timeout",
]


def check_count(name: str, value: object, *, least: int) -> int:
    """An int >= ``least``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidArgumentError(f"{name} must be an int >= {least}, not {value!r}")
    return value


def check_seconds(name: str, value: object, *, zero: bool = False, infinite: bool = False) -> float:
    """A number of seconds: finite and positive (or 0 / infinite where allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidArgumentError(f"{name} must be a number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not zero) or (math.isinf(value) and not infinite):
        allowed = ">= 0" if zero else "> 0"
        if not infinite:
            allowed += " and finite"
        raise InvalidArgumentError(f"{name} must be {allowed} seconds, not {value!r}")
    return float(value)


def check_timeout(value: object) -> float:
    """A poll's timeout: >= 0 seconds, infinite allowed."""
    return check_seconds("timeout", value, zero=True, infinite=True)


def check_partition(topic: object, partition: object) -> TopicPartition:
    """A well-formed (topic, partition) pair, as a TopicPartition."""
    if not isinstance(topic, str):
        raise InvalidArgumentError(f"topic must be a str, not {topic!r}")
    check_topic_name(topic)
    check_count("partition", partition, least=0)
    assert isinstance(partition, int)
    return TopicPartition(topic, partition)


def check_partitions(items: Iterable[object]) -> list[TopicPartition]:
    """Each item a well-formed TopicPartition (not a tuple that looks like one)."""
    out = []
    for item in items:
        if not isinstance(item, TopicPartition):
            raise InvalidArgumentError(
                f"partitions must be TopicPartition objects, not {item!r}; "
                "write TopicPartition(topic, partition)"
            )
        out.append(check_partition(item.topic, item.partition))
    return out


def check_offsets(offsets: object) -> dict[TopicPartition, int]:
    """A mapping of TopicPartition to an int offset >= 0."""
    if not isinstance(offsets, Mapping):
        raise InvalidArgumentError(
            f"offsets must be a mapping of TopicPartition to int, not {offsets!r}"
        )
    out = {}
    for tp, offset in offsets.items():
        (checked,) = check_partitions([tp])
        out[checked] = check_count(f"the offset of {tp}", offset, least=0)
    return out
