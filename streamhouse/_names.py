"""Validation of user-supplied names, done once at every public entry point.

Topic names follow Kafka's rule, ``[A-Za-z0-9._-]{1,249}`` and neither ``.``
nor ``..``, so that a name can never reach a file path or an object key as
anything but one plain path component.
"""

from __future__ import annotations

import re

from ._errors import InvalidArgumentError, InvalidNameError

MAX_TOPIC_NAME = 249
MAX_GROUP_ID = 255
MAX_PARTITIONS = 100_000

_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


def check_topic_name(name: object) -> str:
    """Return ``name`` if it is a valid topic name, else raise InvalidNameError."""
    if not isinstance(name, str):
        raise InvalidNameError(f"topic name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidNameError("topic name must not be empty")
    if len(name) > MAX_TOPIC_NAME:
        raise InvalidNameError(
            f"topic name {name[:40]!r}... is {len(name)} characters; the limit is {MAX_TOPIC_NAME}"
        )
    if name in (".", ".."):
        raise InvalidNameError(f"topic name {name!r} is reserved")
    if _TOPIC_RE.fullmatch(name) is None:
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        raise InvalidNameError(
            f"topic name {name!r} contains {''.join(bad)!r}; allowed are "
            "ASCII letters, digits, '.', '_' and '-'"
        )
    return name


def check_group_id(group_id: object) -> str:
    """Return ``group_id`` if it is a valid consumer group id."""
    if not isinstance(group_id, str):
        raise InvalidNameError(f"group id must be a str, not {type(group_id).__name__}")
    if not group_id:
        raise InvalidNameError("group id must not be empty")
    if len(group_id) > MAX_GROUP_ID:
        raise InvalidNameError(f"group id is {len(group_id)} characters; the limit is 255")
    if not group_id.isprintable():
        raise InvalidNameError(f"group id {group_id!r} contains non-printable characters")
    return group_id


def check_partition_count(partitions: object) -> int:
    """Return ``partitions`` if it is a valid partition count (1..100,000)."""
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise InvalidArgumentError(
            f"partition count must be an int, not {type(partitions).__name__}"
        )
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidArgumentError(
            f"partition count must be between 1 and {MAX_PARTITIONS}, not {partitions}"
        )
    return partitions
