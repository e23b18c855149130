"""``streamhouse top``: its rendering, and the command in a pseudo-terminal."""

from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import time

from rich.console import Console

from streamhouse._cli.top import Sample, top_view
from streamhouse._metadata.protocol import GroupOffset, MonitoringSnapshot, PartitionSummary

from .conftest import STREAMHOUSE, Shell, produce


def text(view: object) -> str:
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    console.print(view)
    return console.export_text()


def test_the_view_shows_rates_lag_and_lag_seconds() -> None:
    """Rates come from two snapshots; a group's lag and age from its offsets."""
    before = MonitoringSnapshot(
        [PartitionSummary("orders", 0, 0, 100, 10), PartitionSummary("orders", 1, 0, 100, 10),
         PartitionSummary("quiet", 0, 0, 5, 1)],
        [],
    )  # fmt: skip
    after = MonitoringSnapshot(
        [PartitionSummary("orders", 0, 0, 300, 30), PartitionSummary("orders", 1, 0, 400, 40),
         PartitionSummary("quiet", 0, 0, 5, 1)],
        [GroupOffset("billing", "orders", 0, 250, 1_000_000),
         GroupOffset("billing", "orders", 1, 400, None),
         GroupOffset("audit", "quiet", 0, 5, None)],
    )  # fmt: skip
    shown = text(top_view(Sample(before, 10.0, 0), Sample(after, 12.0, 1_090.0)))
    lines = [line.split() for line in shown.splitlines()]
    # 500 records in 2 s; quiet wrote nothing.
    assert ["│", "orders", "│", "2", "│", "700", "│", "70B", "│", "250", "│"] in lines
    assert ["│", "quiet", "│", "1", "│", "5", "│", "1B", "│", "0", "│"] in lines
    # billing: 50 behind, the oldest uncommitted record 90 s old; audit caught up.
    assert ["│", "billing", "│", "orders", "│", "50", "│", "90", "│"] in lines
    assert ["│", "audit", "│", "quiet", "│", "0", "│", "0", "│"] in lines


def test_the_first_view_has_no_rates_and_few_rows() -> None:
    """Before a second snapshot rates show as '-'; --rows cuts the tables."""
    parts = [PartitionSummary(f"t{i}", 0, 0, i, 0) for i in range(5)]
    shown = text(top_view(None, Sample(MonitoringSnapshot(parts, []), 0.0, 0.0), rows=2))
    assert "and 3 more" in shown
    assert sum(line.rstrip().endswith(" - │") for line in shown.splitlines()) == 2


def test_top_runs_in_a_terminal_and_ctrl_c_leaves_cleanly(sh: Shell) -> None:
    """In a pseudo-terminal it draws the tables; Ctrl-C ends it with exit 0."""
    sh.ok("topics", "create", "visible-topic")
    produce(sh, "visible-topic", ["a", "b"])
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [STREAMHOUSE, "top", "--interval", "0.1"], stdin=sub, stdout=sub, stderr=sub,
        cwd=sh.home, env={**sh.env, "COLUMNS": "100", "LINES": "40"},
    )  # fmt: skip
    os.close(sub)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"visible-topic" not in seen and time.monotonic() < deadline:
            if select.select([main], [], [], 1)[0]:
                seen += os.read(main, 65536)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    assert b"visible-topic" in seen
    assert b"records/s" in seen
