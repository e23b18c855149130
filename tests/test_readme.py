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


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_each_example_runs(tmp_path: Path, example: str) -> None:
    """Each example exits 0 on the embedded default and prints what it read."""
    env = {**os.environ, "STREAMHOUSE_HOME": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "0 b'" in result.stdout or "offset 0" in result.stdout
