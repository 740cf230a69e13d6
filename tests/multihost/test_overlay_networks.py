"""Overlay networks across lab hosts: one etcd, three nsnetd, each with the cluster flags.

Made on one host (by the real docker CLI, no swarm), seen on every host with one ID and scope
global; racing creates on two hosts never share a name, subnet or VNI; a removal is refused
while another host holds an address on the network, naming that host, and then removes it
everywhere; with etcd down an overlay create is a 503 while local networks and containers
keep working, and once etcd is back a create works again.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from nsnet.client.errors import APIError
from nsnet.testing.hosts import sh
from nsnet.testing.multihost import Lab, LabHost, etcd_address, lab

pytestmark = pytest.mark.root

ARGS = ["--cluster-store", f"etcd://{etcd_address(0)}:2379", "--cluster-advertise", "eth0"]


def create(h: LabHost, name: str, **body: Any) -> dict[str, Any]:
    assert h.daemon is not None
    return h.daemon.client().networks.create({"Name": name, "Driver": "overlay", **body})


def status_of(fn: Callable[[], object]) -> tuple[int, str]:
    try:
        fn()
    except APIError as e:
        return e.status, e.message
    return 200, ""


def eventually(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out: {what}")


def names_on(h: LabHost) -> dict[str, dict[str, Any]]:
    assert h.daemon is not None
    return {n["Name"]: n for n in h.daemon.client().networks.list()}


def etcdctl(the_lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    assert the_lab.etcd is not None and the_lab.etcd_ns is not None
    return sh("etcdctl", "--endpoints", ",".join(the_lab.etcd.endpoints), *args,
              ns=the_lab.etcd_ns.name)


def test_overlay_networks_across_three_hosts() -> None:
    with lab(3, etcd_members=1, daemon_args=ARGS) as the_lab:
        h1, h2, h3 = the_lab.hosts
        assert h1.daemon is not None and h3.daemon is not None
        # The docker CLI, unchanged and without a swarm.
        p = subprocess.run(["docker", "network", "create", "-d", "overlay", "--subnet",
                            "10.20.0.0/24", "-o", "com.docker.network.driver.mtu=1400",
                            "ovnet"], env=h1.daemon.env, capture_output=True, text=True,
                           check=False, timeout=30)
        assert p.returncode == 0, p.stderr
        net_id = p.stdout.strip()
        eventually(lambda: all("ovnet" in names_on(h) for h in the_lab.hosts), "mirrors")
        for h in the_lab.hosts:
            assert h.daemon is not None
            n = h.daemon.client().networks.inspect("ovnet")
            assert (n["Id"], n["Scope"], n["Driver"]) == (net_id, "global", "overlay")
            assert n["IPAM"]["Config"] == [{"Subnet": "10.20.0.0/24", "Gateway": "10.20.0.1"}]
            assert n["Options"]["com.docker.network.driver.mtu"] == "1400"
            assert n["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4096"
        # The name is taken cluster-wide, whichever host asks.
        assert status_of(lambda: create(h3, "ovnet"))[0] == 409

        # Racing creates on two hosts: one name, one winner; two names, two subnets/VNIs.
        with ThreadPoolExecutor(2) as pool:
            same = list(pool.map(lambda h: status_of(lambda: create(h, "race")), [h1, h2]))
            assert sorted(s for s, _ in same) == [200, 409], same
            ids = list(pool.map(lambda a: create(a[0], a[1])["Id"], [(h1, "ra"), (h2, "rb")]))
        eventually(lambda: {"race", "ra", "rb"} <= set(names_on(h3)), "the racers on h3")
        seen = names_on(h3)
        subnets = {n["IPAM"]["Config"][0]["Subnet"] for k, n in seen.items() if k != "bridge"
                   and n["Scope"] == "global"}
        vnis = {n["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
                for n in seen.values() if n["Scope"] == "global"}
        assert len(subnets) == len(vnis) == 4 and {seen["ra"]["Id"], seen["rb"]["Id"]} == set(ids)

        # A removal while h2 holds an address on the network: 403 naming h2, nothing gone.
        node2 = (h2.root(the_lab.root) / "data" / "node-id").read_text().strip()
        key = f"/nsnet/v1/ipam/addr/{net_id}/10.20.0.5"
        etcdctl(the_lab, "put", key, json.dumps({"endpoint": "e" * 64, "node": node2}))
        code, msg = status_of(lambda: h3.daemon.client().networks.remove("ovnet"))  # type: ignore[union-attr]
        assert code == 403 and h2.address in msg and h1.address not in msg, msg
        assert "ovnet" in names_on(h1)
        etcdctl(the_lab, "del", key)
        h3.daemon.client().networks.remove("ovnet")
        eventually(lambda: not any("ovnet" in names_on(h) for h in the_lab.hosts),
                   "the removal everywhere")
        for name in ("race", "ra", "rb"):
            h3.daemon.client().networks.remove(name)

        # etcd down: overlay changes are 503, local networks and containers still work.
        assert the_lab.etcd is not None
        member = the_lab.etcd.members[0]
        member.stop()
        code, msg = status_of(lambda: create(h1, "later"))
        assert code == 503, msg
        c1 = h1.daemon.client()
        c1.networks.create({"Name": "local1", "Driver": "bridge"})
        ctr = c1.containers.create({"Image": "busybox", "Cmd": ["sleep", "30"],
                                    "HostConfig": {"NetworkMode": "local1"}}, name="c1")
        c1.containers.start(ctr["Id"])
        assert c1.containers.inspect("c1")["State"]["Running"]
        c1.containers.remove("c1", force=True)
        c1.networks.remove("local1")
        # etcd back: a create works again, without restarting any daemon.
        member.start()
        member.wait_ready()
        eventually(lambda: status_of(lambda: create(h2, "later"))[0] == 200, "a create after "
                   "etcd returned", timeout=15)
        eventually(lambda: "later" in names_on(h1) and "later" in names_on(h3),
                   "the resync", timeout=10)
        h1.daemon.client().networks.remove("later")
