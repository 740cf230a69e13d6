"""Shared fixtures: a throwaway host namespace with a running nsnetd, leak-checked after."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nsnet.testing.hosts import Daemon, daemon_host


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: creates namespaces, links and nftables rules")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    with daemon_host() as d:
        yield d
