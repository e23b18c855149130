"""``python -m streamhouse``: the ``streamhouse`` command."""

import sys

from ._cli import main

sys.exit(main())
