"""Membership end to end: three nsnetd joined to one etcd in the lab, seen through
``nsnet node ls`` on every host. The lease is shortened to 3 s for the test
(NSNET_TESTING=1 NSNET_TEST_NODE_TTL=3; production is 10 s), so a killed host must vanish
from the others' views within 15 s with room to spare, and a live host must never drop out."""

from __future__ import annotations

import json
import time

import pytest

from nsnet.testing.hosts import Daemon
from nsnet.testing.multihost import LabHost, etcd_address, lab

pytestmark = pytest.mark.root

TTL = 3
STORE = f"etcd://{etcd_address(0)}:2379"


def nodes(d: Daemon) -> list[dict[str, str]]:
    out = d.cli("node", "ls", "--format", "json").stdout
    return [json.loads(line) for line in out.splitlines()]


def view(h: LabHost) -> dict[str, str]:
    """VTEP -> status as host ``h`` sees the cluster."""
    assert h.daemon is not None
    return {n["VTEP"].rsplit(":", 1)[0]: n["Status"] for n in nodes(h.daemon)}


def wait_for(cond: object, what: str, timeout: float) -> float:
    start = time.monotonic()
    while not cond():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - start


def test_nodes_join_leave_and_survive_an_etcd_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSNET_TESTING", "1")
    monkeypatch.setenv("NSNET_TEST_NODE_TTL", str(TTL))
    args = ("--cluster-store", STORE, "--cluster-advertise", "eth0")
    with lab(3, etcd_members=1, daemon_args=args) as the_lab:
        h1, h2, h3 = the_lab.hosts
        everyone = {h.address: "ready" for h in the_lab.hosts}
        for h in the_lab.hosts:
            wait_for(lambda h=h: view(h) == everyone, f"{h.label} sees all three", 10)
            assert h.daemon is not None
            [me] = [n for n in nodes(h.daemon) if n["Self"] == "true"]
            assert me["VTEP"] == f"{h.address}:4789"
            info = h.daemon.cli("info").stdout
            assert f"Cluster Store: {STORE}" in info
            assert f"Cluster Advertise: {h.address}:4789" in info
        assert h1.daemon is not None and h2.daemon is not None and h3.daemon is not None
        # A running container is counted in the host's record (published at keepalive pace).
        h2.daemon.cli("run", "-d", "--name", "c1", "busybox", "sleep", "60")
        wait_for(lambda: any(n["VTEP"].startswith(h2.address) and n["Containers"] == "1"
                             for n in nodes(h1.daemon)),  # type: ignore[union-attr]
                 "h2's container count on h1", 10)

        # Live hosts never flap: watched for more than two lease lengths.
        deadline = time.monotonic() + 2 * TTL + 1
        while time.monotonic() < deadline:
            assert view(h1) == everyone
            time.sleep(0.3)

        # kill -9: no goodbye, the lease runs out and every other host drops it.
        h3.daemon.kill()
        left = {h1.address: "ready", h2.address: "ready"}
        took = max(wait_for(lambda h=h: view(h) == left, f"{h.label} drops h3", 15)
                   for h in (h1, h2))
        print(f"killed host gone after {took:.1f} s (TTL {TTL} s)")

        # etcd entirely down: the last view stays, marked unknown; the daemons keep serving.
        assert the_lab.etcd is not None
        [member] = the_lab.etcd.members
        member.stop()
        wait_for(lambda: set(view(h1).values()) == {"unknown"}, "h1 notices the outage", 10)
        assert set(view(h1)) == set(left)
        h1.daemon.cli("ps")
        time.sleep(TTL + 1)  # every lease has run out on the clock of a live etcd
        member.restart()
        for h in (h1, h2):
            wait_for(lambda h=h: view(h) == left, f"{h.label} re-registered, no restart", 15)
        assert "store reachable, 2 live nodes" in h1.daemon.cli("info").stdout
