"""Batches with offset gaps: what compaction leaves, as consumers receive it."""

from __future__ import annotations

import pytest

from streamhouse import RecordBatch


def gapped() -> RecordBatch:
    return RecordBatch(
        "t", 0, 10, [1, 2, 3, 4], [b"a", b"b", b"c", b"d"], [b"1", b"2", b"3", b"4"],
        offsets=[10, 12, 13, 20],
    )  # fmt: skip


def test_a_gapped_batch_carries_its_offsets() -> None:
    """Records, next and last offsets follow the offsets column, not the count."""
    batch = gapped()
    assert batch.gapped
    assert list(batch.offsets) == [10, 12, 13, 20]
    assert [r.offset for r in batch] == [10, 12, 13, 20]
    assert (batch.next_offset, batch.last_offset, len(batch)) == (21, 20, 4)
    assert [r.offset for r in batch.records(1, 3)] == [12, 13]


def test_a_slice_of_a_gapped_batch_keeps_the_offsets() -> None:
    """Slicing keeps each record's own offset and the first offset in step."""
    part = gapped().slice(1, 3)
    assert (part.first_offset, list(part.offsets), part.next_offset) == (12, [12, 13], 14)
    assert [r.value for r in part] == [b"2", b"3"]
    assert gapped().slice(0) == gapped()


def test_a_consecutive_batch_has_a_range_of_offsets() -> None:
    """Without an offsets column, offsets are a range from the first."""
    batch = RecordBatch("t", 0, 5, [1, 2], [None, None], [b"a", b"b"])
    assert not batch.gapped
    assert batch.offsets == range(5, 7)
    assert batch.slice(1).first_offset == 6


def test_offsets_that_disagree_with_the_batch_are_refused() -> None:
    """An offsets column of the wrong length or first offset is refused."""
    with pytest.raises(ValueError, match="offsets"):
        RecordBatch("t", 0, 5, [1, 2], [None, None], [b"a", b"b"], offsets=[5])
    with pytest.raises(ValueError, match="offsets"):
        RecordBatch("t", 0, 5, [1, 2], [None, None], [b"a", b"b"], offsets=[6, 7])
