"""A container renamed on one host is found by its new name from the others (issue 11): its
overlay endpoint records are published again, so every host's embedded DNS follows. Read back
with nslookup inside a container on another host, as in test_overlay_containers."""

from __future__ import annotations

import pytest
from test_overlay_containers import (
    ONE_ETCD,
    client,
    eventually,
    ip_on,
    logged_lab,
    overlay,
    resolve,
    run,
    seen_everywhere,
)

pytestmark = pytest.mark.root


def test_a_rename_is_resolved_on_the_other_host() -> None:
    with logged_lab(2, etcd_members=1, daemon_args=ONE_ETCD) as the_lab:
        h1, h2 = the_lab.hosts
        overlay(h1, "ovren")
        seen_everywhere(the_lab, "ovren")
        asker = run(h1, "asker", "ovren")
        web = run(h2, "web", "ovren", aliases=["svc"])
        ip_web = ip_on(h2, web, "ovren")
        eventually(lambda: resolve(h1, asker, "web") == [ip_web], "web resolved on h1",
                   timeout=5, interval=0.05)
        client(h2).containers.rename(web, "web2")
        took = eventually(lambda: resolve(h1, asker, "web2") == [ip_web],
                          "web2 resolved on h1 after the rename", timeout=5, interval=0.02)
        print(f"the new name answered on h1 {took * 1000:.0f} ms after the rename on h2")
        assert resolve(h1, asker, "web") == []  # the old name is forgotten
        assert resolve(h1, asker, "svc") == [ip_web]  # aliases stay
        client(h2).containers.remove(web, force=True)
        eventually(lambda: resolve(h1, asker, "web2") == [], "web2 gone on h1", timeout=5)
