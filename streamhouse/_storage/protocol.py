"""The ObjectStore protocol: what StreamHouse needs of an object store.

An object store holds immutable objects under string keys. StreamHouse needs
five operations of it, get (whole or a byte range), put (optionally only if
the key is free), head, list by prefix, delete, and a ``check`` that the
store is usable before anything is recorded that depends on it. Both
implementations (``local`` and ``s3``) give them the same semantics, and one
test suite runs against both:

- ``get(key, start, end)`` returns bytes ``[start, end)``, clipped at the end
  of the object; a missing key raises ObjectNotFoundError; a ``start`` at or
  past the end of a non-empty object raises StorageError.
- ``put(key, data, if_absent=True)`` creates the key only if it is free and
  raises ObjectExistsError otherwise; without ``if_absent`` it replaces.
- ``delete`` of a missing key is not an error (S3 semantics).
- ``check()`` raises a StorageError saying what is wrong (a bucket that does
  not exist, naming it and the endpoint; a directory that cannot be written)
  and does nothing else.

A store that writes through temporary files (the local one) also has
``delete_stale_temporaries`` (:class:`HasTemporaries`): a process killed
mid-write leaves its temporary behind, and ``Admin.delete_orphans`` removes
those past the grace period. S3 has no temporaries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypeVar, runtime_checkable

import attrs

from .._errors import (
    InvalidArgumentError,
)

__all__ = [
    "MAX_KEY_LENGTH",
    "TEMPORARY_PREFIX",
    "HasTemporaries",
    "ObjectInfo",
    "ObjectStore",
    "check_key",
    "check_range",
]

MAX_KEY_LENGTH = 1024
TEMPORARY_PREFIX = ".tmp-"

T = TypeVar("T")


@attrs.frozen
class ObjectInfo:
    """What a head or list tells about one object."""

    key: str
    size: int
    etag: str | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """Immutable objects under string keys (see the module docstring)."""

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Return bytes ``[start, end)`` of the object (clipped at its end)."""
        ...

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store ``data`` under ``key``; with ``if_absent``, only if it is free."""
        ...

    async def head(self, key: str) -> ObjectInfo:
        """Return the object's size and etag."""
        ...

    def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix`` (and sorts after
        ``start_after``, if given), in key order."""
        ...

    async def delete(self, key: str) -> None:
        """Delete the object; a missing key is not an error."""
        ...

    async def check(self) -> None:
        """Raise a StorageError naming the problem if the store cannot be used."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


@runtime_checkable
class HasTemporaries(Protocol):
    """A store whose interrupted writes can leave temporary files behind."""

    async def delete_stale_temporaries(self, older_than: float) -> list[str]:
        """Delete temporaries last written more than ``older_than`` seconds ago.

        Returns their paths relative to the store, '/'-separated.
        """
        ...


def check_key(key: object) -> str:
    """Return ``key`` if it is a safe object key, else raise InvalidArgumentError.

    Keys are relative, '/'-separated, with no empty, ``.`` or ``..`` parts, so
    that no key can escape a local store's directory or an S3 prefix.
    """
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"object key must be a non-empty str, not {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgumentError(f"object key is {len(key)} characters; the limit is 1024")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in key or "\x00" in key:
        raise InvalidArgumentError(f"object key {key!r} has an empty, '.' or '..' part")
    if parts[-1].startswith(TEMPORARY_PREFIX):
        raise InvalidArgumentError(
            f"object key {key!r} uses the reserved prefix {TEMPORARY_PREFIX!r}"
        )
    return key


def check_range(key: str, start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise InvalidArgumentError(f"bad byte range [{start}, {end}) for {key!r}")
