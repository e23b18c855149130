"""Test helpers: a reference reader and scripted doubles at the I/O seams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from streamhouse import MetadataStore, ObjectStore, StorageUnavailableError
from streamhouse._errors import MetadataUnavailableError
from streamhouse._metastore import SegmentInfo, SegmentSpec
from streamhouse._objectstore import ObjectInfo
from streamhouse._segment import iter_segment

Row = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]


async def read_partition(
    storage: ObjectStore, metadata: MetadataStore, topic: str, partition: int
) -> list[Row]:
    """Every record of a partition, read the simplest way: segment by segment."""
    out: list[Row] = []
    for seg in await metadata.list_segments(topic, partition, 0, limit=100_000):
        data = await storage.get(seg.object_key, seg.position, seg.position + seg.length)
        for block in iter_segment(data, name=seg.object_key, base=seg.position):
            headers = block.headers or [()] * block.record_count
            out += [(*row, h) for row, h in zip(block.rows(seg.base_offset), headers, strict=True)]
    return out


class FlakyStore:
    """An ObjectStore that fails puts as scripted, then passes calls through."""

    def __init__(self, inner: ObjectStore, put_failures: int = 0) -> None:
        self.inner = inner
        self.put_failures = put_failures
        self.puts: list[str] = []

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if self.put_failures:
            self.put_failures -= 1
            raise StorageUnavailableError(f"scripted failure of PUT {key}")
        self.puts.append(key)
        await self.inner.put(key, data, if_absent=if_absent)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return await self.inner.get(key, start, end)

    async def head(self, key: str) -> ObjectInfo:
        return await self.inner.head(key)

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.list(prefix)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def aclose(self) -> None:
        await self.inner.aclose()


class LostAnswerMetadata:
    """A MetadataStore whose first segment commits succeed but report failure.

    That is the worst case for a retry: the offsets were assigned, and the
    caller does not know it.
    """

    def __init__(self, inner: MetadataStore, lost: int = 1) -> None:
        self.inner = inner
        self.lost = lost
        self.commits = 0

    async def commit_segments(
        self, object_key: str, segments: Sequence[SegmentSpec]
    ) -> list[SegmentInfo]:
        result = await self.inner.commit_segments(object_key, segments)
        self.commits += 1
        if self.lost:
            self.lost -= 1
            raise MetadataUnavailableError("scripted: the commit's answer was lost")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
