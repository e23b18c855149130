"""The ``streamhouse`` command: the parser, the runner, the exit codes.

Every command runs on the stores named by ``--storage`` and ``--metadata``
(before or after the command, or ``STREAMHOUSE_STORAGE`` /
``STREAMHOUSE_METADATA``), else on the embedded default in
``$STREAMHOUSE_HOME`` or ``./streamhouse-data``. stdout carries only data;
everything else goes to stderr (see output.py). How Ctrl-C reaches a
command is in common.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.abc

from .._errors import StreamHouseError
from .._version import __version__
from . import consume, demo, exporter, groups, maintain, produce, storage, top, topics
from .args import Formatter, global_options
from .common import Cli
from .output import Output, StdoutClosed

__all__ = ["EXIT_CODES", "build_parser", "main"]

EXIT_CODES = """\
exit codes:
  0    done; also when stdout's reader goes away (| head), and when consume
       is stopped by Ctrl-C after committing what it printed
  1    an error, told in one line on stderr: "error: ..."
  2    a usage error: a missing or bad option, a number out of range
  130  interrupted by Ctrl-C (SIGINT); 143 by SIGTERM
"""

Command = Callable[[argparse.Namespace, Cli], Awaitable[int | None]]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; global options go before or after the command."""
    parser = argparse.ArgumentParser(
        prog="streamhouse",
        description="A Kafka-like streaming log on S3-compatible object storage.",
        epilog=EXIT_CODES,
        parents=[global_options(top=True)],
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"streamhouse {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do"
    )
    common = global_options(top=False)
    for module in (topics, produce, consume, groups, maintain, exporter, top, storage, demo):
        module.register(commands, common)
    return parser


async def _watch_signals(cli: Cli, command: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if cli.interrupted:  # a second Ctrl-C: the user does not want to wait
                line = cli.last_line()
                if line is not None:
                    cli.out.say(line)
                sys.stderr.flush()
                os._exit(128 + signum)
            cli.interrupt(signum, command.cancel)


async def _run(run: Command, args: argparse.Namespace, cli: Cli) -> int | None:
    """Run the command beside the signal watcher; its exit code, None when cancelled."""
    codes: list[int | None] = []
    errors: list[Exception] = []
    async with anyio.create_task_group() as tg:
        # The command has a scope of its own: a first signal that cancels it
        # leaves the watcher watching, so that a second one still ends the
        # process at once while the command cleans up. When the watcher went
        # with the command, the second was trio's KeyboardInterrupt, raised
        # wherever the cleanup was: once (produce's shielded close, its store
        # stalled) it came out inside an exception group, a traceback.
        with anyio.CancelScope() as command:
            tg.start_soon(_watch_signals, cli, command)
            try:
                codes.append(await run(args, cli))
            except Exception as exc:  # raised below as itself, not in a group
                errors.append(exc)
            finally:
                tg.cancel_scope.cancel()
    if errors:
        raise errors[0]
    return codes[0] if codes else None


def _log_to_stderr(verbosity: int) -> None:
    """``-v``: StreamHouse's INFO lines (and WARNINGs) on stderr; ``-vv``: DEBUG too."""
    if verbosity <= 0:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("streamhouse")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _log_to_stderr(args.verbose)
    cli = Cli(Output())
    try:
        code = anyio.run(_run, args.run, args, cli, backend="trio")
    except StdoutClosed:
        return 0
    except StreamHouseError as exc:
        if cli.signal is not None and exc is not cli.unfinished_error:
            return 128 + cli.signal  # the interruption's own doing; Ctrl-C says enough
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    if cli.signal is not None and (code is None or cli.signal != signal.SIGINT):
        return 128 + cli.signal
    return code or 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the runner watches signals, or after
        return 128 + signal.SIGINT
