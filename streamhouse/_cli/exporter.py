"""``streamhouse exporter [--port 9308] [--interval 15] [--group G]...``: lag for Prometheus.

Serves ``/metrics`` with kafka_exporter's names (docs/METRICS.md), read
from the metadata store every ``--interval`` seconds in one query; no
object store is touched. It runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import functools

import anyio

from .._errors import raise_as_one
from .._exporter import serve_exporter
from .args import Subparsers, add_command, port_number, seconds
from .common import Cli, open_metadata, require_metadata

__all__ = ["register"]


async def exporter(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    meta = open_metadata(args)
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                functools.partial(
                    serve_exporter, meta, host=args.host, port=args.port,
                    interval=args.interval, groups=args.group,
                )
            )  # fmt: skip
            cli.out.say(f"serving http://{args.host}:{port}/metrics (Ctrl-C stops)")
    except BaseExceptionGroup as group:  # a start that failed: its one error, not a traceback
        raise_as_one(group)
    finally:
        await meta.aclose()


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``exporter`` to the command parser."""
    p = add_command(
        commands, "exporter",
        "serve consumer group lag and partition offsets to Prometheus (kafka_exporter's names)",
        common,
    )  # fmt: skip
    p.add_argument("--port", type=port_number, default=9308, help="the HTTP port (0: any free one)")
    p.add_argument(
        "--host", default="127.0.0.1",
        help="the address to listen on (0.0.0.0: every interface, for a remote Prometheus)",
    )  # fmt: skip
    p.add_argument(
        "--interval", type=seconds, default=15.0, metavar="SECONDS",
        help="seconds between reads of the metadata store",
    )  # fmt: skip
    p.add_argument(
        "--group", action="append", metavar="G",
        help="only this consumer group (repeat for more; default: every group)",
    )  # fmt: skip
    p.set_defaults(run=exporter)
