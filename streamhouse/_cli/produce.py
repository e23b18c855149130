"""``streamhouse produce TOPIC``: one record per line of stdin or ``--file``.

Lines are bytes: nothing is decoded, so any input, UTF-8 or not, goes in
exactly as it came. A line ends at ``\\n``, which is not part of the record;
everything else is (a ``\\r`` before it too). A last line without a newline
is a record as well.

Input is taken as it arrives (``os.read`` returns what is there), and
whatever has arrived while the previous batch was being written goes in the
next: a line typed at a terminal is sent when Enter is pressed, a file or a
busy pipe goes in large batches (as kcat and kafka-console-producer do).

A line whose record (key, value and headers) would be larger than 8 MiB is
refused by its line number, counted from 1, as soon as that much of it has
come; the lines before it are written.

Ctrl-C stops reading; the lines already read are written, the summary says
how many, and the command exits with 130. A store that stalls is waited for
(the producer's delivery timeout, 2 minutes, bounds it), saying so; a second
Ctrl-C quits at once, saying how many lines read were not written; a write
that fails says how many in its error.
"""

from __future__ import annotations

import argparse
import functools
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from .._errors import (
    DeliveryError,
    InvalidArgumentError,
    PartitionNotFoundError,
    StreamHouseError,
    raise_as_one,
)
from .._producer import Producer, open_producer
from .._producer.checks import check_headers
from .args import Subparsers, add_command, at_least, format_bytes, separator
from .common import Cli, require_metadata

__all__ = ["register"]

_READ_BYTES = 1 << 20
# One send_batch goes into one flush; the producer flushes at 4 MiB anyway.
_BATCH_BYTES = 4 << 20
# The producer's default, given to it here so that a line too long is refused
# as it is read, with its line number (the producer would tell neither).
_MAX_RECORD_BYTES = 8 << 20


class _Written:
    """What was read and written: lines, records in all, and the offsets per partition."""

    def __init__(self) -> None:
        self.read = 0  # lines read, counted by the reader as they come
        self.count = 0
        self.spans: dict[int, tuple[int, int]] = {}
        self.started = time.perf_counter()

    def add(self, partition: int, first: int, last: int) -> None:
        lo, hi = self.spans.get(partition, (first, last))
        self.spans[partition] = (min(lo, first), max(hi, last))

    def summary(self, topic: str) -> str:
        rate = self.count / max(time.perf_counter() - self.started, 1e-9)
        spans = sorted(self.spans.items())
        where = ", ".join(f"partition {p} offsets {a}..{b}" for p, (a, b) in spans[:8])
        if len(spans) > 8:
            where = f"{len(spans)} partitions"
        return (
            f"produced {self.count} records to {topic}"
            + (f": {where}" if where else "")
            + f" ({rate:,.0f} records/s)"
        )


def _headers(pairs: Sequence[str]) -> list[tuple[str, bytes]]:
    headers = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--header {pair!r} is not KEY=VALUE")
        try:
            name = os.fsencode(key).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgumentError(f"--header name {key!r} is not UTF-8") from None
        headers.append((name, os.fsencode(value)))
    return headers


def _open_input(name: str | None) -> tuple[int, int | None, Callable[[], None]]:
    """The input's descriptor, its size when it is a regular file, and how to close it."""
    if name is None or name == "-":
        if sys.stdin is None:
            raise InvalidArgumentError("there is no standard input; give --file")
        return sys.stdin.fileno(), None, lambda: None
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError as exc:
        raise InvalidArgumentError(
            f"--file {name!r} is not a readable file: {exc.strerror}"
        ) from exc
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        os.close(fd)
        raise InvalidArgumentError(f"--file {name!r} is not a readable file: it is a directory")
    return fd, info.st_size if stat.S_ISREG(info.st_mode) else None, lambda: os.close(fd)


async def _read_input(
    fd: int, chunks: MemoryObjectSendStream[bytes], cli: Cli, written: _Written
) -> None:
    with chunks, cli.stop_scope():
        while True:
            # Abandoned on Ctrl-C: a read from a terminal may never return.
            chunk = await anyio.to_thread.run_sync(os.read, fd, _READ_BYTES, abandon_on_cancel=True)
            if not chunk:
                return
            written.read += chunk.count(b"\n")  # lines in the channel are read: Ctrl-C writes them
            await chunks.send(chunk)


def _left(written: _Written, quitting: bool) -> str | None:
    """What Ctrl-C leaves to write, in one line (see Cli.finish_scope)."""
    unwritten = written.read - written.count
    if unwritten <= 0:
        return None
    if quitting:
        return (
            f"interrupted again: quit before {unwritten:,} lines read were written "
            f"({written.count:,} produced)"
        )
    return f"interrupted: writing the {unwritten:,} lines read (Ctrl-C again quits without them)"


def _split(lines: list[bytes], sep: bytes | None) -> tuple[list[bytes | None] | None, list[bytes]]:
    """Keys and values: ``KEY<sep>VALUE``, or a whole line as the value of no key."""
    if sep is None:
        return None, lines
    keys: list[bytes | None] = []
    values = []
    for line in lines:
        key, found, value = line.partition(sep)
        keys.append(key if found else None)
        values.append(value if found else line)
    return keys, values


async def _send(
    producer: Producer, args: argparse.Namespace, lines: list[bytes], written: _Written
) -> None:
    keys, values = _split(lines, args.key_separator)
    result = await producer.send_batch(
        args.topic, values, keys=keys, partition=args.partition,
        headers=[args.headers] * len(values) if args.headers else None,
    )  # fmt: skip
    if keys is None or args.partition is not None:  # one call, one partition
        offsets = result.offsets
        written.add(result[0].partition, offsets[0], offsets[-1])
    else:
        for md in result:
            written.add(md.partition, md.offset, md.offset)
    written.count += len(values)


class _Lines:
    """The input cut into lines, in time linear in its size.

    A line longer than a read arrives in pieces (a pipe gives 64 KiB a
    read): they are kept in a list and joined once, when the newline comes.
    Joining the unfinished line to each read and splitting it again, as this
    did, copied it once per read: cutting a 40 MB line read 64 KiB at a
    time took 22.1 s, now 0.07 s (200 MiB: 0.35 s; a user waited ten
    minutes before the record was refused).
    """

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self.unfinished = 0  # bytes of the line not ended yet
        self.count = 0  # lines ended so far

    def cut(self, chunk: bytes, out: list[bytes]) -> None:
        """Append to ``out`` the lines ``chunk`` ends; keep what follows its last newline."""
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if lines:
            if self._pieces:
                self._pieces.append(lines[0])
                lines[0] = b"".join(self._pieces)
                self._pieces = []
            out += lines
            self.count += len(lines)
            self.unfinished = 0
        if rest:
            self._pieces.append(rest)
            self.unfinished += len(rest)

    def last(self) -> bytes:
        """The line the input ended in without a newline (empty if none)."""
        return b"".join(self._pieces)


class _Limit:
    """How long a line may be: its record (key, value, headers) within max_record_bytes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._sep: bytes | None = args.key_separator
        # The separator is no part of the record, the headers are.
        self._room = _MAX_RECORD_BYTES - check_headers(args.headers)[1]

    def first_too_long(self, lines: list[bytes]) -> int | None:
        """The index of the first line whose record would be too large, or None."""
        if max(map(len, lines), default=0) <= self._room:  # the common case: one C loop
            return None
        for i, line in enumerate(lines):
            size = len(line) - (len(self._sep) if self._sep and self._sep in line else 0)
            if size > self._room:
                return i
        return None

    def unfinished_too_long(self, size: int) -> bool:
        """Whether a line not ended yet is already too long, whatever follows."""
        return size - len(self._sep or b"") > self._room

    @staticmethod
    def refuse(number: int) -> InvalidArgumentError:
        before = f"; the {number - 1:,} lines before it were produced" if number > 1 else ""
        return InvalidArgumentError(
            f"line {number:,} is too long: a record holds at most {_MAX_RECORD_BYTES:,} bytes "
            f"({format_bytes(_MAX_RECORD_BYTES)}), key, value and headers together{before}"
        )


async def _send_checked(
    producer: Producer,
    args: argparse.Namespace,
    lines: list[bytes],
    first: int,
    limit: _Limit,
    written: _Written,
) -> None:
    """Send ``lines`` (the first is line number ``first``); a line too long is
    refused after the lines before it were written."""
    bad = limit.first_too_long(lines)
    good = lines if bad is None else lines[:bad]
    if good:
        await _send(producer, args, good, written)
    if bad is not None:
        raise limit.refuse(first + bad)


async def _send_lines(
    chunks: MemoryObjectReceiveStream[bytes],
    producer: Producer,
    args: argparse.Namespace,
    cli: Cli,
    written: _Written,
    progress: Callable[[int], None],
) -> None:
    cutter = _Lines()
    limit = _Limit(args)
    with chunks:
        async for chunk in chunks:
            first = cutter.count + 1
            lines: list[bytes] = []
            cutter.cut(chunk, lines)
            size = len(chunk)
            while size < _BATCH_BYTES:  # take whatever else has arrived meanwhile
                try:
                    more = chunks.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                cutter.cut(more, lines)
                size += len(more)
            await _send_checked(producer, args, lines, first, limit, written)
            if limit.unfinished_too_long(cutter.unfinished):  # refused before it is all read
                raise limit.refuse(cutter.count + 1)
            progress(size)
    last = cutter.last()
    if last and not cli.interrupted:  # a half-typed line is dropped by Ctrl-C
        written.read += 1
        await _send_checked(producer, args, [last], cutter.count + 1, limit, written)


async def _produce_input(
    fd: int,
    producer: Producer,
    args: argparse.Namespace,
    cli: Cli,
    written: _Written,
    progress: Callable[[int], None],
) -> None:
    """Read the input and write its lines; Ctrl-C stops the reading only."""
    # Read ahead while a batch is written: 16 reads (16 MiB) at most.
    send, receive = anyio.create_memory_object_stream[bytes](16)
    try:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_read_input, fd, send, cli, written)
                await _send_lines(receive, producer, args, cli, written, progress)
        except BaseExceptionGroup as group:
            raise_as_one(group)
    except StreamHouseError as exc:
        if not cli.interrupted:
            raise
        raise DeliveryError(
            f"interrupted: {written.read - written.count:,} lines read were not written "
            f"({written.count:,} produced): {exc}"
        ) from exc


async def produce(args: argparse.Namespace, cli: Cli) -> None:
    require_metadata(args)
    args.headers = _headers(args.header)  # bad headers are refused before anything is read
    fd, size, close = await anyio.to_thread.run_sync(_open_input, args.file, abandon_on_cancel=True)
    interactive = os.isatty(fd)
    written = _Written()
    try:
        with Progress(
            TextColumn("producing"), BarColumn(), TimeRemainingColumn(), console=cli.out.err,
            disable=interactive or args.file is None or not cli.out.err.is_terminal,
        ) as bar:  # fmt: skip
            task: TaskID = bar.add_task("produce", total=size)
            async with open_producer(
                storage=args.storage, metadata=args.metadata,
                linger=0 if interactive else 0.05, max_record_bytes=_MAX_RECORD_BYTES,
            ) as producer:  # fmt: skip
                count = len(await producer.partitions_for(args.topic))  # the topic exists
                if args.partition is not None and args.partition >= count:
                    raise PartitionNotFoundError(
                        f"topic {args.topic!r} has partitions 0..{count - 1}; "
                        f"there is no partition {args.partition}"
                    )
                # From here, Ctrl-C stops the reading, not the writing of what was read.
                with cli.finish_scope(functools.partial(_left, written)):
                    await _produce_input(
                        fd, producer, args, cli, written, lambda n: bar.update(task, advance=n)
                    )
    finally:
        close()
    cli.out.say(("interrupted: " if cli.interrupted else "") + written.summary(args.topic))


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``produce`` to the command parser."""
    p = add_command(commands, "produce", "produce one record per line of stdin or --file", common)
    p.add_argument("topic", help="the topic to write to")
    p.add_argument("--file", metavar="PATH", help="read lines from PATH instead of stdin")
    p.add_argument(
        "--key-separator",
        metavar="SEP",
        type=separator,
        help=r"split each line at the first SEP into KEY and VALUE (\t for a tab); "
        "a line without SEP is a value with no key",
    )
    p.add_argument(
        "--partition",
        type=at_least(0),
        help="write every record to this partition (default: keyed records by key, "
        "others to one partition per batch)",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K=V",
        help="add this header to every record (repeatable)",
    )
    p.set_defaults(run=produce)
