"""What the producer accumulates: batches of per-partition columns, and the
checks a record passes before it joins one.

The flow that fills, seals and flushes these lives in ``producer``.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import attrs

from .._codec import Headers
from .._errors import DeliveryError, InvalidArgumentError

__all__ = ["Batch", "Columns", "check_bytes", "check_headers", "headers_size"]


@attrs.define(eq=False)
class Columns:
    timestamps: list[int] = attrs.Factory(list)
    keys: list[bytes | None] = attrs.Factory(list)
    values: list[bytes | None] = attrs.Factory(list)
    headers: list[Headers | None] | None = None

    def add_headers(self, start: int, headers: Sequence[Headers | None]) -> None:
        if self.headers is None:
            self.headers = [None] * start
        self.headers += headers


@attrs.define(eq=False)
class Batch:
    """One flush's worth of records, in every partition they went to."""

    seq: int
    parts: dict[tuple[str, int], Columns] = attrs.Factory(dict)
    size: int = 0
    done: anyio.Event = attrs.Factory(anyio.Event)
    previous: Batch | None = None
    bases: dict[tuple[str, int], int] = attrs.Factory(dict)
    error: BaseException | None = None

    def columns(self, topic: str, partition: int) -> Columns:
        cols = self.parts.get((topic, partition))
        if cols is None:
            cols = self.parts[(topic, partition)] = Columns()
        return cols

    def outcome(self) -> dict[tuple[str, int], int]:
        if self.error is not None:
            raise DeliveryError(f"records not written: {self.error}") from self.error
        return self.bases


def check_bytes(what: str, value: object) -> None:
    if value is not None and type(value) is not bytes:
        raise InvalidArgumentError(f"{what} must be bytes or None, not {type(value).__name__}")


def check_headers(headers: object) -> Headers:
    if headers is None:
        return ()
    try:
        pairs = tuple((k, v) for k, v in headers)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise InvalidArgumentError("headers must be a sequence of (str, bytes) pairs") from None
    for k, v in pairs:
        if type(k) is not str or type(v) is not bytes:
            raise InvalidArgumentError(
                f"header ({k!r}, ...) must be a (str, bytes) pair, not "
                f"({type(k).__name__}, {type(v).__name__})"
            )
        if len(k.encode()) > 0xFFFF:
            raise InvalidArgumentError(f"header name {k[:20]!r}... is longer than 65535 bytes")
    return pairs


def headers_size(headers: Headers) -> int:
    return sum(len(k) + len(v) + 6 for k, v in headers)
