"""Topic settings and ``streamhouse maintain``, run as a user runs them."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from .conftest import Shell, produce


def test_settings_are_given_changed_and_shown(sh: Shell) -> None:
    """topics create/alter take --retention, --retention-bytes, --cleanup-policy."""
    _, err = sh.ok_both("topics", "create", "t", "--retention", "7d", "--retention-bytes",
                        "10GiB", "--cleanup-policy", "compact")  # fmt: skip
    assert err == (
        "created topic t with 1 partition(s): retention 7d, retention bytes 10GiB, "
        "cleanup policy compact, tombstones kept 1d\n"
    )
    described = sh.json("topics", "describe", "t")
    assert (described["retention_seconds"], described["retention_bytes"]) == (604800, 2**30 * 10)
    assert (described["cleanup_policy"], described["delete_retention_seconds"]) == (
        "compact", 86400,
    )  # fmt: skip
    _, err = sh.ok_both("topics", "alter", "t", "--retention", "none", "--delete-retention", "0")
    assert err == (
        "altered topic t: retention unlimited, retention bytes 10GiB, cleanup policy compact, "
        "tombstones kept 0s\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["topics", "create", "t", "--retention", "7y"], b"use a number with ms, s, m, h, d"),
        (["topics", "create", "t", "--retention-bytes", "lots"], b"not a number with a unit"),
        (["topics", "create", "t", "--cleanup-policy", "shred"], b"invalid choice: 'shred'"),
        (["topics", "alter", "t"], b"give at least one of --retention"),
        (["maintain", "--interval", "soon"], b"not a number with a unit"),
        (["maintain", "--interval", "0"], b"argument --interval: must be more than 0"),
        (["maintain", "--lease-ttl", "0s"], b"argument --lease-ttl: must be more than 0"),
    ],
)
def test_bad_settings_are_usage_errors(sh: Shell, args: list[str], message: bytes) -> None:
    """A malformed setting, or an alter that changes nothing, exits 2 saying why."""
    result = sh.run(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_maintain_once_applies_retention(sh: Shell) -> None:
    """maintain --once removes what retention says, and says so on stderr."""
    sh.ok("topics", "create", "t", "--retention-bytes", "0")
    produce(sh, "t", ["a", "b", "c"])
    _, err = sh.ok_both("maintain", "--once", "--grace", "0")
    assert err.startswith("maintenance: 1 segment(s) deleted by retention, ")
    assert "1 deleted (" in err
    (partition,) = sh.json("topics", "describe", "t")["partitions"]
    assert (partition["log_start_offset"], partition["high_watermark"]) == (3, 3)
    assert sh.ok("consume", "t") == ""
    report = json.loads(sh.ok("maintain", "--once", "--format", "json"))
    assert (report["segments_deleted"], report["skipped"]) == (0, False)


def test_maintain_runs_until_interrupted(sh: Shell) -> None:
    """maintain loops, a pass each interval, until SIGTERM (exit 143)."""
    sh.ok("topics", "create", "t")
    proc = sh.popen("maintain", "--interval", "0.05s")
    assert proc.stderr is not None
    for _ in range(3):
        assert proc.stderr.readline().startswith(b"maintenance: 0 segment(s) deleted")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143


def test_maintain_names_a_corrupt_partition_and_maintains_the_others(sh: Shell) -> None:
    """A corrupt segment skips its partition's merge, named on stderr (exit 1
    with --once); the other topic is merged in the same pass."""
    objects = sh.home / "data" / "objects"
    written: dict[str, set[Path]] = {}
    for topic in ("bad", "good"):
        sh.ok("topics", "create", topic)
        for line in ("a", "b", "c"):
            produce(sh, topic, [line])  # a flush, an object, each
        written[topic] = set(objects.rglob("*.seg")) - set().union(*written.values())
    target = sorted(written["bad"])[0]
    data = bytearray(target.read_bytes())
    data[60] ^= 0xFF  # inside the block's payload
    target.write_bytes(bytes(data))
    result = sh.run("maintain", "--once", "--grace", "0")
    assert result.returncode == 1
    summary, problem = result.stderr.decode().splitlines()
    assert summary.startswith("maintenance: 0 segment(s) deleted by retention, ")
    assert ", 3 merged, " in summary  # good's three
    assert problem.startswith("maintenance: merging of bad[0] skipped: corrupt data in ")
    assert sh.ok("consume", "good") == "a\nb\nc\n"
