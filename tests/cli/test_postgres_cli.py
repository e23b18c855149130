"""The command line on PostgreSQL: a user's session, every command that touches metadata.

The other CLI tests run on the embedded SQLite default; this one gives
``STREAMHOUSE_METADATA`` a ``postgresql://...?schema=`` URL (a private
PostgreSQL, a schema of its own) and checks that each command reads and
writes the same answers there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..helpers import with_schema
from .conftest import Shell, committed, rows


@pytest.fixture
def pg_sh(tmp_path: Path, postgres_url: str, pg_schema: str) -> Shell:
    sh = Shell(tmp_path)
    sh.env["STREAMHOUSE_METADATA"] = with_schema(postgres_url, pg_schema)
    return sh


def test_a_session_on_postgresql(pg_sh: Shell) -> None:
    """Create, produce, consume in a group, describe, reset, maintain: all on PostgreSQL."""
    sh = pg_sh
    sh.ok("topics", "create", "t", "--partitions", "2", "--retention", "7d")
    assert sh.json("topics", "list") == [{"name": "t", "partitions": 2}]
    sh.ok("produce", "t", "--partition", "1", stdin="a\nb\nc\n")
    sh.ok("produce", "t", "--partition", "0", stdin="d\n")
    out = sh.ok("consume", "t", "--group", "g", "--from", "earliest")
    assert sorted(out.split()) == ["a", "b", "c", "d"]
    assert committed(sh, "g") == {("t", 0): 1, ("t", 1): 3}
    assert sh.json("groups", "list") == [{"name": "g"}]
    described = sh.json("topics", "describe", "t")
    assert [(p["partition"], p["high_watermark"]) for p in described["partitions"]] == [
        (0, 1),
        (1, 3),
    ]
    out = sh.ok("groups", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--execute")
    assert rows(out) == [["t", "0", "1", "0"], ["t", "1", "3", "0"]]
    assert committed(sh, "g") == {("t", 0): 0, ("t", 1): 0}
    assert sorted(sh.ok("consume", "t", "--group", "g").split()) == ["a", "b", "c", "d"]
    sh.ok("maintain", "--once")
    sh.ok("topics", "delete", "t")
    assert sh.json("topics", "list") == []
    # Nothing went to the embedded SQLite default.
    assert not (sh.home / "data" / "metadata.db").exists()
