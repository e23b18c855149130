"""``streamhouse maintain``: retention, compaction, merging and cleanup, in a loop.

Nothing runs in a broker, so something must apply the topics' retention
and compaction: this command runs ``Admin.maintain()`` every ``--interval``
seconds (or once, with ``--once``). Run it wherever is convenient, as many
times as you like: one maintainer acts at a time (a lease in the metadata
store), the others skip their pass. Each pass is summed up on stderr (with
``--format json``, one JSON document a pass on stdout). A pass that fails
because a store is unreachable is reported and tried again at the next
interval; any other error ends the command (exit 1). A partition whose
own data cannot be read (a corrupt segment, a missing object) is left as
it is and named, one line each, and the others are maintained; with
``--once`` the command then exits 1. Ctrl-C or SIGTERM
stops it at once: a pass cut short leaves nothing the next one does not
finish or undo.
"""

from __future__ import annotations

import argparse

import anyio
import attrs

from .._admin import open_admin
from .._errors import RetriableError
from .._maintenance import MaintenanceReport
from .args import Subparsers, add_command, add_format_option, format_bytes, time_span
from .common import Cli, require_metadata

__all__ = ["register"]


def _positive_span(text: str) -> float:
    """An argparse type: a time span greater than 0 (an --interval of 0
    busy-looped, 181 passes in 5 s; a lease of 0 failed at the first pass)."""
    value = time_span(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _summary(report: MaintenanceReport) -> str:
    if report.skipped:
        return "maintenance: skipped, another maintainer holds the lease"
    parts = [
        f"{report.segments_deleted} segment(s) deleted by retention",
        f"{report.segments_compacted} compacted ({report.records_removed} record(s) removed)",
        f"{report.segments_merged} merged",
        f"{report.objects_written} object(s) written ({format_bytes(report.bytes_written)})",
        f"{report.objects_deleted} deleted ({format_bytes(report.bytes_deleted)})",
    ]
    if report.temporaries_deleted:
        parts.append(f"{report.temporaries_deleted} stale temporary file(s) deleted")
    end = "; interrupted: the lease was lost" if report.interrupted else ""
    return "maintenance: " + ", ".join(parts) + end


async def maintain(args: argparse.Namespace, cli: Cli) -> int | None:
    require_metadata(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        while True:
            try:
                report = await admin.maintain(
                    grace=args.grace, orphan_grace=args.orphan_grace, lease_ttl=args.lease_ttl
                )
            except RetriableError as exc:
                if args.once:
                    raise
                cli.out.say("maintenance failed, trying again in "
                            f"{args.interval:g} s: " + " ".join(str(exc).split()))  # fmt: skip
            else:
                if args.format == "json":
                    cli.out.json(attrs.asdict(report))
                else:
                    cli.out.say(_summary(report))
                    for problem in report.problems:
                        cli.out.say("maintenance: " + " ".join(problem.split()))
                if args.once:
                    return 1 if report.problems else None
            await anyio.sleep(args.interval)


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``maintain`` to the command parser."""
    p = add_command(
        commands,
        "maintain",
        "apply retention, compact, merge small objects and delete garbage, in a loop",
        common,
    )
    p.add_argument("--once", action="store_true", help="run one pass, then exit")
    p.add_argument(
        "--interval", type=_positive_span, default=60.0, metavar="TIME",
        help="time between passes: 60, 30s, 5m",
    )  # fmt: skip
    p.add_argument(
        "--grace", type=time_span, default=60.0, metavar="TIME",
        help="how long objects nothing points into are kept, for readers that looked them "
        "up before (segments younger than this are not rewritten either)",
    )  # fmt: skip
    p.add_argument(
        "--orphan-grace", type=time_span, default=3600.0, metavar="TIME",
        help="how long an upload no producer committed is kept (at least the producers' "
        "delivery timeout)",
    )  # fmt: skip
    p.add_argument(
        "--lease-ttl", type=_positive_span, default=30.0, metavar="TIME",
        help="how long the lease outlives a maintainer killed mid-pass (the next waits)",
    )  # fmt: skip
    add_format_option(p)
    p.set_defaults(run=maintain)
