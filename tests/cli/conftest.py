"""The installed ``streamhouse`` command, run in a directory of its own, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

# The console script pip installed beside this interpreter.
STREAMHOUSE = str(Path(sys.executable).with_name("streamhouse"))


class Shell:
    """Runs the command in ``home`` (its cwd), with STREAMHOUSE_HOME at ``home/data``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "STREAMHOUSE_HOME": str(home / "data")}
        for name in ("STREAMHOUSE_STORAGE", "STREAMHOUSE_METADATA"):
            self.env.pop(name, None)
        self.started: list[subprocess.Popen[bytes]] = []

    def run(
        self, *args: str, stdin: bytes | str = b"", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return subprocess.run(
            [STREAMHOUSE, *args], input=data, capture_output=True, cwd=self.home,
            env={**self.env, **(env or {})}, timeout=120,
        )  # fmt: skip

    def ok(self, *args: str, stdin: bytes | str = b"", env: dict[str, str] | None = None) -> str:
        """stdout of a run that must succeed (its stderr is the failure message)."""
        return self.ok_both(*args, stdin=stdin, env=env)[0]

    def ok_both(
        self, *args: str, stdin: bytes | str = b"", env: dict[str, str] | None = None
    ) -> tuple[str, str]:
        """stdout and stderr of a run that must succeed."""
        result = self.run(*args, stdin=stdin, env=env)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stdout.decode(errors="surrogateescape"), result.stderr.decode()

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--format", "json"))

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen([STREAMHOUSE, *args], cwd=self.home, env=self.env, **kwargs)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        """Kill (by pid) every command this shell started that still runs: a
        test that failed before it stopped one must not leave it behind."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def rows(table: str) -> list[list[str]]:
    """The rows of a plain table (as printed to a pipe), without its header."""
    return [line.split() for line in table.splitlines()[1:]]


def committed(sh: Shell, group: str) -> dict[tuple[str, int], int | None]:
    return {
        (p["topic"], p["partition"]): p["committed"]
        for p in sh.json("groups", "describe", group)["partitions"]
    }


def produce(sh: Shell, topic: str, lines: Sequence[str | bytes]) -> None:
    data = b"".join((x.encode() if isinstance(x, str) else x) + b"\n" for x in lines)
    sh.ok("produce", topic, stdin=data)


def wait_for_record(sh: Shell, topic: str) -> bytes:
    """The first record of ``topic``, waiting until one is there (no sleeps)."""
    result = sh.run("consume", topic, "--follow", "--max", "1")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def sh(tmp_path: Path) -> Iterator[Shell]:
    """The command, run in a fresh directory."""
    shell = Shell(tmp_path)
    yield shell
    shell.stop_all()
