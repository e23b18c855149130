"""Maintenance: retention, key compaction, small-object merging, orphans.

``maintain`` runs one pass under the maintenance lease (its module says
what a pass does, in which order, and why a maintainer killed at any moment
leaves nothing the next pass does not finish or undo).
"""

from .context import Settings as Settings
from .maintain import maintain as maintain
from .orphans import Orphans as Orphans
from .orphans import check_grace as check_grace
from .orphans import delete_orphans as delete_orphans
from .report import MaintenanceReport as MaintenanceReport

__all__ = [
    "MaintenanceReport",
    "Orphans",
    "Settings",
    "check_grace",
    "delete_orphans",
    "maintain",
]
