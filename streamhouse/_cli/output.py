"""Where a command writes: data on stdout, everything else on stderr.

stdout carries only data (records, tables, JSON documents), so that ``| jq``,
``| wc -l`` and ``| head`` see nothing else; summaries, progress and hints go
to stderr. Data is written as bytes, exactly as it came: nothing is decoded
on its way out.

A reader that goes away (``| head -2``) is a normal end: the write raises
:class:`StdoutClosed`, which a command may catch to finish its work (consume
commits what was written) and which otherwise ends the command with exit 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from rich.console import Console
from rich.table import Table

__all__ = ["RICH_ROWS", "Output", "StdoutClosed", "plain_table"]

# rich lays out a table cell by cell: 100,000 partitions took 41 s to print
# (measured: `topics describe` of a 100,000-partition topic), aligned plain
# columns take well under a second. Above this many rows, a terminal gets
# plain columns too.
RICH_ROWS = 1_000

Cell = str | int | None


class StdoutClosed(Exception):
    """Whoever read stdout went away (``| head``): a normal end, exit 0."""


class Output:
    """The command's two streams: ``data`` for stdout, ``say`` for stderr."""

    def __init__(self) -> None:
        self._stdout: BinaryIO = sys.stdout.buffer
        self.stdout_is_terminal = sys.stdout.isatty()
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def data(self, chunk: bytes) -> None:
        """Write ``chunk`` to stdout and flush it.

        Raises:
            StdoutClosed: the reader went away; stdout now leads nowhere.
        """
        with self._closing():
            self._stdout.write(chunk)
            self._stdout.flush()

    def json(self, document: object) -> None:
        """One JSON document on one line."""
        self.data(json.dumps(document).encode() + b"\n")

    def say(self, text: str) -> None:
        """A line for the person at the terminal (stderr), never markup."""
        self.err.print(text, markup=False)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Cell]], title: str) -> None:
        """Rows as a rich table on a terminal, else (or when long) as aligned plain columns.

        ``None`` cells show as ``-``; integer columns are right-aligned.
        """
        if not self.stdout_is_terminal or len(rows) > RICH_ROWS:
            self.data(plain_table(header, rows).encode())
            return
        table = Table(*header, title=title)
        for i, column in enumerate(table.columns):
            if i and _numeric(rows, i):
                column.justify = "right"
        for row in rows:
            table.add_row(*map(_cell, row))
        with self._closing():
            Console(file=sys.stdout, highlight=False).print(table)

    @contextlib.contextmanager
    def _closing(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError as exc:
            # Python flushes stdout once more at exit and would complain of
            # the broken pipe there: point the descriptor at /dev/null.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stdout.fileno())
            os.close(devnull)
            raise StdoutClosed from exc


def _cell(value: Cell) -> str:
    return "-" if value is None else str(value)


def _numeric(rows: Sequence[Sequence[Cell]], column: int) -> bool:
    return all(row[column] is None or isinstance(row[column], int) for row in rows)


def plain_table(header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """Columns separated by two spaces, numbers right-aligned, one row a line."""
    cells = [list(header), *([_cell(v) for v in row] for row in rows)]
    widths = [max(map(len, column)) for column in zip(*cells, strict=True)]
    right = [_numeric(rows, i) for i in range(len(header))]
    lines = [
        "  ".join(
            text.rjust(width) if r else text.ljust(width)
            for text, width, r in zip(line, widths, right, strict=True)
        ).rstrip()
        for line in cells
    ]
    return "\n".join(lines) + "\n"
