"""What a record and the producer's options must be before anything is shared.

Records of many ``send()`` calls share one batch, one segment, one object and
one commit, so a record that fails late (in the encoder, at the commit)
fails every record of its batch, and their callers did nothing wrong: a
timestamp of 2**63 once failed three concurrent good sends. So everything
the encoder or the commit could refuse is refused here, before the record
joins a batch, to its caller alone, with an InvalidArgumentError naming the
argument:

- key, value: bytes or None (exactly bytes: not bytearray, memoryview, str);
- headers: ``(str, bytes)`` pairs; a name in at most 65,535 UTF-8 bytes and
  at most 65,535 headers a record (the format's u16 fields);
- timestamp: an int in ``[0, 2**63)`` ms (the format's i64; negative ones
  are refused, as Kafka's producer refuses them);
- partition: an int in the topic's range;
- size: key + value + headers at most ``max_record_bytes``.

Limits that keep every batch within the format whatever it holds: a block
holds at most 2**24 records and 256 MiB decompressed (FORMAT.md), and blocks
are cut by key and value bytes only, so headers and per-record overhead (up
to 31 bytes: timestamp, null flags, header count, the shape's digits) ride
along. A batch of at most :data:`MAX_BATCH_BYTES` (128 MiB) and
:data:`MAX_BATCH_RECORDS` (2**22) records is at most 128 MiB + 4M x 31 B <
256 MiB raw, so ``max_batch_bytes``, ``max_record_bytes`` and one
``send_batch`` call are held to them (a batch is sealed at either).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

from .._codec import Codec, Headers
from .._errors import InvalidArgumentError
from .._retry import RetryPolicy

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_RECORDS",
    "MAX_TIMESTAMP",
    "ProducerOptions",
    "check_bytes",
    "check_headers",
    "check_sequence",
    "check_timestamp",
    "check_timestamps",
    "producer_options",
]

MAX_BATCH_BYTES = 128 * 2**20
MAX_BATCH_RECORDS = 2**22
MAX_TIMESTAMP = 2**63 - 1
_U16 = 0xFFFF


def check_bytes(what: str, value: object) -> None:
    """Refuse a key or value that is not bytes or None."""
    if value is not None and type(value) is not bytes:
        raise InvalidArgumentError(f"{what} must be bytes or None, not {type(value).__name__}")


def check_headers(headers: object) -> tuple[Headers, int]:
    """Return the headers as a tuple of pairs, and their size in the format."""
    if headers is None:
        return (), 0
    if isinstance(headers, str | bytes | dict):
        raise InvalidArgumentError(
            f"headers must be a sequence of (str, bytes) pairs, not {type(headers).__name__}"
        )
    try:
        pairs = tuple((k, v) for k, v in headers)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise InvalidArgumentError("headers must be a sequence of (str, bytes) pairs") from None
    if len(pairs) > _U16:
        raise InvalidArgumentError(f"{len(pairs)} headers; a record may have at most 65535")
    size = 0
    for k, v in pairs:
        if type(k) is not str or type(v) is not bytes:
            raise InvalidArgumentError(
                f"header ({k!r:.40}, ...) must be a (str, bytes) pair, not "
                f"({type(k).__name__}, {type(v).__name__})"
            )
        try:
            name = len(k.encode())
        except UnicodeEncodeError:
            raise InvalidArgumentError(f"header name {k!r:.40} is not valid Unicode") from None
        if name > _U16:
            raise InvalidArgumentError(f"header name {k[:20]!r}... is longer than 65535 bytes")
        size += name + len(v) + 6
    return pairs, size


def check_sequence(what: str, value: object) -> int:
    """The length of ``value`` if it is a sequence (a list, a tuple), not bytes or str."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes | bytearray):
        raise InvalidArgumentError(
            f"{what} must be a sequence (a list or tuple), not {type(value).__name__}"
        )
    return len(value)


def check_timestamp(timestamp: object) -> int:
    """Return ``timestamp`` if it is an int of ms in ``[0, 2**63)``."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise InvalidArgumentError(
            f"timestamp must be an int of ms since the epoch, not {type(timestamp).__name__}"
        )
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise InvalidArgumentError(
            f"timestamp {timestamp} is out of range: ms since the epoch, 0 <= t < 2**63"
        )
    return timestamp


def check_timestamps(timestamps: object, n: int, now: int) -> list[int]:
    """The timestamps of a send_batch call: None (now), one int, or ``n`` ints."""
    if timestamps is None:
        return [now] * n
    if isinstance(timestamps, int) and not isinstance(timestamps, bool):
        return [check_timestamp(timestamps)] * n
    if not isinstance(timestamps, Sequence) or isinstance(timestamps, str | bytes):
        raise InvalidArgumentError(
            f"timestamps must be an int or a sequence of {n} ints, not {type(timestamps).__name__}"
        )
    ts = list(timestamps)
    if len(ts) != n:
        raise InvalidArgumentError(f"{len(ts)} timestamps for {n} values")
    if not set(map(type, ts)) <= {int}:
        bad = next(t for t in ts if type(t) is not int)
        raise InvalidArgumentError(f"timestamps must be ints of ms, not {type(bad).__name__}")
    if ts and (min(ts) < 0 or max(ts) > MAX_TIMESTAMP):
        bad = next(t for t in ts if not 0 <= t <= MAX_TIMESTAMP)
        raise InvalidArgumentError(
            f"timestamp {bad} is out of range: ms since the epoch, 0 <= t < 2**63"
        )
    return ts


@attrs.frozen
class ProducerOptions:
    """The producer's settings, checked (see :func:`producer_options`)."""

    linger: float
    codec: Codec
    max_batch_bytes: int
    max_record_bytes: int
    max_in_flight: int
    buffer_bytes: int
    retry: RetryPolicy
    delivery_timeout: float
    close_timeout: float


def _seconds(name: str, value: object, *, zero: bool) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = ">= 0" if zero else "> 0"
        raise InvalidArgumentError(
            f"{name} must be a finite number of seconds {bound}, not {value!r}"
        )
    return float(value)


def _count(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"between {low} and {high}"
        raise InvalidArgumentError(f"{name} must be {span}, not {value}")
    return value


def producer_options(
    *,
    linger: object,
    compression: object,
    max_batch_bytes: object,
    max_record_bytes: object,
    max_in_flight: object,
    buffer_bytes: object,
    retries: object,
    retry_backoff: object,
    retry_backoff_max: object,
    delivery_timeout: object,
    close_timeout: object,
) -> ProducerOptions:
    """Check every option of open_producer; raise InvalidArgumentError naming a bad one.

    Zero means something only where users rely on it: ``linger=0`` sends at
    once (as in Kafka), ``close_timeout=0`` leaves at once, ``retry_backoff=0``
    retries at once. ``buffer_bytes=0`` would make every send wait for space
    that never comes, so it is refused, as are NaN and infinities everywhere.
    """
    try:
        codec = Codec.parse(compression)  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgumentError(
            f"compression must be 'lz4', 'zstd' or 'none', not {compression!r}"
        ) from None
    if retries is not None:
        _count("retries", retries, 1)
    backoff = _seconds("retry_backoff", retry_backoff, zero=True)
    backoff_max = _seconds("retry_backoff_max", retry_backoff_max, zero=True)
    return ProducerOptions(
        linger=_seconds("linger", linger, zero=True),
        codec=codec,
        max_batch_bytes=_count("max_batch_bytes", max_batch_bytes, 1, MAX_BATCH_BYTES),
        max_record_bytes=_count("max_record_bytes", max_record_bytes, 1, MAX_BATCH_BYTES),
        max_in_flight=_count("max_in_flight", max_in_flight, 1),
        buffer_bytes=_count("buffer_bytes", buffer_bytes, 1),
        retry=RetryPolicy(
            attempts=retries,  # type: ignore[arg-type]
            base_delay=backoff,
            max_delay=max(backoff, backoff_max),
        ),
        delivery_timeout=_seconds("delivery_timeout", delivery_timeout, zero=False),
        close_timeout=_seconds("close_timeout", close_timeout, zero=True),
    )
