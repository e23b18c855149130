"""The ``streamhouse`` command."""

from .main import main as main
