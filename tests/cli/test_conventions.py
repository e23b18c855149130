"""What a shell user expects of a command (kcat, kafka-console-*, coreutils).

Each test runs the installed command with real pipes, a pseudo-terminal, or
signals, the way a person at a shell would.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streamhouse._cli.main import build_parser

from .conftest import STREAMHOUSE, Shell, committed, produce, rows, wait_for_record


def test_stdout_carries_only_data(sh: Shell) -> None:
    """Summaries go to stderr, so JSON on stdout parses line by line."""
    assert sh.ok("topics", "create", "t") == ""
    assert sh.ok("produce", "t", stdin="one\ntwo\n") == ""
    out, err = sh.ok_both("consume", "t", "--group", "g", "--format", "json")
    assert [json.loads(line)["value"] for line in out.splitlines()] == ["one", "two"]
    assert err == "consumed 2 records; committed for group g\n"
    out, err = sh.ok_both("groups", "reset-offsets", "g", "--topic", "t", "--to-earliest")
    assert rows(out) == [["t", "0", "2", "0"]]
    assert "nothing changed" in err


def test_a_closed_pipe_ends_quietly_and_commits_what_was_written(sh: Shell) -> None:
    """consume | head -2 exits 0 without a traceback and commits only what reached the pipe."""
    sh.ok("topics", "create", "t")
    total = 200_000  # 1.3 MB: far more than a pipe holds
    sh.ok("produce", "t", stdin="".join(f"{i}\n" for i in range(total)))
    proc = sh.popen("consume", "t", "--group", "g")
    assert proc.stdout is not None
    assert [proc.stdout.readline() for _ in range(2)] == [b"0\n", b"1\n"]
    proc.stdout.close()  # what head does after two lines
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0
    err = stderr.decode()
    count = int(err.removeprefix("consumed ").split()[0])
    assert err == f"consumed {count} records; committed for group g\n"
    assert 2 <= count < total
    assert committed(sh, "g") == {("t", 0): count}
    # Any command: a table longer than the pipe holds, its reader gone.
    sh.ok("topics", "create", "wide", "--partitions", "5000")
    proc = sh.popen("topics", "describe", "wide")
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.communicate(timeout=60)[1] == b""
    assert proc.returncode == 0


def test_ctrl_c_during_produce_prints_one_line_and_exits_130(sh: Shell) -> None:
    """SIGINT while produce waits for input (from a pipe or --file) writes what it read."""
    sh.ok("topics", "create", "piped")
    sh.ok("topics", "create", "filed")
    fifo = sh.home / "fifo"
    os.mkfifo(fifo)
    for topic, args in [("piped", []), ("filed", ["--file", str(fifo)])]:
        proc = sh.popen("produce", topic, *args, stdin=subprocess.PIPE)
        writer = proc.stdin if not args else fifo.open("wb")  # a FIFO opens when both ends do
        assert writer is not None
        writer.write(b"first\nhalf a li")
        writer.flush()
        assert wait_for_record(sh, topic) == b"first\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        writer.close()
        assert proc.returncode == 130
        assert err.decode().startswith(f"interrupted: produced 1 records to {topic}: partition 0")
        assert err.count(b"\n") == 1
        assert sh.ok("consume", topic) == "first\n"  # the half-typed line was not sent


def test_ctrl_c_during_the_demo_prints_nothing_and_exits_130(sh: Shell) -> None:
    """SIGINT in the middle of the demo ends it with exit 130 and no traceback."""
    proc = sh.popen("demo", "--records", "5000000")
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith(b"StreamHouse demo on")
    assert proc.stderr.readline().startswith(b"1. created topic demo-")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert (out, err) == (b"", b"")


def test_produce_sends_each_line_as_typed_at_a_terminal(sh: Shell) -> None:
    """With stdin a terminal, a line is written when Enter is pressed, not at EOF."""
    sh.ok("topics", "create", "t")
    controller, terminal = pty.openpty()
    proc = sh.popen("produce", "t", stdin=terminal)
    os.close(terminal)
    try:
        os.write(controller, b"typed \xff line\n")
        assert wait_for_record(sh, "t") == b"typed \xff line\n"
        assert proc.poll() is None  # still reading the terminal
        os.write(controller, b"second\n\x04")  # Ctrl-D ends the input
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
    assert proc.returncode == 0
    assert err.startswith(b"produced 2 records to t: partition 0 offsets 0..1")


def test_tables_are_drawn_on_a_terminal_and_plain_in_a_pipe(sh: Shell) -> None:
    """A terminal gets a drawn table; a pipe gets aligned columns for awk."""
    sh.ok("topics", "create", "t", "--partitions", "2")
    controller, terminal = pty.openpty()
    proc = sh.popen("topics", "describe", "t", stdout=terminal)
    os.close(terminal)
    screen = b""
    while chunk := _read(controller):
        screen += chunk
    os.close(controller)
    assert proc.communicate(timeout=60)[1] == b""
    assert proc.returncode == 0
    assert b"\xe2\x94\x82" in screen  # the box-drawing bar of a rich table
    assert "│" not in sh.ok("topics", "describe", "t")


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal's last writer has gone
        return b""


def test_bytes_go_in_and_come_out_exactly(sh: Shell) -> None:
    """Non-UTF-8 keys and values, \\r and tabs travel untouched through stdin and --file."""
    sh.ok("topics", "create", "t")
    data = b"k\xff\tv\xfe\r\nno separator \xc3\n\t\n"
    sh.ok("produce", "t", "--key-separator", r"\t", stdin=data)
    (sh.home / "bin.txt").write_bytes(b"\x00\x80\x81")
    sh.ok("produce", "t", "--file", "bin.txt")
    result = sh.run("consume", "t", "--key-separator", r"\t", "--null", "<none>")
    assert result.stdout == (
        b"k\xff\tv\xfe\r\n<none>\tno separator \xc3\n\t\n<none>\t\x00\x80\x81\n"
    )
    first = json.loads(sh.ok("consume", "t", "--format", "json", "--max", "1"))
    assert first["key"] == {"base64": "a/8="}
    assert first["value"] == {"base64": "dv4N"}


def test_a_null_value_and_the_text_none_print_differently(sh: Shell) -> None:
    """A null value prints as --null's text (null), the text None as None; JSON tells exactly."""
    sh.ok("topics", "create", "t")
    script = (
        "import trio, streamhouse\n"
        "async def main():\n"
        "    async with streamhouse.open_producer(linger=0) as p:\n"
        "        await p.send('t', None, key=b'k')\n"
        "trio.run(main)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=sh.home, env=sh.env)
    produce(sh, "t", ["None", ""])
    assert sh.run("consume", "t").stdout == b"null\nNone\n\n"
    values = [json.loads(line)["value"] for line in sh.ok("consume", "t", "--format", "json")
              .splitlines()]  # fmt: skip
    assert values == [None, "None", ""]


def test_reset_offsets_shows_the_plan_and_applies_it_only_with_execute(sh: Shell) -> None:
    """Without --execute nothing changes; with it, the plan is what gets written."""
    sh.ok("topics", "create", "t", "--partitions", "2")
    sh.ok("produce", "t", "--partition", "1", stdin="a\nb\nc\n")
    sh.ok("consume", "t", "--group", "g")
    plan = sh.json("groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "0")
    assert plan == {
        "group": "g", "topic": "t", "executed": False,
        "partitions": [{"partition": 0, "committed": None, "new": 0},
                       {"partition": 1, "committed": 3, "new": 0}],
    }  # fmt: skip
    assert committed(sh, "g") == {("t", 0): None, ("t", 1): 3}
    out = sh.ok("groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "0", "--execute")
    assert rows(out) == [["t", "0", "-", "0"], ["t", "1", "3", "0"]]
    assert committed(sh, "g") == {("t", 0): 0, ("t", 1): 0}


def test_reset_offsets_of_named_partitions_leaves_the_others(sh: Shell) -> None:
    """--partition resets only the partitions named (an offset outside the
    others' range is then no error); a partition the topic lacks is refused."""
    sh.ok("topics", "create", "t", "--partitions", "3")
    sh.ok("produce", "t", "--partition", "1", stdin="a\nb\nc\n")
    sh.ok("consume", "t", "--group", "g")
    reset = ["groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "1"]
    outside = sh.run(*reset, "--execute")
    assert outside.returncode == 1
    assert b"(--partition resets only the partitions named)" in outside.stderr
    out = sh.ok(*reset, "--partition", "1", "--execute")
    assert rows(out) == [["t", "1", "3", "1"]]
    assert committed(sh, "g") == {("t", 0): None, ("t", 1): 1, ("t", 2): None}
    refused = sh.run(*reset, "--partition", "1", "--partition", "7")
    assert refused.returncode == 1
    assert refused.stderr == b"error: topic 't' has no partition [7]\n"


def test_groups_describe_shows_every_partition_of_the_groups_topics(sh: Shell) -> None:
    """Partitions without a commit are listed too, with no committed offset and no lag."""
    sh.ok("topics", "create", "t", "--partitions", "3")
    sh.ok("produce", "t", "--partition", "1", stdin="a\nb\n")
    sh.ok("produce", "t", "--partition", "2", stdin="c\n")
    sh.ok("consume", "t", "--group", "g")
    sh.ok("produce", "t", "--partition", "2", stdin="d\n")
    assert rows(sh.ok("groups", "describe", "g")) == [
        ["t", "0", "-", "0", "-", "-"], ["t", "1", "2", "2", "0", "-"],
        ["t", "2", "1", "2", "1", "-"],
    ]  # fmt: skip
    assert sh.json("groups", "describe", "g") == {
        "group": "g",
        "partitions": [
            {"topic": "t", "partition": 0, "committed": None, "high_watermark": 0, "lag": None,
             "member_id": None},
            {"topic": "t", "partition": 1, "committed": 2, "high_watermark": 2, "lag": 0,
             "member_id": None},
            {"topic": "t", "partition": 2, "committed": 1, "high_watermark": 2, "lag": 1,
             "member_id": None},
        ],
        "members": [],
    }  # fmt: skip


def test_admin_commands_answer_in_json(sh: Shell) -> None:
    """--format json on topics list/describe and groups list."""
    sh.ok("topics", "create", "a", "--partitions", "2")
    sh.ok("topics", "create", "b")
    produce(sh, "b", ["x"])
    sh.ok("consume", "b", "--group", "g")
    assert sh.json("topics", "list") == [{"name": "a", "partitions": 2},
                                         {"name": "b", "partitions": 1}]  # fmt: skip
    described = sh.json("topics", "describe", "b")
    assert described["name"] == "b"
    (partition,) = described["partitions"]
    assert partition == {"partition": 0, "log_start_offset": 0, "high_watermark": 1,
                         "segments": 1, "bytes": partition["bytes"]}  # fmt: skip
    assert partition["bytes"] > 0
    assert sh.json("groups", "list") == [{"name": "g"}]


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_every_option_has_help_and_shows_its_default(sh: Shell) -> None:
    """Each option of each command explains itself; defaults and exit codes are in the help."""
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            assert action.help, f"{parser.prog} {action.dest} has no help"
    help_text = " ".join(sh.ok("consume", "--help").split())
    assert "(default: earliest)" in help_text
    assert "(default: null)" in help_text
    assert "--storage URL" in help_text  # the global options, after the command too
    assert "(default: 1)" in sh.ok("topics", "create", "--help")
    assert "130  interrupted by Ctrl-C (SIGINT)" in sh.ok("--help")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for code in (0, 1, 2, 130):
        assert f"\n| {code} | " in readme  # the README's table of exit codes


def test_read_only_commands_create_nothing(sh: Shell) -> None:
    """In an empty directory, reading commands fail clearly and create no data directory."""
    for args in [["topics", "list"], ["topics", "describe", "t"], ["groups", "list"],
                 ["groups", "describe", "g"], ["consume", "t"], ["produce", "t"]]:  # fmt: skip
        result = sh.run(*args, stdin="x\n")
        assert result.returncode == 1, args
        assert b"there is no StreamHouse metadata here" in result.stderr
        assert result.stderr.count(b"\n") == 1
        assert list(sh.home.iterdir()) == []
    missing = sh.home / "nonexistent" / "dir"
    result = sh.run("--metadata", f"sqlite:///{missing}/meta.db", "topics", "list")
    assert result.returncode == 1
    assert f"directory '{missing}' does not exist".encode() in result.stderr
    assert not (sh.home / "nonexistent").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["consume", "t", "--max", "0"],
        ["consume", "t", "--max", "-1"],
        ["consume", "t", "--max", "many"],
        ["demo", "--records", "-5"],
        ["topics", "create", "t", "--partitions", "0"],
        ["produce", "t", "--partition", "-1"],
        ["groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "-1"],
        ["produce", "t", "--key-separator", ""],
        ["exporter", "--port", "70000"],
    ],
)
def test_numbers_out_of_range_are_usage_errors(sh: Shell, args: list[str]) -> None:
    """Out-of-range numbers exit 2 with the command's usage, like any usage error."""
    result = sh.run(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(b"usage: streamhouse ")
    assert b"error: argument" in result.stderr
    assert list(sh.home.iterdir()) == []


def test_two_demos_at_once_use_their_own_topics_and_hint_their_options(
    sh: Shell, tmp_path: Path
) -> None:
    """Demos started together do not collide; the closing hint is a command that works."""
    stores = ["--storage", f"file://{tmp_path}/objs", "--metadata", f"sqlite:///{tmp_path}/m.db"]
    demos = [sh.popen("demo", "--records", "2000", *stores) for _ in range(2)]
    hints = []
    for proc in demos:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        hints.append(err.decode().splitlines()[-1])
    assert hints[0] != hints[1]
    for hint in hints:
        command = shlex.split(hint.removeprefix("done. Try: "))
        assert command[:5] == ["streamhouse", *stores]
        described = subprocess.run([STREAMHOUSE, *command[1:]], capture_output=True,
                                   text=True, cwd=sh.home, env=sh.env)  # fmt: skip
        assert described.returncode == 0, described.stderr
        assert sum(int(row[2]) for row in rows(described.stdout)) == 2000


def test_a_hundred_thousand_partitions(sh: Shell) -> None:
    """topics describe prints every partition and consume --max 1 finds the one record."""
    sh.ok("topics", "create", "big", "--partitions", "100000")
    sh.ok("produce", "big", "--partition", "76543", stdin="needle\n")
    described = sh.ok("topics", "describe", "big")
    assert len(described.splitlines()) == 100_001
    assert rows(described)[76543] == ["76543", "0", "1", "1", rows(described)[76543][4]]
    assert sh.ok("consume", "big", "--max", "1") == "needle\n"
