"""Packaging: the license, the version's one source, pins and caps, metadata."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import streamhouse

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = (ROOT / "pyproject.toml").read_text()
PROJECT = tomllib.loads(PYPROJECT)


def test_the_license_file_is_apache_2_and_matches_the_metadata() -> None:
    """LICENSE holds the Apache-2.0 text; the license expression needs setuptools 77+."""
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert PROJECT["project"]["license"] == "Apache-2.0"
    assert PROJECT["build-system"]["requires"] == ["setuptools>=77"]
    metadata = importlib.metadata.metadata("streamhouse")
    assert metadata["License-Expression"] == "Apache-2.0"


def test_the_version_is_written_once() -> None:
    """pyproject reads the version from _version.py; the installed metadata agrees."""
    assert PROJECT["project"]["dynamic"] == ["version"]
    assert "version" not in PROJECT["project"]
    source = PROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert source == "streamhouse._version.__version__"
    assert importlib.metadata.version("streamhouse") == streamhouse.__version__


def test_ruff_and_mypy_are_pinned_to_what_the_suite_runs() -> None:
    """The tools the suite runs are pinned exactly, to the versions installed."""
    pins = dict(re.findall(r'"(ruff|mypy)==([^"]+)"', PYPROJECT))
    assert pins == {
        "ruff": importlib.metadata.version("ruff"),
        "mypy": importlib.metadata.version("mypy"),
    }


def test_every_upper_cap_says_why() -> None:
    """A dependency capped with '<' carries a comment on its line naming the break."""
    requirement = re.compile(r'^\s*"([A-Za-z0-9_.\-]+)([^"]*)",\s*(#.*)?$')
    capped = []
    for line in PYPROJECT.splitlines():
        match = requirement.match(line)
        if match and "<" in match.group(2):
            capped.append(match.group(1))
            assert match.group(3), f"{line.strip()} caps without saying why"
    runtime = PROJECT["project"]["dependencies"]
    assert not [r for r in runtime if "<" in r]  # no known break today
    assert capped == ["aiokafka"]  # the bench anchor's internals, see its comment


def test_classifiers_name_the_tested_pythons_and_urls_are_given() -> None:
    """Classifiers list each CPython the suite runs on, this one included; URLs exist."""
    classifiers = PROJECT["project"]["classifiers"]
    versions = {c.rsplit(" :: ", 1)[1] for c in classifiers if re.search(r":: 3\.\d+$", c)}
    assert versions == {"3.11", "3.12", "3.13"}
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in versions
    assert PROJECT["project"]["requires-python"] == ">=3.11"
    assert {"Homepage", "Source", "Issues"} <= set(PROJECT["project"]["urls"])
    assert "CacheStats" in streamhouse.__all__
