"""``streamhouse groups list | describe GROUP | reset-offsets GROUP --topic T``.

``reset-offsets`` shows its plan and changes nothing unless ``--execute`` is
given, as kafka-consumer-groups does.
"""

from __future__ import annotations

import argparse
import time

from .._admin import Admin, GroupMember, open_admin
from .._errors import InvalidArgumentError
from .._names import check_group_id
from .._types import TopicPartition
from .args import Subparsers, add_command, add_format_option, add_group, at_least
from .common import Cli, require_metadata

__all__ = ["register"]

_LAG_HEADER = ["topic", "partition", "committed", "high watermark", "lag", "member"]
_MEMBER_HEADER = ["member", "instance", "epoch", "partitions", "last heartbeat"]


async def groups_list(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        groups = await admin.list_groups()
    if args.format == "json":
        cli.out.json([{"name": group} for group in groups])
    else:
        cli.out.table(["group"], [(group,) for group in groups], "groups")


_LagRow = tuple[str, int, int | None, int, int | None, str | None]


async def _describe(admin: Admin, group: str) -> tuple[list[_LagRow], list[GroupMember]]:
    """Every partition of the group's topics (committed offset, lag, owner), and its members."""
    rows = await admin.describe_group(group)
    members = await admin.describe_group_members(group)
    if not rows and not members:
        raise InvalidArgumentError(f"group {group!r} has no committed offsets and no members")
    done = {TopicPartition(r.topic, r.partition): r for r in rows}
    owners = {tp: m.member_id for m in members for tp in m.assignment}
    topics = {r.topic for r in rows} | {tp.topic for tp in owners}
    table: list[_LagRow] = []
    for topic in sorted(topics):
        for p in (await admin.describe_topic(topic)).partitions:
            tp = TopicPartition(topic, p.partition)
            row = done.get(tp)
            if row is None:  # no commit: its lag depends on the consumer's offset reset
                table.append((topic, p.partition, None, p.high_watermark, None, owners.get(tp)))
            else:
                table.append((topic, p.partition, row.committed, p.high_watermark, row.lag,
                              owners.get(tp)))  # fmt: skip
    return table, members


def _partitions(tps: frozenset[TopicPartition]) -> str:
    return " ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps))


async def groups_describe(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    async with open_admin(storage=args.storage, metadata=args.metadata) as admin:
        rows, members = await _describe(admin, args.group)
    if args.format == "json":
        keys = ["topic", "partition", "committed", "high_watermark", "lag", "member_id"]
        partitions = [dict(zip(keys, row, strict=True)) for row in rows]
        cli.out.json({
            "group": args.group, "partitions": partitions,
            "members": [
                {"member_id": m.member_id, "instance_id": m.instance_id, "epoch": m.epoch,
                 "assignment": [{"topic": tp.topic, "partition": tp.partition}
                                for tp in sorted(m.assignment)],
                 "last_heartbeat": m.last_heartbeat}
                for m in members
            ],
        })  # fmt: skip
    else:
        cli.out.table(_LAG_HEADER, rows, f"group {args.group}")
        if members:
            table = [(m.member_id, m.instance_id, m.epoch, _partitions(m.assignment),
                      time.strftime("%H:%M:%S", time.localtime(m.last_heartbeat)))
                     for m in members]  # fmt: skip
            cli.out.table(_MEMBER_HEADER, table, f"members of group {args.group}")


async def _plan(admin: Admin, args: argparse.Namespace) -> list[tuple[int, int | None, int]]:
    """Per partition of the topic: the committed offset now, and the one it would get."""
    check_group_id(args.group)
    topic = await admin.describe_topic(args.topic)
    committed = {
        r.partition: r.committed for r in await admin.describe_group(args.group)
        if r.topic == args.topic
    }  # fmt: skip
    known = {p.partition for p in topic.partitions}
    missing = sorted(set(args.partitions or ()) - known)
    if missing:
        raise InvalidArgumentError(f"topic {args.topic!r} has no partition {missing}")
    plan = []
    for p in topic.partitions:
        if args.partitions and p.partition not in args.partitions:
            continue
        if args.to_offset is not None:
            if not p.log_start_offset <= args.to_offset <= p.high_watermark:
                raise InvalidArgumentError(
                    f"offset {args.to_offset} is outside partition {p.partition} of "
                    f"{args.topic!r}: [{p.log_start_offset}, {p.high_watermark}] (--partition "
                    "resets only the partitions named)"
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
            applied = await admin.reset_offsets(
                args.group, args.topic, to, partitions=args.partitions
            )
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
    p.add_argument(
        "--partition",
        dest="partitions",
        type=at_least(0),
        action="append",
        metavar="P",
        help="only partition P (repeat for more; default: every partition of the topic)",
    )
    p.add_argument("--execute", action="store_true", help="apply the plan (default: show it)")
    add_format_option(p)
    p.set_defaults(run=groups_reset)
