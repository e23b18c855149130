"""``streamhouse groups list | describe GROUP | reset-offsets GROUP --topic T``.

``reset-offsets`` shows its plan and changes nothing unless ``--execute`` is
given, as kafka-consumer-groups does.
"""

from __future__ import annotations

import argparse

from .._admin import Admin, open_admin
from .._errors import InvalidArgumentError
from .._names import check_group_id
from .._types import TopicPartition
from .args import Subparsers, add_command, add_format_option, add_group, at_least
from .common import Cli, require_metadata

__all__ = ["register"]

_LAG_HEADER = ["topic", "partition", "committed", "high watermark", "lag"]


async def groups_list(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        groups = await admin.list_groups()
    if args.format == "json":
        cli.out.json([{"name": group} for group in groups])
    else:
        cli.out.table(["group"], [(group,) for group in groups], "groups")


_LagRow = tuple[str, int, int | None, int, int | None]


async def _describe(admin: Admin, group: str) -> list[_LagRow]:
    """Every partition of the group's topics: committed offset and lag, or None."""
    rows = await admin.describe_group(group)
    if not rows:
        raise InvalidArgumentError(f"group {group!r} has no committed offsets")
    done = {TopicPartition(r.topic, r.partition): r for r in rows}
    table: list[_LagRow] = []
    for topic in sorted({r.topic for r in rows}):
        for p in (await admin.describe_topic(topic)).partitions:
            row = done.get(TopicPartition(topic, p.partition))
            if row is None:  # no commit: its lag depends on the consumer's offset reset
                table.append((topic, p.partition, None, p.high_watermark, None))
            else:
                table.append((topic, p.partition, row.committed, p.high_watermark, row.lag))
    return table


async def groups_describe(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        rows = await _describe(admin, args.group)
    if args.format == "json":
        keys = ["topic", "partition", "committed", "high_watermark", "lag"]
        partitions = [dict(zip(keys, row, strict=True)) for row in rows]
        cli.out.json({"group": args.group, "partitions": partitions})
    else:
        cli.out.table(_LAG_HEADER, rows, f"group {args.group}")


async def _plan(admin: Admin, args: argparse.Namespace) -> list[tuple[int, int | None, int]]:
    """Per partition of the topic: the committed offset now, and the one it would get."""
    check_group_id(args.group)
    topic = await admin.describe_topic(args.topic)
    committed = {
        r.partition: r.committed for r in await admin.describe_group(args.group)
        if r.topic == args.topic
    }  # fmt: skip
    plan = []
    for p in topic.partitions:
        if args.to_offset is not None:
            if not p.log_start_offset <= args.to_offset <= p.high_watermark:
                raise InvalidArgumentError(
                    f"offset {args.to_offset} is outside partition {p.partition} of "
                    f"{args.topic!r}: [{p.log_start_offset}, {p.high_watermark}]"
                )
            new = args.to_offset
        else:
            new = p.log_start_offset if args.to_earliest else p.high_watermark
        plan.append((p.partition, committed.get(p.partition), new))
    return plan


async def groups_reset(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    to: str | int = (
        "earliest" if args.to_earliest else "latest" if args.to_latest else args.to_offset
    )
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        plan = await _plan(admin, args)
        if args.execute:
            applied = await admin.reset_offsets(args.group, args.topic, to)
            plan = [(p, now, applied[TopicPartition(args.topic, p)]) for p, now, _ in plan]
    if args.format == "json":
        cli.out.json({
            "group": args.group, "topic": args.topic, "executed": args.execute,
            "partitions": [{"partition": p, "committed": now, "new": new}
                           for p, now, new in plan],
        })  # fmt: skip
    else:
        rows = [(args.topic, p, now, new) for p, now, new in plan]
        cli.out.table(["topic", "partition", "committed", "new"], rows, f"group {args.group}")
    if args.execute:
        cli.out.say(f"reset group {args.group} on {len(plan)} partition(s) of {args.topic}")
    else:
        cli.out.say("this is the plan; nothing changed: add --execute to apply it")


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``groups`` and its actions to the command parser."""
    actions = add_group(commands, "groups", "list, describe, reset consumer groups")
    p = add_command(actions, "list", "list groups with committed offsets", common)
    add_format_option(p)
    p.set_defaults(run=groups_list)
    p = add_command(
        actions, "describe", "committed offset and lag on every partition of its topics", common
    )
    p.add_argument("group", help="the consumer group")
    add_format_option(p)
    p.set_defaults(run=groups_describe)
    p = add_command(
        actions, "reset-offsets", "show (and with --execute, apply) new offsets", common
    )
    p.add_argument("group", help="the consumer group")
    p.add_argument("--topic", required=True, help="the topic whose partitions move")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="to each partition's log start")
    to.add_argument("--to-latest", action="store_true", help="to each high watermark")
    to.add_argument("--to-offset", type=at_least(0), metavar="N", help="to offset N")
    p.add_argument("--execute", action="store_true", help="apply the plan (default: show it)")
    add_format_option(p)
    p.set_defaults(run=groups_reset)
