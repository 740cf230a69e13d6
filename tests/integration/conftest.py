"""Fixtures shared by the integration modules."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    """Server processes a test started (``helpers.serve`` appends to it), killed after."""
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
