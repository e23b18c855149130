"""Ctrl-C while produce's write is in flight: the lines read are written, or it says
how many were not (a stalled object store, scripted at the network seam)."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.servers.seaweed import S3Server

from ..helpers import BUCKET
from .conftest import Shell, wait_for_record


class Gate:
    """A TCP relay in front of the S3 server that holds what clients send while
    closed: the store stalls for them (an upload never answered), and goes on
    when the gate opens, as a server paused and resumed would."""

    def __init__(self, server: S3Server) -> None:
        target = urlsplit(server.endpoint)
        self._target = (target.hostname or "127.0.0.1", target.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open = threading.Event()
        self._open.set()
        self.held = threading.Event()  # something was sent while the gate was closed
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close_gate(self) -> None:
        self.held.clear()
        self._open.clear()

    def open_gate(self) -> None:
        self._open.set()

    def shut(self) -> None:
        self._open.set()
        for sock in self._sockets:
            sock.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._target)
            except OSError:
                return  # shut
            self._sockets += [client, server]
            for args in ((client, server, True), (server, client, False)):
                thread = threading.Thread(target=self._relay, args=args, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _relay(self, source: socket.socket, sink: socket.socket, gated: bool) -> None:
        try:
            while data := source.recv(65536):
                if gated and not self._open.is_set():
                    self.held.set()
                    self._open.wait()
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            return  # either end closed (the command ended, or the gate was shut)


@pytest.fixture
def gate(s3_server: S3Server) -> Iterator[Gate]:
    relay = Gate(s3_server)
    yield relay
    relay.shut()


def line_within(proc: subprocess.Popen[bytes], seconds: float) -> bytes:
    """The next line of the command's stderr, or b"" if none came in ``seconds``
    (a bound for a failing test, not a timing it asserts)."""
    assert proc.stderr is not None
    stderr = proc.stderr
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(stderr.readline()), daemon=True)
    reader.start()
    reader.join(timeout=seconds)
    return lines[0] if lines else b""


def start_stalled_write(
    sh: Shell, gate: Gate, server: S3Server, prefix: str
) -> subprocess.Popen[bytes]:
    """produce t, its first line written, then two more read and their upload
    held at the gate, its input ended: the write is in flight."""
    sh.env.update({
        "AWS_ENDPOINT_URL": gate.endpoint, "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_REGION": server.region,
        "STREAMHOUSE_STORAGE": f"s3://{BUCKET}/{prefix}",
    })  # fmt: skip
    sh.ok("topics", "create", "t")
    proc = sh.popen("produce", "t", stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(b"first\n")
    proc.stdin.flush()
    assert wait_for_record(sh, "t") == b"first\n"
    gate.close_gate()
    proc.stdin.write(b"second\nthird\n")
    proc.stdin.close()  # nothing more to read: only the write is left
    assert gate.held.wait(timeout=60)
    return proc


def test_ctrl_c_waits_for_a_stalled_write_and_says_what_was_produced(
    sh: Shell, gate: Gate, s3_server: S3Server, s3_prefix: str
) -> None:
    """SIGINT during a stalled upload: produce says it is writing the lines read,
    writes them when the store answers, and says so (it exited 130 in silence,
    the lines lost, when its input had ended)."""
    proc = start_stalled_write(sh, gate, s3_server, s3_prefix)
    proc.send_signal(signal.SIGINT)
    notice = line_within(proc, 30)
    assert notice == b"interrupted: writing the 2 lines read (Ctrl-C again quits without them)\n"
    gate.open_gate()
    assert proc.wait(timeout=60) == 130
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert err.startswith(b"interrupted: produced 3 records to t: partition 0 offsets 0..2 (")
    assert err.count(b"\n") == 1
    assert sh.ok("consume", "t").splitlines() == ["first", "second", "third"]


def test_a_second_ctrl_c_quits_and_says_how_many_lines_were_not_written(
    sh: Shell, gate: Gate, s3_server: S3Server, s3_prefix: str
) -> None:
    """A second SIGINT ends produce at once (exit 130) with one line saying how
    many lines read it did not write."""
    proc = start_stalled_write(sh, gate, s3_server, s3_prefix)
    proc.send_signal(signal.SIGINT)
    assert line_within(proc, 30).startswith(b"interrupted: writing the 2 lines read")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert err == b"interrupted again: quit before 2 lines read were written (1 produced)\n"
    gate.open_gate()
    assert sh.ok("consume", "t").splitlines() == ["first"]
