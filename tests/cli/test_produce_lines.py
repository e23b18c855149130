"""How produce cuts its input into lines: wherever the reads end, and a line too long."""

from __future__ import annotations

import contextlib
import itertools
import subprocess

from streamhouse._cli.produce import _Lines

from .conftest import Shell

LIMIT = 8 * 2**20  # the most a record holds: key, value and headers


def test_lines_are_cut_the_same_wherever_the_reads_end() -> None:
    """Every way of cutting the input in three reads gives the same lines."""
    data = b"ab\n\ncdefg\nh\n\nlast"
    expected = data.split(b"\n")
    for i, j in itertools.combinations_with_replacement(range(len(data) + 1), 2):
        cutter = _Lines()
        lines: list[bytes] = []
        for chunk in (data[:i], data[i:j], data[j:]):
            cutter.cut(chunk, lines)
        assert [*lines, cutter.last()] == expected, (i, j)
        assert cutter.count == len(expected) - 1
        assert cutter.unfinished == len(b"last")


def test_long_lines_through_a_pipe_come_back_exactly(sh: Shell) -> None:
    """Lines of several MiB (a pipe gives 64 KiB a read) are records as they were."""
    sh.ok("topics", "create", "t")
    lines = [b"k1:" + bytes(range(11, 256)) * 12_000, b"", b"k2:short", b"x" * (LIMIT - 1)]
    sh.ok("produce", "t", stdin=b"\n".join(lines))
    out = sh.ok("consume", "t").encode(errors="surrogateescape")
    assert out.split(b"\n") == [*lines, b""]


def test_a_line_too_long_is_refused_before_the_rest_is_read(sh: Shell) -> None:
    """A line longer than a record may be is refused once that much of it came,
    with its line number; the lines before it are written."""
    sh.ok("topics", "create", "t")
    proc = sh.popen("produce", "t", stdin=subprocess.PIPE)
    assert proc.stdin is not None
    piece = b"x" * 65536
    with contextlib.suppress(BrokenPipeError):  # it may stop reading before the last piece
        proc.stdin.write(b"one\ntwo\n")
        for _ in range(LIMIT // len(piece) + 2):
            proc.stdin.write(piece)
        proc.stdin.flush()
    # Its input is still open: only a refusal ends it (before, it waited for the line's end).
    assert proc.wait(timeout=60) == 1
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert err == (
        "error: line 3 is too long: a record holds at most 8,388,608 bytes (8MiB), key, value "
        "and headers together; the 2 lines before it were produced\n"
    )
    assert sh.ok("consume", "t").splitlines() == ["one", "two"]


def test_a_line_too_long_for_a_record_is_refused_with_its_number(sh: Shell) -> None:
    """A line whose record is too large, the separator aside, is refused by number;
    nothing after it is written."""
    sh.ok("topics", "create", "t")
    lines = [b"a:1", b"b", b"y" * (LIMIT + 1), b"after"]  # no separator: all of it is the value
    result = sh.run("produce", "t", "--key-separator", ":", stdin=b"\n".join(lines))
    assert result.returncode == 1
    assert result.stderr.decode().startswith("error: line 3 is too long: ")
    assert "the 2 lines before it were produced\n" in result.stderr.decode()
    assert "max_record_bytes" not in result.stderr.decode()
    assert sh.ok("consume", "t").splitlines() == ["1", "b"]
