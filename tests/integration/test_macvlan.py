"""macvlan networks on a veth standing in for the physical parent, with a "LAN machine"
namespace on its far side (TEST-NET-2 addresses)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from helpers import api_error, exec_, in_sandbox, ip_of, links_in, run, sandbox

from nsnet.testing.hosts import Daemon, TestHost, sh
from nsnet.testing.lan import lan_machine

pytestmark = pytest.mark.root

LAN_IP = "198.51.100.1"


@pytest.fixture
def lan(daemon: Daemon) -> Iterator[TestHost]:
    """Another machine on the segment: parent ``lan0`` in the daemon's host, ``lan0p`` there."""
    with lan_machine(daemon.host, lan_addresses=[f"{LAN_IP}/24"]) as other:
        yield other


def macnet(c: object, name: str, **opts: str) -> str:
    body = {"Name": name, "Driver": "macvlan",
            "IPAM": {"Config": [{"Subnet": "198.51.100.0/24", "Gateway": LAN_IP,
                                 "IPRange": "198.51.100.64/26"}]},
            "Options": {"parent": "lan0", **opts}}
    return str(c.networks.create(body)["Id"])  # type: ignore[attr-defined]


def ping(c: object, cid: str, ip: str) -> int:
    return exec_(c, cid, ["ping", "-c1", "-W2", ip])[0]  # type: ignore[arg-type]


def test_bridge_mode_lan_dns_and_connect(daemon: Daemon, lan: TestHost) -> None:
    c = daemon.client()
    macnet(c, "mac")
    a = run(c, network="mac", name="a")
    b = run(c, network="mac", name="b")
    eth0 = next(x for x in links_in(sandbox(c, a)) if x["ifname"] == "eth0")
    details = json.loads(in_sandbox(c, a, "ip", "-d", "-j", "link", "show", "eth0").stdout)
    assert details[0]["linkinfo"]["info_kind"] == "macvlan"
    assert details[0]["linkinfo"]["info_data"]["mode"] == "bridge"
    assert ip_of(c, a, "mac") == "198.51.100.64"
    assert ping(c, a, LAN_IP) == 0
    assert ping(c, a, ip_of(c, b, "mac")) == 0
    route = json.loads(in_sandbox(c, a, "ip", "-j", "route", "show", "default").stdout)
    assert route[0]["gateway"] == LAN_IP
    # The LAN machine sees the container's own MAC (no NAT, no bridge in between).
    lan.ip("neigh", "flush", "all")
    sh("ping", "-c1", "-W2", ip_of(c, a, "mac"), ns=lan.name)
    neigh = lan.ip_json("neigh", "show", ip_of(c, a, "mac"))
    assert neigh and neigh[0]["lladdr"] == eth0["address"]
    # Embedded DNS works on macvlan networks too.
    out = in_sandbox(c, a, "dig", "+short", "@127.0.0.11", "b").stdout.split()
    assert out == [ip_of(c, b, "mac")]
    # The host cannot reach its own macvlan containers without the shim (kernel rule).
    assert sh("ping", "-c1", "-W1", ip_of(c, a, "mac"), ns=daemon.host.name,
              check=False).returncode != 0
    # Connect / disconnect while running.
    c.networks.create({"Name": "br1"})
    c.networks.connect("br1", a)
    assert {x["ifname"] for x in links_in(sandbox(c, a))} == {"lo", "eth0", "eth1"}
    c.networks.disconnect("mac", a)
    assert {x["ifname"] for x in links_in(sandbox(c, a))} == {"lo", "eth1"}
    c.networks.connect("mac", a, {"IPAMConfig": {"IPv4Address": "198.51.100.70"}})
    assert ping(c, b, "198.51.100.70") == 0


def test_private_mode_and_host_access(daemon: Daemon, lan: TestHost) -> None:
    c = daemon.client()
    macnet(c, "priv", macvlan_mode="private")
    a = run(c, network="priv", name="a")
    b = run(c, network="priv", name="b")
    assert ping(c, a, LAN_IP) == 0
    assert ping(c, a, ip_of(c, b, "priv")) != 0, "private mode: no container-to-container"
    for x in (a, b):
        c.containers.remove(x, force=True)
    c.networks.remove("priv")
    nid = macnet(c, "shim", **{"com.nsnet.macvlan.host_access": "true"})
    s1 = run(c, network="shim", name="s1")
    shim = f"nsh-{nid[:8]}"
    assert any(x["ifname"] == shim for x in daemon.host.ip_json("link", "show"))
    assert sh("ping", "-c1", "-W2", ip_of(c, s1, "shim"), ns=daemon.host.name).returncode == 0
    aux = c.networks.inspect("shim")["IPAM"]["Config"][0]["AuxiliaryAddresses"]
    assert aux == {"nsnet-host-shim": "198.51.100.254"}
    c.containers.remove(s1, force=True)
    c.networks.remove("shim")
    assert not any(x["ifname"] == shim for x in daemon.host.ip_json("link", "show"))
    routes = json.dumps(daemon.host.ip_json("route", "show"))
    assert "198.51.100.64" not in routes


def test_internal_and_parentless(daemon: Daemon) -> None:
    c = daemon.client()
    nid = c.networks.create({"Name": "island", "Driver": "macvlan", "Internal": True,
                             "IPAM": {"Config": [{"Subnet": "203.0.113.0/24"}]}})["Id"]
    parent = f"nsm-{nid[:8]}"
    names = {x["ifname"] for x in daemon.host.ip_json("link", "show")}
    assert parent in names and parent + "p" in names
    a = run(c, network="island", name="a")
    b = run(c, network="island", name="b")
    assert ping(c, a, ip_of(c, b, "island")) == 0
    assert json.loads(in_sandbox(c, a, "ip", "-j", "route", "show", "default").stdout) == []
    for x in (a, b):
        c.containers.remove(x, force=True)
    c.networks.remove("island")
    names = {x["ifname"] for x in daemon.host.ip_json("link", "show")}
    assert parent not in names and parent + "p" not in names


def test_bad_macvlan_requests(daemon: Daemon, lan: TestHost) -> None:
    c = daemon.client()
    e = api_error(c.networks.create, {"Name": "x", "Driver": "macvlan",
                                      "Options": {"parent": "nosuch0"}})
    assert e.status == 404 and "nosuch0" in e.message
    e = api_error(c.networks.create, {"Name": "x", "Driver": "macvlan",
                                      "Options": {"parent": "lan0", "macvlan_mode": "weird"}})
    assert e.status == 400
    e = api_error(c.networks.create, {"Name": "x", "Driver": "macvlan",
                                      "Options": {"parent": "lan0.50"}})
    assert e.status == 503 and "802.1q" in e.message
    assert "lan0.50" not in {x["ifname"] for x in daemon.host.ip_json("link", "show")}
    macnet(c, "m1")
    e = api_error(c.networks.create, {"Name": "m2", "Driver": "macvlan",
                                      "IPAM": {"Config": [{"Subnet": "198.51.100.128/25"}]},
                                      "Options": {"parent": "lan0"}})
    assert e.status == 403 and "overlaps" in e.message
    assert {n["Name"] for n in c.networks.list()} == {"bridge", "host", "none", "m1"}


def test_ipvlan(daemon: Daemon, lan: TestHost) -> None:
    c = daemon.client()
    body = {"Name": "ipv", "Driver": "ipvlan", "Options": {"parent": "lan0",
                                                           "ipvlan_mode": "l2"},
            "IPAM": {"Config": [{"Subnet": "198.51.100.0/24", "Gateway": LAN_IP}]}}
    try:
        c.networks.create(body)
    except Exception as e:  # noqa: BLE001 - inspected below
        msg = getattr(e, "message", str(e))
        assert getattr(e, "status", 0) == 503 and "ipvlan" in msg and "CONFIG_IPVLAN" in msg
        assert {n["Name"] for n in c.networks.list()} == {"bridge", "host", "none"}
        pytest.skip(f"this kernel has no ipvlan links: {msg}")
    a = run(c, network="ipv", name="a")
    assert ping(c, a, LAN_IP) == 0
