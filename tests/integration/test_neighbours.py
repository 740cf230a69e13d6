"""Peers find a re-made container at once; IPv4-only networks leave no IPv6 on the interface.

Issue 8 items 10 and 11. Every join draws a random MAC while the address is re-used (lowest
free), so a peer's neighbour entry points at a MAC that is gone until the kernel gives up on it
(28-70 s measured). The new interface must announce itself (gratuitous ARP, unsolicited
neighbour advertisement). The peer's view is read with ``ip neigh`` and ``ping`` run in the
peer's namespace from the host (independent of the daemon).
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from helpers import exec_, in_sandbox, ip_of, links_in, run, sandbox

from nsnet.client.api import Client
from nsnet.testing.hosts import Daemon, sh

pytestmark = pytest.mark.root

V6 = "fd00:8a::/64"


def mac_of(c: Client, cid: str, net: str) -> str:
    return str(c.containers.inspect(cid)["NetworkSettings"]["Networks"][net]["MacAddress"])


def neigh_mac(c: Client, peer: str, addr: str) -> str | None:
    out = in_sandbox(c, peer, "ip", "-j", "neigh", "show", addr).stdout
    entries = [e for e in json.loads(out or "[]") if e.get("lladdr")]
    return str(entries[0]["lladdr"]) if entries else None


def ping(c: Client, peer: str, addr: str) -> bool:
    return in_sandbox(c, peer, "ping", "-c1", "-W1", addr).returncode == 0


def reaches_within(c: Client, peer: str, addrs: list[str], mac: str, since: float,
                   limit: float = 1.0) -> dict[str, str | None]:
    """Wait up to ``limit`` s after ``since`` for the peer's entries to name ``mac``; then one
    ping each must go through. Returns what the peer's table held, for the failure message."""
    seen: dict[str, str | None] = {}
    while True:
        seen = {a: neigh_mac(c, peer, a) for a in addrs}
        if all(m == mac for m in seen.values()) or time.monotonic() - since > limit:
            break
        time.sleep(0.05)
    assert all(ping(c, peer, a) for a in addrs), f"peer cannot reach {addrs}: table {seen}"
    return seen


def test_restarted_container_is_reachable_at_once(daemon: Daemon) -> None:
    """bug (issue 8.10): restart draws a new MAC for the same address and told no one."""
    c = daemon.client()
    c.networks.create({"Name": "n"})
    peer = run(c, network="n", name="peer")
    b = run(c, network="n", name="b")
    addr, old = ip_of(c, b, "n"), mac_of(c, b, "n")
    assert ping(c, peer, addr) and neigh_mac(c, peer, addr) == old
    c.transport.call("POST", f"/containers/{b}/restart", {"t": 0})
    t = time.monotonic()
    assert ip_of(c, b, "n") == addr
    new = mac_of(c, b, "n")
    assert new != old
    seen = reaches_within(c, peer, [addr], new, t)
    assert seen == {addr: new}


def test_recreated_container_on_the_same_addresses_is_reachable_at_once(daemon: Daemon) -> None:
    """bug (issue 8.10): rm + run hands out the same IPv4 and IPv6 addresses with a new MAC
    (compose restart, up --scale, re-create); gratuitous ARP and unsolicited NA fix both."""
    c = daemon.client()
    c.networks.create({"Name": "d", "EnableIPv6": True, "IPAM": {"Config": [{"Subnet": V6}]}})
    peer = run(c, network="d", name="peer")
    b = run(c, network="d", name="b")
    info = c.containers.inspect(b)["NetworkSettings"]["Networks"]["d"]
    addrs = [info["IPAddress"], info["GlobalIPv6Address"]]
    assert all(ping(c, peer, a) for a in addrs)
    assert {neigh_mac(c, peer, a) for a in addrs} == {info["MacAddress"]}
    c.containers.remove(b, force=True)
    again = run(c, network="d", name="again")
    t = time.monotonic()
    info2 = c.containers.inspect(again)["NetworkSettings"]["Networks"]["d"]
    assert [info2["IPAddress"], info2["GlobalIPv6Address"]] == addrs
    seen = reaches_within(c, peer, addrs, info2["MacAddress"], t)
    assert set(seen.values()) == {info2["MacAddress"]}


def inet6(path: str) -> dict[str, list[str]]:
    return {i["ifname"]: [a["local"] for a in i["addr_info"] if a["family"] == "inet6"]
            for i in links_in(path)}


def test_ipv4_only_networks_leave_no_ipv6_on_the_interface(daemon: Daemon) -> None:
    """bug (issue 8.11): an fe80:: on every eth* made glibc sort round-robin answers by
    RFC 6724 and always pick the same replica. Docker 26+ disables IPv6 on such interfaces."""
    c = daemon.client()
    c.networks.create({"Name": "four"})
    c.networks.create({"Name": "six", "EnableIPv6": True, "IPAM": {"Config": [{"Subnet": V6}]}})
    x = run(c, network="four", name="x")
    c.networks.connect("six", x)
    path = sandbox(c, x)
    v6 = inet6(path)
    assert v6["lo"] == ["::1"]
    assert v6["eth0"] == []
    six_addr = c.containers.inspect(x)["NetworkSettings"]["Networks"]["six"]["GlobalIPv6Address"]
    assert six_addr in v6["eth1"]
    flags = {n: sh("nsenter", f"--net={path}", "cat",
                   f"/proc/sys/net/ipv6/conf/{n}/disable_ipv6").stdout.strip()
             for n in ("eth0", "eth1")}
    assert flags == {"eth0": "1", "eth1": "0"}
    # A connect at run time goes the same way: eth2 on an IPv4-only network has no IPv6.
    c.networks.create({"Name": "four2"})
    c.networks.connect("four2", x)
    assert inet6(path)["eth2"] == []


def test_round_robin_name_spreads_over_replicas(daemon: Daemon) -> None:
    """What 8.11 is about for users: 12 requests by name to 3 replicas reached one of them."""
    c = daemon.client()
    c.networks.create({"Name": "rr"})
    replicas = [run(c, cmd=["httpd", "-f", "-p", "80", "-h", "/etc"], network="rr",
                    aliases=["web"]) for _ in range(3)]
    cli = run(c, network="rr")
    hits: Counter[str] = Counter()
    for _ in range(12):
        code, out, _ = exec_(c, cli, ["wget", "-qO-", "http://web/hostname"])
        assert code == 0
        hits[out.strip()] += 1
    assert set(hits) <= {r[:12] for r in replicas}
    assert len(hits) > 1, f"every request went to one replica: {dict(hits)}"
