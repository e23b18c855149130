"""The streamhouse command, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.seaweed import S3Server

from ..helpers import BUCKET


def run(
    home: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "STREAMHOUSE_HOME": str(home / "data"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "streamhouse", *args], input=stdin, capture_output=True,
        text=True, cwd=home, env=environment, timeout=120,
    )  # fmt: skip


def ok(home: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> str:
    result = run(home, *args, stdin=stdin, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_topics_are_created_listed_described_and_deleted(tmp_path: Path) -> None:
    """topics create/list/describe/delete work on the embedded default."""
    created = ok(tmp_path, "topics", "create", "orders", "--partitions", "3")
    assert "created topic orders with 3 partition(s)" in created
    assert "orders" in ok(tmp_path, "topics", "list")
    ok(tmp_path, "produce", "orders", "--partition", "2", stdin="a\nb\n")
    described = ok(tmp_path, "topics", "describe", "orders")
    assert "high watermark" in described
    row = next(line for line in described.splitlines() if line.strip("│ ").startswith("2 "))
    assert row.split("│")[3].strip() == "2"  # partition 2 has high watermark 2
    assert (tmp_path / "data" / "metadata.db").exists()
    ok(tmp_path, "topics", "delete", "orders")
    assert "orders" not in ok(tmp_path, "topics", "list")


def test_produce_and_consume_round_trip_as_text_and_json(tmp_path: Path) -> None:
    """Lines produced with keys and headers come back as text and as JSON."""
    ok(tmp_path, "topics", "create", "t")
    out = ok(tmp_path, "produce", "t", "--key-separator", ":", "--header", "src=cli",
             stdin="k1:hello\nk2:world\nnokey\n")  # fmt: skip
    assert "produced 3 records to t: partition 0 offsets 0..2" in out
    assert ok(tmp_path, "consume", "t").splitlines() == ["hello", "world", "nokey"]
    records = [json.loads(line) for line in ok(tmp_path, "consume", "t", "--format", "json",
                                               "--max", "2").splitlines()]  # fmt: skip
    assert records == [
        {"topic": "t", "partition": 0, "offset": 0, "timestamp": records[0]["timestamp"],
         "key": "k1", "value": "hello", "headers": [["src", "cli"]]},
        {"topic": "t", "partition": 0, "offset": 1, "timestamp": records[1]["timestamp"],
         "key": "k2", "value": "world", "headers": [["src", "cli"]]},
    ]  # fmt: skip


def test_binary_values_print_as_base64_in_json(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are printed as base64 in JSON."""
    ok(tmp_path, "topics", "create", "t")
    script = (
        "import trio, streamhouse\n"
        "async def main():\n"
        "    async with streamhouse.open_producer(linger=0) as p:\n"
        "        await p.send('t', b'\\xff\\x00', key=b'\\xfe')\n"
        "trio.run(main)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path,
                   env={**os.environ, "STREAMHOUSE_HOME": str(tmp_path / "data")})  # fmt: skip
    record = json.loads(ok(tmp_path, "consume", "t", "--format", "json"))
    assert record["value"] == {"base64": "/wA="}
    assert record["key"] == {"base64": "/g=="}


def test_produce_reads_a_file(tmp_path: Path) -> None:
    """produce --file sends every line of the file."""
    ok(tmp_path, "topics", "create", "t", "--partitions", "2")
    (tmp_path / "lines.txt").write_text("".join(f"line {i}\n" for i in range(2500)))
    out = ok(tmp_path, "produce", "t", "--file", "lines.txt")
    assert "produced 2500 records to t" in out
    assert len(ok(tmp_path, "consume", "t").splitlines()) == 2500


def test_groups_commit_describe_and_reset(tmp_path: Path) -> None:
    """consume --group commits what it printed; groups show lag and reset offsets."""
    ok(tmp_path, "topics", "create", "t")
    ok(tmp_path, "produce", "t", stdin="".join(f"{i}\n" for i in range(10)))
    assert ok(tmp_path, "consume", "t", "--group", "g", "--max", "4").splitlines()[:4] == [
        "0", "1", "2", "3",
    ]  # fmt: skip
    assert "g" in ok(tmp_path, "groups", "list").split()
    described = ok(tmp_path, "groups", "describe", "g")
    row = next(line for line in described.splitlines() if "│ t " in line)
    assert [c.strip() for c in row.strip("│").split("│")] == ["t", "0", "4", "10", "6"]
    assert ok(tmp_path, "consume", "t", "--group", "g").splitlines()[0] == "4"
    assert "t[0] -> 2" in ok(tmp_path, "groups", "reset-offsets", "g", "--topic", "t",
                             "--to-offset", "2")  # fmt: skip
    assert ok(tmp_path, "consume", "t", "--group", "g", "--max", "1").splitlines()[0] == "2"
    assert "t[0] -> 10" in ok(tmp_path, "groups", "reset-offsets", "g", "--topic", "t",
                              "--to-latest")  # fmt: skip
    ok(tmp_path, "groups", "reset-offsets", "g", "--topic", "t", "--to-earliest")
    assert "│ t " in ok(tmp_path, "groups", "describe", "g")


def test_ctrl_c_stops_a_following_consumer_and_commits(tmp_path: Path) -> None:
    """SIGINT ends consume --follow cleanly and commits what was printed."""
    ok(tmp_path, "topics", "create", "t")
    ok(tmp_path, "produce", "t", stdin="a\nb\nc\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamhouse", "consume", "t", "--group", "g", "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "STREAMHOUSE_HOME": str(tmp_path / "data")},
    )  # fmt: skip
    assert proc.stdout is not None
    assert [proc.stdout.readline() for _ in range(3)] == ["a\n", "b\n", "c\n"]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "consumed 3 records; committed for group g" in out
    row = next(line for line in ok(tmp_path, "groups", "describe", "g").splitlines()
               if "│ t " in line)  # fmt: skip
    assert row.split("│")[3].strip() == "3"


def test_the_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    """streamhouse demo produces, consumes, commits and ends with lag 0."""
    out = ok(tmp_path, "demo", "--records", "3000")
    assert "produced 3,000 records" in out
    assert "consumed 3,000 records" in out
    assert "lag is now 0" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["topics", "create", "bad name"], "topic name 'bad name' contains ' '"),
        (["topics", "create", "t", "--partitions", "0"], "partition count must be between"),
        (["consume", "ghost"], "topic 'ghost' does not exist"),
        (["produce", "ghost"], "topic 'ghost' does not exist"),
        (["produce", "t", "--file", "missing.txt"], "is not a readable file"),
        (["produce", "t", "--header", "novalue"], "is not KEY=VALUE"),
        (["groups", "describe", "nobody"], "has no committed offsets"),
        (["--storage", "ftp://x", "topics", "list"], "unsupported storage URL"),
        (["--metadata", "mysql://x", "topics", "list"], "unsupported metadata URL"),
    ],
)
def test_user_errors_print_one_line_and_exit_non_zero(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """A user error prints one clear line on stderr, no traceback, and exits 1."""
    run(tmp_path, "topics", "create", "t")
    result = run(tmp_path, *args, stdin="x\n")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def s3_env(server: S3Server, secret: str | None = None) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": secret or server.secret_key,
        "AWS_REGION": server.region,
    }


def test_the_same_commands_run_against_s3(
    tmp_path: Path, s3_server: S3Server, s3_prefix: str
) -> None:
    """--storage s3://bucket/prefix with the AWS_* variables uses the S3 server."""
    env = {**s3_env(s3_server), "STREAMHOUSE_STORAGE": f"s3://{BUCKET}/{s3_prefix}"}
    ok(tmp_path, "topics", "create", "t", env=env)
    ok(tmp_path, "produce", "t", stdin="over\ns3\n", env=env)
    assert ok(tmp_path, "consume", "t", env=env).splitlines() == ["over", "s3"]
    assert "consumed 500 records" in ok(tmp_path, "demo", "--records", "500", env=env)


@pytest.mark.parametrize(
    ("problem", "message"),
    [("credentials", "SignatureDoesNotMatch"), ("endpoint", "cannot reach")],
)
def test_s3_problems_are_one_clear_line(
    tmp_path: Path, s3_server: S3Server, s3_prefix: str, problem: str, message: str
) -> None:
    """Wrong credentials or an unreachable endpoint print one line and exit 1."""
    env = s3_env(s3_server, secret="wrong" if problem == "credentials" else None)
    if problem == "endpoint":
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    run(tmp_path, "topics", "create", "t")
    result = run(tmp_path, "--storage", f"s3://{BUCKET}/{s3_prefix}", "produce", "t",
                 stdin="x\n", env=env)  # fmt: skip
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "wrong" not in result.stderr.replace("wrong secret", "")
