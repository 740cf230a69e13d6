"""Shared fixtures: a throwaway host namespace with a running nsnetd, leak-checked after, and
for every test a check that the namespaces it made are gone."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nsnet.testing import leaks
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


@pytest.fixture(autouse=True)
def no_namespace_of_this_test_left() -> Iterator[None]:
    """Tests outside ``daemon_host`` and the lab make namespaces too (stand-ins for the
    machine, LAN machines, through ``TestHost.create`` or ``sh``). Torn down after every
    other fixture of the test, so a fixture's own cleanup counts; looks only at names this
    process noted, so it costs nothing and never sees another run's."""
    mark = leaks.namespaces_mark()
    yield
    left = leaks.namespaces_left(mark)
    assert not left, f"namespaces left: {left}"
