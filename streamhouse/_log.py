"""Logging: stdlib ``logging`` under the ``streamhouse`` logger.

A NullHandler on the package's logger keeps StreamHouse silent until the
application configures logging (the convention for libraries); every module
logs to a child, ``streamhouse.<part>``, so an application can tune one part.
"""

from __future__ import annotations

import logging

__all__ = ["get_logger"]

logging.getLogger("streamhouse").addHandler(logging.NullHandler())


def get_logger(part: str) -> logging.Logger:
    """The logger of one part of StreamHouse: ``streamhouse.<part>``."""
    return logging.getLogger(f"streamhouse.{part}")
