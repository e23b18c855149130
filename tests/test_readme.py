"""The README's Python examples run as written, each in a fresh directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_the_readme_has_examples() -> None:
    """The quick start shows trio and asyncio."""
    assert len(EXAMPLES) >= 2
    assert any("trio.run" in e for e in EXAMPLES)
    assert any("asyncio.run" in e for e in EXAMPLES)


# What each example prints (lines, in order, as regular expressions): the
# records it wrote, read back. One entry an example, in the README's order.
# The first example's batch has no key: it goes to the keyed record's
# partition (after it) or to another (from 0), and its one poll returns what
# came first; in the last, either member may join first.
PRINTS = [
    [r"written to partition \d at offset 0", r"batch offsets: \[(0, 1, 2|1, 2, 3)\]",
     r"\d [0-3] (None|b'customer-7') b'(a|b|c|\{\"id\": 1\})'"],
    [r"0 b'hello from asyncio'"],
    [r"0 range\(0, 1000\) 499500", r"0 b'0'"],
    [r"[ab] takes \[0, 1, 2, 3\]", r"40 records, each once: True"],
]  # fmt: skip


def test_every_example_says_what_it_prints() -> None:
    assert len(PRINTS) == len(EXAMPLES)


@pytest.mark.parametrize(
    ("example", "prints"),
    list(zip(EXAMPLES, PRINTS, strict=False)),
    ids=[f"example{i}" for i in range(len(EXAMPLES))],
)
def test_each_example_runs(tmp_path: Path, example: str, prints: list[str]) -> None:
    """Each example exits 0 on the embedded default and prints what it read."""
    env = {**os.environ, "STREAMHOUSE_HOME": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = 0
    for pattern in prints:  # each in a line of its own, after the one before
        found = [i for i, line in enumerate(lines) if i >= at and re.fullmatch(pattern, line)]
        assert found, f"no line {pattern!r} in:\n{result.stdout}"
        at = found[0] + 1
