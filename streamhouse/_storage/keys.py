"""The object-key scheme: where producers put objects, and what a key tells.

Every object a producer uploads is ``data/<ms since epoch>-<random>.seg``:
unique without coordination, ordered by creation time, and dated, so that a
cleaner can tell an old uncommitted upload (an orphan) from one still on its
way to a commit without asking the store for its age.
"""

from __future__ import annotations

import secrets
import time

__all__ = ["OBJECT_PREFIX", "new_object_key", "object_key_time"]

OBJECT_PREFIX = "data/"


def new_object_key() -> str:
    """A unique, time-ordered object key: ``data/<ms since epoch>-<random>.seg``."""
    return f"{OBJECT_PREFIX}{time.time_ns() // 1_000_000:013d}-{secrets.token_hex(8)}.seg"


def object_key_time(key: str) -> float | None:
    """The creation time (seconds since the epoch) encoded in a producer's key."""
    name = key.removeprefix(OBJECT_PREFIX)
    stamp, _, _ = name.partition("-")
    if not key.startswith(OBJECT_PREFIX) or len(stamp) != 13 or not stamp.isdigit():
        return None
    return int(stamp) / 1000
