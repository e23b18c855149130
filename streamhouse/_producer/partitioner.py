"""Kafka's partitioners: murmur2 for keyed records, sticky for keyless ones."""

from __future__ import annotations

import functools
import random
import struct

__all__ = ["StickyPartitioner", "keyed_partition", "murmur2"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` as a signed 32-bit int.

    A transcription of ``org.apache.kafka.common.utils.Utils.murmur2`` (seed
    0x9747b28c), so keyed records land where Kafka's Java client puts them.
    """
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    full = length - length % 4
    # Each 4-byte word mixed in; one expression per word, words cut in C.
    for (k,) in struct.iter_unpack("<I", data[:full]):
        k = (k * _M) & _MASK
        h = ((h * _M) ^ ((k ^ (k >> 24)) * _M)) & _MASK
    rest = length % 4
    if rest:
        tail = data[full:]
        if rest == 3:
            h ^= tail[2] << 16
        if rest >= 2:
            h ^= tail[1] << 8
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@functools.lru_cache(maxsize=65536)
def keyed_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class StickyPartitioner:
    """Keyless records stick to one partition per topic until the batch is sealed.

    Filling one partition's batch at a time makes larger segments and fewer,
    larger objects than spreading every record, which is why Kafka switched.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._current: dict[str, int] = {}

    def partition(self, topic: str, partitions: int) -> int:
        current = self._current.get(topic)
        if current is None or current >= partitions:
            current = self._current[topic] = self._rng.randrange(partitions)
        return current

    def next_batch(self) -> None:
        """Forget the choices: the next batch picks again."""
        self._current.clear()
