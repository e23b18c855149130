"""The cache actor's own messages: what its helper tasks report, and its file writes.

Private to the cache actor (module cache); kept apart so that the actor's
module reads in one sitting.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import attrs

from .messages import Reply

__all__ = ["Fetched", "Miss", "Read", "Want", "WindowFetched", "Writing", "Written", "write_file"]


@attrs.frozen
class Want:
    """A Fetch or a Prefetch (``reply`` None), as the actor handles both."""

    key: str
    start: int
    end: int
    reply: Reply[bytes] | None
    refresh: bool
    segment: bool  # a whole segment: served from a window of its object


@attrs.frozen
class Fetched:
    ident: str
    data: bytes | None
    error: Exception | None
    write: int | None  # the write that will cache the bytes, if any
    ended: anyio.Event | None = None  # set when that write has ended, either way


@attrs.frozen
class Miss:
    """A range to fetch (and to cache if ``write`` is not None)."""

    ident: str
    want: Want
    write: int | None


@attrs.frozen
class WindowFetched:
    key: str
    data: bytes | None
    error: Exception | None


@attrs.frozen
class Read:
    ident: str
    token: int
    want: Want
    data: bytes | None  # None: the file was gone


@attrs.frozen
class Written:
    ident: str
    write: int
    ok: bool


@attrs.frozen
class Writing:
    token: int
    data: bytes
    done: anyio.Event


def write_file(path: Path, token: int, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.stem}-{token}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
