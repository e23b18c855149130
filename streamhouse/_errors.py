"""The errors StreamHouse raises.

Every error the project raises derives from :class:`StreamHouseError`, so one
``except StreamHouseError`` catches them all. Foreign errors (httpx, sqlite3,
lz4, struct) are translated at the boundary where they happen and kept as
``__cause__``::

    StreamHouseError
    ├── ConfigurationError          a bad URL, option or missing credential
    ├── InvalidArgumentError        a value the API cannot accept
    │   └── InvalidNameError        a topic or group name that breaks the rules
    ├── ClosedError                 *you* closed the object, then used it
    ├── CommitFailedError           a group member committed a partition it
    │                               does not own at its epoch (fenced)
    ├── GroupNotEmptyError          a group's offsets reset, deleted or taken
    │                               by a non-member while members run
    ├── CorruptDataError            bytes that fail a checksum or bound check
    ├── DeliveryError               a producer batch could not be written
    ├── OffsetOutOfRangeError       no valid position and offset_reset="none"
    ├── StorageError                the object store said no
    │   ├── ObjectNotFoundError     no such key (or bucket)
    │   ├── ObjectExistsError       a conditional create found the key taken
    │   ├── StorageAuthError        wrong credentials or access denied
    │   └── StorageUnavailableError (retriable) the store could not be reached
    │                               or kept failing after every retry
    └── MetadataError               the metadata store said no
        ├── TopicNotFoundError
        ├── TopicExistsError
        ├── PartitionNotFoundError
        ├── LeaseLostError          another maintainer holds the maintenance
        │                           lease now: this one must stop
        └── MetadataUnavailableError (retriable) the database stayed locked
                                    or unreachable

``RetriableError`` marks the errors worth trying again later; it is a mixin,
so ``except RetriableError`` catches exactly those.

Outages and retries are logged with the stdlib ``logging`` under
``streamhouse.*``; the package's logger has a NullHandler, so nothing is
printed until the application configures logging.
"""

from __future__ import annotations

import asyncio
from typing import NoReturn

import trio

from . import _log  # noqa: F401  (the package logger's NullHandler, set up once there)


class StreamHouseError(Exception):
    """The root of every error StreamHouse raises."""


class RetriableError(StreamHouseError):
    """The operation may succeed if tried again later."""


class ConfigurationError(StreamHouseError, ValueError):
    """A URL, an option or a credential is missing or malformed."""


class InvalidArgumentError(StreamHouseError, ValueError):
    """An argument has the wrong type or is out of range."""


class InvalidNameError(InvalidArgumentError):
    """A topic or group name breaks the naming rules."""


class ClosedError(StreamHouseError):
    """The object was closed by its owner and then used."""


class CommitFailedError(StreamHouseError):
    """A group member committed offsets of a partition it does not own at its epoch.

    Its session ran out (a long pause, a network partition), it left, or the
    partition moved to another member: the commit wrote nothing. The
    consumer's next poll tells its listener the partitions are lost and
    rejoins the group.
    """


class GroupNotEmptyError(StreamHouseError):
    """The group has live members, whose offsets these are.

    Resetting or deleting its offsets, or reading and committing them as no
    member (``streamhouse consume --group`` without ``--follow``), waits until
    every member has left or its session ran out, as Kafka's tools do: a
    running member would commit its own positions over a reset, or skip what
    the outsider committed.
    """


class CorruptDataError(StreamHouseError):
    """Bytes failed a checksum, magic, version or bound check.

    Attributes:
        name: the object (or file) the bytes came from.
        position: the byte position, within that object, of what failed.
        reason: what failed, in words.
    """

    def __init__(self, name: str, position: int, reason: str) -> None:
        super().__init__(f"corrupt data in {name!r} at byte {position}: {reason}")
        self.name = name
        self.position = position
        self.reason = reason

    def __reduce__(self) -> tuple[type[CorruptDataError], tuple[str, int, str]]:
        return (type(self), (self.name, self.position, self.reason))


class DeliveryError(StreamHouseError):
    """The batch holding the record could not be written; the cause says why.

    Nothing of the batch became visible to readers.
    """


class OffsetOutOfRangeError(StreamHouseError):
    """A partition has no valid position and the reset policy is "none"."""


class StorageError(StreamHouseError):
    """The object store refused or failed an operation."""


class ObjectNotFoundError(StorageError):
    """The key (or the bucket) does not exist."""


class ObjectExistsError(StorageError):
    """A conditional create found the key already taken (HTTP 412)."""


class StorageAuthError(StorageError):
    """The store rejected the credentials or denied access (HTTP 401/403)."""


class StorageUnavailableError(StorageError, RetriableError):
    """The store could not be reached, or kept failing after every retry."""


class MetadataError(StreamHouseError):
    """The metadata store refused or failed an operation."""


class TopicNotFoundError(MetadataError):
    """The topic does not exist."""


class TopicExistsError(MetadataError):
    """A topic of that name already exists."""


class PartitionNotFoundError(MetadataError):
    """The partition is outside the topic's partition range."""


class LeaseLostError(MetadataError):
    """The maintenance lease expired and another maintainer took it.

    The write that raised it changed nothing; the maintainer stops its pass
    (what it left half done, the next pass finishes or undoes).
    """


class MetadataUnavailableError(MetadataError, RetriableError):
    """The metadata database stayed locked or unreachable."""


def first_error(group: BaseExceptionGroup[BaseException]) -> StreamHouseError | None:
    """The first StreamHouseError in a (nested) exception group, or None."""
    for exc in _leaves(group):
        if isinstance(exc, StreamHouseError):
            return exc
    return None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def raise_as_one(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise a task group's exception group at the public boundary as one meaningful error.

    KeyboardInterrupt or SystemExit as themselves; a group holding a
    cancellation as it is (it is for the cancel scopes above, which
    understand groups); else the first StreamHouseError, chained to the
    whole group; else a group of one exception as that exception; else the
    group as it is.
    """
    leaves = _leaves(group)
    for exc in leaves:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise exc from None
    if any(isinstance(exc, asyncio.CancelledError | trio.Cancelled) for exc in leaves):
        raise group
    error = first_error(group)
    if error is not None:
        raise error from group
    if len(leaves) == 1:
        raise leaves[0]
    raise group
