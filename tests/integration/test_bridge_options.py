"""Bridge network options through the docker CLI, the API and the nsnet CLI, read back from
the kernel: gateway mode ``routed`` (no NAT: the LAN reaches the container's own address by a
route, and sees it as the source), the interface prefix, per-endpoint sysctls, the default
host binding address, and options nsnet does not know refused instead of ignored.

The "LAN" is a second namespace on a veth (TEST-NET-3) with a route to the container subnet
through the test host, as a router on a real LAN would have for a routed network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import api_error, exec_, host_link, in_sandbox, ip_of, run

from nsnet.testing.hosts import Daemon, TestHost, sh
from nsnet.testing.lan import lan_machine

pytestmark = pytest.mark.root

LAN_IP = "203.0.113.2"
HOST_LAN_IP = "203.0.113.1"
B = "com.docker.network.bridge."
PREFIX = "com.docker.network.container_iface_prefix"
SYSCTLS = "com.docker.network.endpoint.sysctls"

# One TCP connection accepted in the LAN namespace; prints the peer's address.
ACCEPT_ONE = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777)); s.listen(1); s.settimeout(10)
conn, peer = s.accept(); print(peer[0], flush=True); conn.close()
"""
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5).close()
    print("connected")
except OSError as e:
    print("failed", e)
"""


@pytest.fixture
def lan(daemon: Daemon) -> Iterator[TestHost]:
    with lan_machine(daemon.host, host_addresses=[f"{HOST_LAN_IP}/24"],
                     lan_addresses=[f"{LAN_IP}/24"], prefix="nsbo") as other:
        yield other


def source_seen_by_lan(daemon: Daemon, lan: TestHost, cid: str) -> str:
    """The address a connection from the container arrives from, as the LAN sees it."""
    server = subprocess.Popen(["nsenter", f"--net={lan.path}", sys.executable, "-c",
                               ACCEPT_ONE], stdout=subprocess.PIPE, text=True)
    try:
        c = daemon.client()
        for _ in range(50):
            if exec_(c, cid, ["sh", "-c", f"echo hi | nc -w 2 {LAN_IP} 7777"])[0] == 0:
                break
        out, _ = server.communicate(timeout=15)
        return out.strip()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def lan_connects(lan: TestHost, ip: str, port: int) -> bool:
    out = sh("nsenter", f"--net={lan.path}", sys.executable, "-c", CONNECT, ip,
             str(port)).stdout
    return out.startswith("connected")


def lan_pings(lan: TestHost, ip: str) -> bool:
    return sh("ping", "-c1", "-W1", ip, ns=lan.name, check=False).returncode == 0


def test_routed_gateway_mode_no_nat_reachable_by_routing(daemon: Daemon, lan: TestHost) -> None:
    c = daemon.client()
    c.networks.create({"Name": "rt", "IPAM": {"Config": [{"Subnet": "10.88.0.0/24"}]},
                       "Options": {B + "gateway_mode_ipv4": "routed"}})
    c.networks.create({"Name": "nt", "IPAM": {"Config": [{"Subnet": "10.89.0.0/24"}]}})
    for subnet in ("10.88.0.0/24", "10.89.0.0/24"):
        lan.ip("route", "add", subnet, "via", HOST_LAN_IP)
    r = run(c, network="rt", name="r", cmd=["nc", "-ll", "-p", "8080", "-e", "true"])
    n = run(c, network="nt", name="n", cmd=["nc", "-ll", "-p", "8080", "-e", "true"])
    r_ip, n_ip = ip_of(c, r, "rt"), ip_of(c, n, "nt")
    # Out: the routed container keeps its own address; the nat one is masqueraded.
    assert source_seen_by_lan(daemon, lan, r) == r_ip
    assert source_seen_by_lan(daemon, lan, n) == HOST_LAN_IP
    # In: the routed container answers the LAN by its own address, the nat one does not.
    assert lan_pings(lan, r_ip)
    assert not lan_pings(lan, n_ip)
    # As in moby's routed mode, only ICMP (and published ports) are open from outside; the
    # unpublished port listens (the container's neighbour on its bridge connects).
    assert not lan_connects(lan, r_ip, 8080)
    r2 = run(c, network="rt", name="r2")
    assert exec_(c, r2, ["sh", "-c", f"nc -w 2 {r_ip} 8080 </dev/null"])[0] == 0
    rules = sh("nft", "list", "chain", "inet", "nsnet", "n-" + c.networks.inspect("rt")[
        "Id"][:12] + "-nat", ns=daemon.host.name).stdout
    # Its nat chain masquerades IPv6 only (gateway_mode_ipv6 stays nat); nothing for IPv4.
    masq = [ln for ln in rules.splitlines() if "masquerade" in ln]
    assert masq and all("meta nfproto ipv6" in ln for ln in masq)
    # The option reads back as given.
    assert c.networks.inspect("rt")["Options"] == {B + "gateway_mode_ipv4": "routed"}


def test_container_iface_prefix_docker_cli(daemon: Daemon) -> None:
    daemon.docker("network", "create", "-o", f"{PREFIX}=lan", "--subnet", "10.90.0.0/24",
                  "lannet")
    daemon.docker("network", "create", "--subnet", "10.91.0.0/24", "plain")
    daemon.docker("run", "-d", "--name", "p", "--network", "lannet", "busybox", "sleep",
                  "3600")
    daemon.docker("network", "connect", "plain", "p")
    c = daemon.client()
    names = {x["ifname"] for x in json.loads(in_sandbox(c, "p", "ip", "-j", "link",
                                                          check=True).stdout)}
    assert {"lan0", "eth0"} <= names and "eth1" not in names
    inspect = c.containers.inspect("p")
    assert inspect["NetworkSettings"]["Networks"]["lannet"]["IPAddress"].startswith("10.90.")
    out = daemon.docker("exec", "p", "ip", "-4", "-o", "addr", "show", "dev", "lan0").stdout
    assert "10.90.0." in out
    bad = daemon.docker("network", "create", "-o", f"{PREFIX}=a/b", "badnet", check=False)
    assert bad.returncode != 0 and "container_iface_prefix" in bad.stderr


def test_endpoint_sysctls_on_run_and_connect(daemon: Daemon) -> None:
    c = daemon.client()
    c.networks.create({"Name": "app", "IPAM": {"Config": [{"Subnet": "10.92.0.0/24"}]}})
    c.networks.create({"Name": "two", "IPAM": {"Config": [{"Subnet": "10.93.0.0/24"}]}})
    # docker CLI, advanced --network syntax (the CLI lowercases IFNAME; both are taken).
    daemon.docker("run", "-d", "--name", "s", "--network",
                  f"name=app,driver-opt={SYSCTLS}=net.ipv4.conf.IFNAME.log_martians=1",
                  "busybox", "sleep", "3600")
    assert in_sandbox(c, "s", "cat", "/proc/sys/net/ipv4/conf/eth0/log_martians",
                      check=True).stdout.strip() == "1"
    # Only that interface: the namespace's default is untouched.
    assert in_sandbox(c, "s", "cat", "/proc/sys/net/ipv4/conf/default/log_martians",
                      check=True).stdout.strip() == "0"
    # API connect with DriverOpts, two keys.
    c.networks.connect("two", "s", {"DriverOpts": {
        SYSCTLS: "net.ipv4.conf.IFNAME.forwarding=1,net.ipv4.conf.IFNAME.arp_ignore=2"}})
    for leaf, want in (("forwarding", "1"), ("arp_ignore", "2")):
        got = in_sandbox(c, "s", "cat", f"/proc/sys/net/ipv4/conf/eth1/{leaf}",
                         check=True).stdout.strip()
        assert got == want
    # Refused before anything is made, in moby's words: another interface, the whole
    # namespace, a key the kernel lacks.
    bad = daemon.docker("run", "--rm", "--network",
                        f"name=app,driver-opt={SYSCTLS}=net.ipv4.conf.eth0.forwarding=1",
                        "busybox", "true", check=False)
    assert bad.returncode != 0 and "unrecognised network interface sysctl" in bad.stderr
    e = api_error(c.networks.connect, "two", "s",
                  {"DriverOpts": {SYSCTLS: "net.ipv4.conf.all.forwarding=1"}})
    assert e.status == 400
    before = len(c.containers.list(all=True))
    x = run(c, network="app", name="x", start=False,
            NetworkingConfig={"EndpointsConfig": {"app": {"DriverOpts": {
                SYSCTLS: "net.ipv4.conf.IFNAME.nosuch=1"}}}})
    e = api_error(c.containers.start, x)
    assert "does not exist" in e.message
    assert c.containers.inspect(x)["State"]["Running"] is False
    assert len(c.containers.list(all=True)) == before + 1


def test_host_binding_and_unknown_options(daemon: Daemon) -> None:
    c = daemon.client()
    nid = c.networks.create({"Name": "local", "Options": {B + "host_binding_ipv4": "127.0.0.1",
                                                          "com.docker.network.driver.mtu": "1400",
                                                          B + "name": "br-opts"}})["Id"]
    net = c.networks.inspect(nid)
    assert net["Options"][B + "host_binding_ipv4"] == "127.0.0.1"
    link = host_link(daemon, "br-opts")
    assert link is not None and link["mtu"] == 1400
    # A -p without a host address publishes on the network's host_binding_ipv4.
    daemon.docker("run", "-d", "--name", "hb", "--network", "local", "-p", "18080:80",
                  "busybox", "sleep", "3600")
    assert daemon.docker("port", "hb").stdout.split() == ["80/tcp", "->", "127.0.0.1:18080"]
    daemon.docker("rm", "-f", "hb")
    for opts, words in (({"foo": "bar"}, "unknown bridge network option 'foo'"),
                        ({B + "host_binding_ipv4": "nowhere"}, "not an IP address"),
                        ({B + "gateway_mode_ipv4": "isolated"}, "needs an internal network"),
                        ({B + "gateway_mode_ipv4": "natty"}, "nat, nat-unprotected, routed"),
                        ({B + "inhibit_ipv4": "true"}, "unknown bridge network option")):
        e = api_error(c.networks.create, {"Name": "bad", "Options": opts})
        assert e.status == 400 and words in e.message
    p = daemon.docker("network", "create", "-o", "foo=bar", "bad", check=False)
    assert p.returncode != 0 and "unknown bridge network option" in p.stderr
    p = daemon.cli("network", "create", "-o", "foo=bar", "bad", check=False)
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1
    assert "bad" not in {n["Name"] for n in c.networks.list()}
    assert not [x for x in daemon.host.ip_json("link", "show")
                if str(x["ifname"]).startswith("br-") and x["ifname"] != "br-opts"]
