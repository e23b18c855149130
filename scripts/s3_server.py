"""Run a private SeaweedFS S3 server on free loopback ports until Ctrl-C.

    python scripts/s3_server.py [--dir DIR]

Prints the endpoint and credentials as shell exports, ready for
``eval``-free copy and paste.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path

import _repo  # noqa: F401  (puts tests/ on the path)

from tests.servers.seaweed import running_seaweedfs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, help="data directory (default: a temporary one)")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_seaweedfs(args.dir or Path(tmp)) as server,
    ):
        print(f"export AWS_ENDPOINT_URL={server.endpoint}")
        print(f"export AWS_ACCESS_KEY_ID={server.access_key}")
        print(f"export AWS_SECRET_ACCESS_KEY={server.secret_key}")
        print(f"export AWS_REGION={server.region}")
        print(f"# SeaweedFS pid {server.pid}; Ctrl-C stops it", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
