"""What one maintenance pass did: the MaintenanceReport, and the tally behind it."""

from __future__ import annotations

import attrs

__all__ = ["MaintenanceReport", "Tally"]


@attrs.frozen
class MaintenanceReport:
    """What one ``Admin.maintain()`` pass did.

    Attributes:
        segments_deleted: segments retention removed from the catalogue.
        segments_compacted: segments compaction rewrote (or emptied and removed).
        segments_merged: small segments merged into larger ones.
        records_removed: records compaction removed (older values of a key,
            expired tombstones).
        objects_deleted: objects deleted from the object store: those no
            segment points into any more (after the grace), and orphans
            (uploads never committed, after the orphan grace).
        objects_written: objects compaction and merging wrote.
        bytes_deleted: the bytes of the objects deleted.
        bytes_rewritten: the segment bytes compaction and merging read and
            rewrote.
        bytes_written: the bytes of the objects written.
        temporaries_deleted: stale temporary files of a local store deleted.
        skipped: another maintainer held the lease; this pass did nothing.
        interrupted: the lease was lost mid-pass (the pass took longer than
            the lease, or the process stalled); the pass stopped, and the next
            one finishes what it left.
        problems: partitions the pass left as they were because their own
            data cannot be read (a corrupt segment, an object missing), one
            line each naming the step, the topic and partition, and the
            error; the pass went on with the others, and the next pass
            tries them again.
    """

    segments_deleted: int = 0
    segments_compacted: int = 0
    segments_merged: int = 0
    records_removed: int = 0
    objects_deleted: int = 0
    objects_written: int = 0
    bytes_deleted: int = 0
    bytes_rewritten: int = 0
    bytes_written: int = 0
    temporaries_deleted: int = 0
    skipped: bool = False
    interrupted: bool = False
    problems: tuple[str, ...] = ()


@attrs.define
class Tally:
    """The counts of a pass in progress (owned by the pass's one task)."""

    segments_deleted: int = 0
    segments_compacted: int = 0
    segments_merged: int = 0
    records_removed: int = 0
    objects_deleted: int = 0
    objects_written: int = 0
    bytes_deleted: int = 0
    bytes_rewritten: int = 0
    bytes_written: int = 0
    temporaries_deleted: int = 0
    skipped: bool = False
    interrupted: bool = False
    problems: list[str] = attrs.Factory(list)

    def report(self) -> MaintenanceReport:
        return MaintenanceReport(**{**attrs.asdict(self), "problems": tuple(self.problems)})
