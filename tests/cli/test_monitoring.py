"""``streamhouse exporter`` and ``-v``, run as a user runs them."""

from __future__ import annotations

import re
import signal
import socket

import httpx

from .conftest import Shell, produce


def test_the_exporter_serves_a_groups_lag(sh: Shell) -> None:
    """The exporter answers a scrape with the lag consume --group left; Ctrl-C ends it."""
    sh.ok("topics", "create", "t")
    produce(sh, "t", [str(i) for i in range(10)])
    sh.ok("consume", "t", "--group", "g", "--max", "4")
    proc = sh.popen("exporter", "--port", "0")
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        port = re.search(r"127\.0\.0\.1:(\d+)/metrics", line)
        assert port is not None, line
        text = httpx.get(f"http://127.0.0.1:{port[1]}/metrics", timeout=30).text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert 'streamhouse_consumergroup_lag{consumergroup="g",topic="t",partition="0"} 6\n' in text
    assert 'streamhouse_topic_partition_current_offset{topic="t",partition="0"} 10\n' in text
    assert proc.returncode == 130


def test_the_exporters_start_up_errors_are_one_line(sh: Shell) -> None:
    """A port taken, a host that does not resolve, a metadata store out of reach:
    one line naming it, exit 1 (a traceback of an exception group before)."""
    sh.ok("topics", "create", "t")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args, message in [
            (["exporter", "--port", port], f"error: cannot listen on 127.0.0.1:{port}: "),
            (["exporter", "--port", "0", "--host", "nosuchhost.invalid"],
             "error: cannot listen on nosuchhost.invalid:0: "),
            (["--metadata", "postgresql://postgres@127.0.0.1:1/test", "exporter", "--port", "0"],
             "error: cannot reach postgresql://postgres@127.0.0.1:1/test"),
        ]:  # fmt: skip
            result = sh.run(*args)
            err = result.stderr.decode()
            assert result.returncode == 1, (args, err)
            assert err.startswith(message), (args, err)
            assert err.count("\n") == 1, (args, err)
            assert result.stdout == b"", args


def test_v_logs_to_stderr(sh: Shell) -> None:
    """-v puts the lifecycle's INFO lines on stderr; -vv the requests' DEBUG lines too."""
    sh.ok("topics", "create", "t")
    _, err = sh.ok_both("produce", "t", "-v", stdin="a\nb\n")
    assert " INFO streamhouse.producer: producer producer-" in err
    assert " DEBUG " not in err
    _, err = sh.ok_both("-vv", "consume", "t")
    assert " INFO streamhouse.consumer: consumer consumer-" in err
    assert " DEBUG streamhouse.metadata: metadata list_segments_from: " in err
