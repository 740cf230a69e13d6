"""Unit tests run in the machine's own namespaces with no daemon of their own: after them,
the machine's ruleset holds no table of nsnet's (a fake that fell back to a real kernel object
once wrote ``inet nsnet`` there)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest


def _nsnet_tables() -> set[str]:
    nft = shutil.which("nft")
    if nft is None or os.geteuid() != 0:
        return set()
    out = subprocess.run([nft, "list", "tables"], capture_output=True, text=True,
                         check=False).stdout
    return {line.strip() for line in out.splitlines() if "nsnet" in line}


@pytest.fixture(scope="session", autouse=True)
def machine_ruleset_untouched() -> Iterator[None]:
    before = _nsnet_tables()
    yield
    made = _nsnet_tables() - before
    assert not made, f"unit tests wrote the machine's own ruleset: {sorted(made)}"
