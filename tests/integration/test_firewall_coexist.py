"""nsnet beside another firewall whose FORWARD policy is DROP (Docker's usual setting).

With ``br_netfilter`` on, bridged packets also traverse ``ip filter FORWARD``; an accept in
``inet nsnet`` cannot override a drop there, so nsnet adds its own accepts to that chain
(comment ``nsnet:<id12>``). The "outside" is a second namespace on a veth with TEST-NET-3
addresses and no route back to the containers: a reply proves the masquerade worked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from helpers import exec_, ip_of, run

from nsnet.client.api import Client
from nsnet.testing.hosts import Daemon, TestHost, sh
from nsnet.testing.lan import lan_machine

pytestmark = pytest.mark.root

OUTSIDE_IP = "203.0.113.2"


@pytest.fixture
def outside(daemon: Daemon) -> Iterator[TestHost]:
    """A machine beyond the test host: ``wan0`` (203.0.113.1) there, ``wan0p`` in it."""
    with lan_machine(daemon.host, host_addresses=["203.0.113.1/24"],
                     lan_addresses=[f"{OUTSIDE_IP}/24"], ifname="wan0", prefix="nswan") as other:
        yield other


def foreign_firewall(host: TestHost) -> None:
    """What a host running Docker looks like: FORWARD drops, bridged packets see iptables."""
    for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
        path = f"/proc/sys/net/bridge/{key}"
        if os.path.exists(path):
            sh("sh", "-c", f"echo 1 > {path}", ns=host.name)
    sh("iptables", "-P", "FORWARD", "DROP", ns=host.name)
    sh("ip6tables", "-P", "FORWARD", "DROP", ns=host.name)


def ping(c: Client, cid: str, ip: str) -> int:
    return exec_(c, cid, ["ping", "-c1", "-W1", ip])[0]


def ours(host: TestHost, family: str = "ip") -> dict[str, list[dict[str, object]]]:
    """nsnet's rules in ``<family> filter FORWARD`` by comment, read with nft -j."""
    out: dict[str, list[dict[str, object]]] = {}
    for item in host.nft_json("list", "chain", family, "filter", "FORWARD"):
        rule = item.get("rule")
        if isinstance(rule, dict) and str(rule.get("comment", "")).startswith("nsnet:"):
            out.setdefault(str(rule["comment"]), []).append(rule)
    return out


def iptables_s(host: TestHost, tool: str = "iptables") -> str:
    """The chain as iptables-nft decodes it; fails if nsnet left a rule it cannot read."""
    return sh(tool, "-S", "FORWARD", ns=host.name).stdout


def test_forward_drop_set_before_start(daemon: Daemon, outside: TestHost) -> None:
    daemon.stop()
    foreign_firewall(daemon.host)
    daemon.start()
    c = daemon.client()
    app = c.networks.create({"Name": "app"})["Id"]
    inner = c.networks.create({"Name": "inner", "Internal": True})["Id"]
    a = run(c, network="app", name="a")
    b = run(c, network="app", name="b")
    d1 = run(c, name="d1")
    d2 = run(c, name="d2")
    x = run(c, network="inner", name="x")
    y = run(c, network="inner", name="y")
    # Same user bridge, same default bridge, outbound through NAT from both.
    assert ping(c, a, ip_of(c, b, "app")) == 0
    assert ping(c, d1, ip_of(c, d2, "bridge")) == 0
    assert ping(c, a, OUTSIDE_IP) == 0
    assert ping(c, d1, OUTSIDE_IP) == 0
    # nsnet's own table still judges: isolation between networks, internal stays inside.
    assert ping(c, x, ip_of(c, y, "inner")) == 0
    assert ping(c, x, OUTSIDE_IP) != 0
    assert ping(c, a, ip_of(c, d1, "bridge")) != 0
    # Our rules are ones iptables-nft can show (Docker's iptables calls keep working).
    rules = iptables_s(daemon.host)
    assert f'-A FORWARD -i br-{app[:12]} -m comment --comment "nsnet:{app[:12]}"' in rules
    assert f'-A FORWARD -o br-{app[:12]} -m comment --comment "nsnet:{app[:12]}"' in rules
    assert "-i nsnet0" in rules and "-o nsnet0" in rules
    assert "-P FORWARD DROP" in rules
    # No IPv6 subnet, nothing in ip6 filter; ip6tables still reads its chain.
    assert ours(daemon.host, "ip6") == {}
    iptables_s(daemon.host, "ip6tables")
    # network rm takes the network's rules with it.
    for cid in (x, y):
        c.containers.remove(cid, force=True)
    c.networks.remove("inner")
    assert f"nsnet:{inner[:12]}" not in ours(daemon.host)
    for cid in (a, b):
        c.containers.remove(cid, force=True)
    c.networks.remove("app")
    bridge_id = c.networks.inspect("bridge")["Id"][:12]
    assert set(ours(daemon.host)) == {f"nsnet:{bridge_id}"}


def test_forward_drop_set_later_is_repaired_by_reconcile(daemon: Daemon,
                                                         outside: TestHost) -> None:
    c = daemon.client()
    nid = c.networks.create({"Name": "v6net", "EnableIPv6": True,
                             "IPAM": {"Config": [{"Subnet": "10.61.0.0/24"},
                                                 {"Subnet": "fd00:61::/64"}]}})["Id"]
    a = run(c, network="v6net", name="a")
    b = run(c, network="v6net", name="b")
    b6 = c.containers.inspect(b)["NetworkSettings"]["Networks"]["v6net"]["GlobalIPv6Address"]
    assert ping(c, a, ip_of(c, b, "v6net")) == 0
    # Docker starts after nsnet (or the admin tightens the firewall): until reconcile, the
    # new policy wins; nsnet does not fight it behind the operator's back.
    foreign_firewall(daemon.host)
    c.reconcile()
    assert ping(c, a, ip_of(c, b, "v6net")) == 0
    assert ping(c, a, b6) == 0
    assert ping(c, a, OUTSIDE_IP) == 0
    assert f"nsnet:{nid[:12]}" in ours(daemon.host, "ip6")
    assert "-i br-" in iptables_s(daemon.host, "ip6tables")
    # A network created now gets its accepts at once.
    c.networks.create({"Name": "late"})
    p = run(c, network="late", name="p")
    q = run(c, network="late", name="q")
    assert ping(c, p, ip_of(c, q, "late")) == 0
    # Reconcile twice changes nothing (no duplicate rules) ...
    before = ours(daemon.host)
    c.reconcile()
    after = ours(daemon.host)
    assert {k: len(v) for k, v in after.items()} == {k: len(v) for k, v in before.items()}
    assert all(len(v) == 2 for v in after.values()), after
    # ... restores what a flush removed, and removes ours that no network owns, leaving
    # everyone else's rules alone.
    sh("iptables", "-F", "FORWARD", ns=daemon.host.name)
    # A leftover of a network that is gone (a crash between the two removals), as nsnet
    # writes it: iptables' own "-m comment" is an xt match that nft cannot read.
    sh("nft", "add rule ip filter FORWARD iifname br-deadbeef0000 counter accept comment "
       '"nsnet:deadbeef0000"', ns=daemon.host.name)
    sh("iptables", "-A", "FORWARD", "-i", "somebody0", "-j", "ACCEPT", ns=daemon.host.name)
    assert ping(c, a, ip_of(c, b, "v6net")) != 0
    report = c.reconcile()
    assert ping(c, a, ip_of(c, b, "v6net")) == 0
    assert "nsnet:deadbeef0000" not in ours(daemon.host)
    assert "deadbeef0000" in json.dumps(report)
    assert "-A FORWARD -i somebody0 -j ACCEPT" in iptables_s(daemon.host)
    # The whole table re-made behind nsnet's back (new handles): a new network still gets its
    # accepts there, and removing one whose rules went with the old table is no error.
    sh("nft", "delete", "table", "ip", "filter", ns=daemon.host.name)
    sh("iptables", "-P", "FORWARD", "DROP", ns=daemon.host.name)
    n2 = c.networks.create({"Name": "later2"})["Id"]
    assert len(ours(daemon.host)[f"nsnet:{n2[:12]}"]) == 2
    c.containers.remove(p, force=True)
    c.containers.remove(q, force=True)
    c.networks.remove("late")
    c.networks.remove("later2")
    assert f"nsnet:{n2[:12]}" not in ours(daemon.host)
