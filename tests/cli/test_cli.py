"""The streamhouse command's commands, run as a user runs them: the installed script."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import minio
import pytest

from tests.servers.seaweed import S3Server

from ..helpers import BUCKET
from .conftest import Shell, committed, produce, rows


def test_topics_are_created_listed_described_and_deleted(sh: Shell) -> None:
    """topics create/list/describe/delete work on the embedded default."""
    out, err = sh.ok_both("topics", "create", "orders", "--partitions", "3")
    assert out == ""
    assert err == "created topic orders with 3 partition(s)\n"
    assert rows(sh.ok("topics", "list")) == [["orders", "3"]]
    sh.ok("produce", "orders", "--partition", "2", stdin="a\nb\n")
    described = sh.ok("topics", "describe", "orders")
    assert described.splitlines()[0].split() == ["partition", "log", "start", "high",
                                                 "watermark", "segments", "bytes"]  # fmt: skip
    assert [r[:3] for r in rows(described)] == [["0", "0", "0"], ["1", "0", "0"], ["2", "0", "2"]]
    assert (sh.home / "data" / "metadata.db").exists()
    sh.ok("topics", "delete", "orders")
    assert rows(sh.ok("topics", "list")) == []


def test_produce_and_consume_round_trip_as_text_and_json(sh: Shell) -> None:
    """Lines produced with keys and headers come back as text and as JSON."""
    sh.ok("topics", "create", "t")
    out, err = sh.ok_both("produce", "t", "--key-separator", ":", "--header", "src=cli",
                          stdin="k1:hello\nk2:world\nnokey\n")  # fmt: skip
    assert out == ""
    assert err.startswith("produced 3 records to t: partition 0 offsets 0..2 (")
    assert sh.ok("consume", "t").splitlines() == ["hello", "world", "nokey"]
    assert sh.ok("consume", "t", "--key-separator", "=", "--max", "2").splitlines() == [
        "k1=hello", "k2=world",
    ]  # fmt: skip
    records = [json.loads(line) for line in sh.ok("consume", "t", "--format", "json",
                                                  "--max", "2").splitlines()]  # fmt: skip
    assert records == [
        {"topic": "t", "partition": 0, "offset": 0, "timestamp": records[0]["timestamp"],
         "key": "k1", "value": "hello", "headers": [["src", "cli"]]},
        {"topic": "t", "partition": 0, "offset": 1, "timestamp": records[1]["timestamp"],
         "key": "k2", "value": "world", "headers": [["src", "cli"]]},
    ]  # fmt: skip


def test_produce_reads_a_file(sh: Shell) -> None:
    """produce --file sends every line of the file, the last one without a newline too."""
    sh.ok("topics", "create", "t", "--partitions", "2")
    (sh.home / "lines.txt").write_text("".join(f"line {i}\n" for i in range(2499)) + "last")
    _, err = sh.ok_both("produce", "t", "--file", "lines.txt")
    assert err.startswith("produced 2500 records to t")
    printed = sh.ok("consume", "t").splitlines()
    assert sorted(printed) == sorted([f"line {i}" for i in range(2499)] + ["last"])


def test_groups_commit_describe_and_reset(sh: Shell) -> None:
    """consume --group commits what it printed; groups show lag and reset offsets."""
    sh.ok("topics", "create", "t")
    produce(sh, "t", [str(i) for i in range(10)])
    assert sh.ok("consume", "t", "--group", "g", "--max", "4").splitlines() == ["0", "1", "2", "3"]
    assert rows(sh.ok("groups", "list")) == [["g"]]
    assert rows(sh.ok("groups", "describe", "g")) == [["t", "0", "4", "10", "6", "-"]]
    assert sh.ok("consume", "t", "--group", "g").splitlines() == [str(i) for i in range(4, 10)]
    assert committed(sh, "g") == {("t", 0): 10}
    sh.ok("groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "2", "--execute")
    assert sh.ok("consume", "t", "--group", "g", "--max", "1").splitlines() == ["2"]


def test_ctrl_c_stops_a_following_consumer_and_commits(sh: Shell) -> None:
    """SIGINT ends consume --follow with exit 0, one line, and commits what was printed."""
    sh.ok("topics", "create", "t")
    produce(sh, "t", ["a", "b", "c"])
    proc = sh.popen("consume", "t", "--group", "g", "--follow")
    assert proc.stdout is not None
    assert [proc.stdout.readline() for _ in range(3)] == [b"a\n", b"b\n", b"c\n"]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err == b"consumed 3 records; committed for group g\n"
    assert committed(sh, "g") == {("t", 0): 3}


def test_a_following_group_consumer_is_a_member_groups_describe_shows(sh: Shell) -> None:
    """consume --follow --group joins the group: describe shows it and what it owns."""
    sh.ok("topics", "create", "t", "--partitions", "2")
    produce(sh, "t", ["a"])
    proc = sh.popen("consume", "t", "--group", "g", "--follow")
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"a\n"
    described = sh.json("groups", "describe", "g")
    (member,) = described["members"]
    assert sorted((a["topic"], a["partition"]) for a in member["assignment"]) == [
        ("t", 0), ("t", 1),
    ]  # fmt: skip
    assert {p["member_id"] for p in described["partitions"]} == {member["member_id"]}
    text = sh.ok("groups", "describe", "g")
    assert "t[0] t[1]" in text
    # While it runs, nobody outside the group reads or moves its offsets.
    reset = ["groups", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--execute"]
    for outsider in (["consume", "t", "--group", "g"], reset):
        refused = sh.run(*outsider)
        assert refused.returncode == 1, outsider
        assert refused.stdout == b""
        (line,) = refused.stderr.decode().splitlines()
        assert f"group 'g' has 1 live member(s) ({member['member_id']})" in line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sh.json("groups", "describe", "g")["members"] == []
    sh.ok(*reset)
    assert sh.ok("consume", "t", "--group", "g").splitlines() == ["a"]


def test_an_outsider_that_finds_members_when_it_ends_commits_nothing(sh: Shell) -> None:
    """consume --group without --follow checks again before it commits: a
    member that joined while it printed keeps the group's offsets."""
    sh.ok("topics", "create", "t")
    produce(sh, "t", [f"{i:099d}" for i in range(3000)])  # 300 KB: more than a pipe holds
    outsider = sh.popen("consume", "t", "--group", "g")
    assert outsider.stdout is not None
    assert outsider.stdout.readline() == b"0" * 99 + b"\n"  # past its first check
    member = sh.popen("consume", "t", "--group", "g", "--follow", stderr=subprocess.DEVNULL)
    assert member.stdout is not None
    assert member.stdout.readline() == b"0" * 99 + b"\n"  # a member, reading
    drain = threading.Thread(target=member.stdout.read, daemon=True)
    drain.start()
    outsider.stdout.close()  # its reader goes away, as with | head: now it commits
    _, err = outsider.communicate(timeout=60)
    assert outsider.returncode == 1
    (line,) = err.decode().splitlines()
    assert "group 'g' has 1 live member(s)" in line
    assert "before committing what was printed without --follow" in line
    described = sh.run("groups", "describe", "g", "--format", "json")
    assert [p["committed"] for p in json.loads(described.stdout)["partitions"]] == [None]
    member.send_signal(signal.SIGINT)
    assert member.wait(timeout=60) == 0
    drain.join(timeout=60)
    member.stdout.close()


def test_the_demo_runs_on_the_embedded_default(sh: Shell) -> None:
    """streamhouse demo produces, consumes, commits and ends with lag 0, all on stderr."""
    out, err = sh.ok_both("demo", "--records", "3000")
    assert out == ""
    assert "produced 3,000 records" in err
    assert "consumed 3,000 records" in err
    assert "lag is now 0" in err


USER_ERRORS = [
    (["topics", "create", "bad name"], "topic name 'bad name' contains ' '"),
    (["topics", "create", "t", "--partitions", "100001"], "partition count must be between"),
    (["consume", "ghost"], "topic 'ghost' does not exist"),
    (["produce", "ghost"], "topic 'ghost' does not exist"),
    (["produce", "t", "--partition", "1"], "there is no partition 1"),
    (["produce", "t", "--file", "missing.txt"], "is not a readable file"),
    (["produce", "t", "--file", "."], "is not a readable file: it is a directory"),
    (["produce", "t", "--header", "novalue"], "is not KEY=VALUE"),
    (["groups", "describe", "nobody"], "has no committed offsets and no members"),
    (["groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "5"], "is outside"),
    (["storage", "create-bucket"], "needs --storage s3://"),
    (["--storage", "ftp://x", "topics", "list"], "unsupported storage URL"),
    (["--metadata", "mysql://x", "topics", "list"], "unsupported metadata URL"),
]


def test_user_errors_print_one_line_and_exit_1(sh: Shell) -> None:
    """A user error prints one clear line on stderr, no traceback, and exits 1."""
    sh.ok("topics", "create", "t")
    for args, message in USER_ERRORS:
        result = sh.run(*args, stdin="x\n")
        err = result.stderr.decode()
        assert result.returncode == 1, (args, err)
        assert err.count("\n") == 1, (args, err)
        assert err.startswith("error: "), (args, err)
        assert message in err, (args, err)
        assert result.stdout == b"", args


def s3_env(server: S3Server, secret: str | None = None) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": secret or server.secret_key,
        "AWS_REGION": server.region,
    }


def test_the_same_commands_run_against_s3(sh: Shell, s3_server: S3Server, s3_prefix: str) -> None:
    """--storage s3://bucket/prefix with the AWS_* variables uses the S3 server."""
    env = {**s3_env(s3_server), "STREAMHOUSE_STORAGE": f"s3://{BUCKET}/{s3_prefix}"}
    sh.ok("topics", "create", "t", env=env)
    sh.ok("produce", "t", stdin="over\ns3\n", env=env)
    assert sh.ok("consume", "t", env=env).splitlines() == ["over", "s3"]
    assert "consumed 500 records" in sh.ok_both("demo", "--records", "500", env=env)[1]


def test_storage_create_bucket_makes_a_fresh_servers_bucket(
    sh: Shell, s3_server: S3Server, minio_s3: minio.Minio
) -> None:
    """storage create-bucket and demo --create-bucket create missing buckets; again is fine."""
    env = s3_env(s3_server)
    first, second = (f"cli-{uuid.uuid4().hex[:12]}" for _ in range(2))
    for _ in range(2):  # a bucket that exists already is no error
        _, err = sh.ok_both("storage", "create-bucket", "--storage", f"s3://{first}/p", env=env)
        assert err == f"bucket {first} is ready at {s3_server.endpoint}\n"
    assert minio_s3.bucket_exists(first)
    _, err = sh.ok_both("demo", "--records", "100", "--create-bucket",
                        "--storage", f"s3://{second}/p", env=env)  # fmt: skip
    assert "lag is now 0" in err
    assert minio_s3.bucket_exists(second)
    assert any(o.object_name for o in minio_s3.list_objects(second, recursive=True))
    result = sh.run("storage", "create-bucket", "--storage", "file:///tmp/x")
    assert result.returncode == 1
    assert b"only s3:// storage has a bucket" in result.stderr


@pytest.mark.parametrize(
    ("problem", "message"),
    [("credentials", "SignatureDoesNotMatch"), ("endpoint", "cannot reach")],
)
def test_s3_problems_are_one_clear_line(
    sh: Shell, s3_server: S3Server, s3_prefix: str, problem: str, message: str
) -> None:
    """Wrong credentials or an unreachable endpoint print one line and exit 1."""
    env = s3_env(s3_server, secret="wrong" if problem == "credentials" else None)
    if problem == "endpoint":
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    sh.run("topics", "create", "t")
    result = sh.run("--storage", f"s3://{BUCKET}/{s3_prefix}", "produce", "t",
                    stdin="x\n", env=env)  # fmt: skip
    assert result.returncode == 1
    err = result.stderr.decode()
    assert message in err
    assert err.count("\n") == 1
    assert "wrong" not in err.replace("wrong secret", "")


def test_consume_gives_up_on_an_unreachable_store_with_one_line(
    sh: Shell, s3_server: S3Server, s3_prefix: str
) -> None:
    """Without --follow, a store that stays unreachable for --stall-timeout is exit 1, one line."""
    env = {**s3_env(s3_server), "STREAMHOUSE_STORAGE": f"s3://{BUCKET}/{s3_prefix}"}
    sh.ok("topics", "create", "t", env=env)
    sh.ok("produce", "t", stdin="a\nb\n", env=env)
    dead = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    result = sh.run("consume", "t", "--group", "g", "--stall-timeout", "1", env=dead)
    assert result.returncode == 1
    assert result.stdout == b""
    err = result.stderr.decode()
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert "t[0]" in err
    assert "127.0.0.1:9" in err
    assert sh.run("groups", "describe", "g").returncode == 1  # nothing printed, nothing committed
    assert sh.ok("consume", "t", "--group", "g", env=env).splitlines() == ["a", "b"]


def test_python_dash_m_runs_the_same_command(sh: Shell) -> None:
    """python -m streamhouse is the streamhouse command."""
    import streamhouse

    result = subprocess.run([sys.executable, "-m", "streamhouse", "--version"],
                            capture_output=True, text=True, cwd=sh.home)  # fmt: skip
    assert result.returncode == 0
    assert result.stdout == f"streamhouse {streamhouse.__version__}\n"
    assert sh.ok("--version") == result.stdout


def test_global_options_go_before_or_after_the_command(sh: Shell, tmp_path: Path) -> None:
    """--storage and --metadata work before the command and after it; after wins."""
    stores = ["--storage", f"file://{tmp_path}/objs", "--metadata", f"sqlite:///{tmp_path}/m.db"]
    sh.ok("topics", "create", "t", *stores)
    produce_args = ["produce", "t", *stores]
    sh.ok(*produce_args, stdin="after\n")
    sh.ok(*stores, "produce", "t", stdin="before\n")
    assert sh.ok("consume", "t", *stores).splitlines() == ["after", "before"]
    wrong = ["--metadata", f"sqlite:///{tmp_path}/elsewhere/m.db"]
    assert sh.ok(*wrong, "topics", "list", *stores) == "topic  partitions\nt               1\n"
    assert not (sh.home / "data").exists()


def test_a_following_member_commits_what_it_printed_as_it_goes(sh: Shell) -> None:
    """consume --follow --group commits what it printed every --commit-interval,
    so a kill -9 costs the group only what came after the last commit."""
    sh.ok("topics", "create", "t")
    produce(sh, "t", ["a", "b", "c"])
    proc = sh.popen("consume", "t", "--group", "g", "--follow", "--commit-interval", "0.1s")
    assert proc.stdout is not None
    assert [proc.stdout.readline() for _ in range(3)] == [b"a\n", b"b\n", b"c\n"]
    deadline = time.monotonic() + 30
    while committed(sh, "g") != {("t", 0): 3}:  # (each look is a command: no sleep)
        assert time.monotonic() < deadline, "the member did not commit what it printed"
    proc.kill()  # no goodbye, no closing commit
    proc.wait(timeout=60)
    assert committed(sh, "g") == {("t", 0): 3}
