"""Put the repository's root on sys.path, so that scripts can import the test
servers, which live under tests/ and are not part of the wheel.

Import it before ``tests.servers``: ``import _repo  # noqa: F401``.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
