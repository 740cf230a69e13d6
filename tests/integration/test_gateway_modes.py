"""The bridge gateway modes beyond ``nat`` and ``routed``'s outbound side, as moby 28 has them,
checked from a "LAN" namespace with a route to the container subnets through the test host
(as a router on a real LAN would have), from containers on other networks, and from the host.

- ``routed``: a container's published ports are reached at its own address (no host port
  needed), from the LAN and from other networks; unpublished ports are not.
- ``nat``: the same published port is reached only through the host's address (nsnet is
  stricter than moby here, which also lets direct routing reach published ports).
- ``nat-unprotected``: every port is open to direct routing from outside, never from another
  network's containers.
- ``isolated`` (internal networks only): no address on the bridge, so the host is not on the
  network; the containers still reach each other.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import exec_, ip_of, run, sandbox

from nsnet.testing.hosts import Daemon, TestHost, sh
from nsnet.testing.lan import lan_machine

pytestmark = pytest.mark.root

LAN_IP = "198.51.100.2"
HOST_LAN_IP = "198.51.100.1"
LAN_IP6 = "2001:db8:5::2"
HOST_LAN_IP6 = "2001:db8:5::1"
B = "com.docker.network.bridge."
# Listens on every port given, answering each connection and going on (busybox nc).
LISTEN = "for p in {}; do nc -ll -p $p -e true & done; wait"
CONNECT = """
import socket, sys
ip, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if proto == "tcp":
        socket.create_connection((ip, port), timeout=1.5).close()
    else:
        af = socket.AF_INET6 if ":" in ip else socket.AF_INET
        s = socket.socket(af, socket.SOCK_DGRAM); s.settimeout(1.5)
        s.sendto(b"hi", (ip, port)); s.recv(10)
    print("connected")
except OSError as e:
    print("failed", e)
"""
# Answers every UDP datagram and accepts every TCP connection, on IPv6 (and IPv4).
SERVE = """
import socket, sys, threading
port = int(sys.argv[1])
def tcp():
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port)); s.listen(16)
    while True:
        s.accept()[0].close()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("::", port))
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
while True:
    data, peer = u.recvfrom(100); u.sendto(b"ok", peer)
"""


@pytest.fixture
def lan(daemon: Daemon) -> Iterator[TestHost]:
    with lan_machine(daemon.host, host_addresses=[f"{HOST_LAN_IP}/24", f"{HOST_LAN_IP6}/64"],
                     lan_addresses=[f"{LAN_IP}/24", f"{LAN_IP6}/64"], prefix="nsgw") as other:
        yield other


def lan_connects(lan: TestHost, ip: str, port: int, proto: str = "tcp") -> bool:
    return ns_connects(lan.path, ip, port, proto)


def ns_connects(ns_path: str, ip: str, port: int, proto: str = "tcp") -> bool:
    out = sh("nsenter", f"--net={ns_path}", sys.executable, "-c", CONNECT, ip, str(port),
             proto).stdout
    return out.startswith("connected")


def serve_v6(procs: list[subprocess.Popen[str]], ns_path: str, port: int) -> None:
    """TCP and UDP on ``port`` in a container's namespace (a host python: busybox nc has no
    UDP server)."""
    p = subprocess.Popen(["nsenter", f"--net={ns_path}", sys.executable, "-c", SERVE,
                          str(port)], stdout=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"


ACCEPT_ONE = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777)); s.listen(1); s.settimeout(10)
print("ready", flush=True)
conn, peer = s.accept(); print(peer[0], flush=True)
"""


def source_seen_by_lan(daemon: Daemon, lan: TestHost, cid: str) -> str:
    server = subprocess.Popen(["nsenter", f"--net={lan.path}", sys.executable, "-c",
                               ACCEPT_ONE], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert container_connects(daemon, cid, LAN_IP, 7777)
        return server.stdout.readline().strip()
    finally:
        server.kill()
        server.wait()


def container_connects(daemon: Daemon, cid: str, ip: str, port: int) -> bool:
    code, _, _ = exec_(daemon.client(), cid, ["sh", "-c", f"nc -w 2 {ip} {port} </dev/null"])
    return code == 0


def serve(daemon: Daemon, name: str, network: str, ports: list[int], *publish: str) -> str:
    args = [x for p in publish for x in ("-p", p)]
    daemon.docker("run", "-d", "--name", name, "--network", network, *args, "busybox", "sh",
                  "-c", LISTEN.format(" ".join(map(str, ports))))
    return str(daemon.client().containers.inspect(name)["Id"])


def open_set(daemon: Daemon) -> str:
    return sh("nft", "list", "set", "inet", "nsnet", "open4", ns=daemon.host.name).stdout


def test_routed_opens_published_ports_at_the_containers_address(daemon: Daemon,
                                                                lan: TestHost) -> None:
    daemon.docker("network", "create", "--subnet", "10.86.0.0/24", "-o",
                  f"{B}gateway_mode_ipv4=routed", "rt")
    daemon.docker("network", "create", "--subnet", "10.85.0.0/24", "nt")
    for subnet in ("10.86.0.0/24", "10.85.0.0/24"):
        lan.ip("route", "add", subnet, "via", HOST_LAN_IP)
    web = serve(daemon, "web", "rt", [80, 81], "80")
    nat = serve(daemon, "natweb", "nt", [80, 81], "8090:80")
    c = daemon.client()
    web_ip, nat_ip = ip_of(c, web, "rt"), ip_of(c, nat, "nt")
    # Routed: the published port at the container's own address, from the LAN and from a
    # container on another network; the unpublished one is closed to both.
    assert lan_connects(lan, web_ip, 80)
    assert not lan_connects(lan, web_ip, 81)
    assert container_connects(daemon, nat, web_ip, 80)
    assert not container_connects(daemon, nat, web_ip, 81)
    # nat: through the host's address only, never by routing to the container.
    assert lan_connects(lan, HOST_LAN_IP, 8090)
    assert not lan_connects(lan, nat_ip, 80)
    assert not container_connects(daemon, web, nat_ip, 80)
    # The opening goes with the container, exactly.
    assert f"{web_ip} . tcp . 80" in open_set(daemon)
    daemon.docker("rm", "-f", "web")
    assert web_ip not in open_set(daemon)
    assert not lan_connects(lan, web_ip, 80)


def test_nat_unprotected_opens_every_port_to_outside_but_not_to_other_networks(
        daemon: Daemon, lan: TestHost) -> None:
    daemon.docker("network", "create", "--subnet", "10.84.0.0/24", "-o",
                  f"{B}gateway_mode_ipv4=nat-unprotected", "nu")
    daemon.docker("network", "create", "--subnet", "10.83.0.0/24", "other")
    lan.ip("route", "add", "10.84.0.0/24", "via", HOST_LAN_IP)
    app = serve(daemon, "app", "nu", [8080])
    neighbour = serve(daemon, "neighbour", "other", [1])
    c = daemon.client()
    app_ip = ip_of(c, app, "nu")
    assert lan_connects(lan, app_ip, 8080)  # unpublished, yet open to direct routing
    assert not container_connects(daemon, neighbour, app_ip, 8080)  # not from other networks
    # Outbound it is nat: the LAN sees the host's address.
    assert source_seen_by_lan(daemon, lan, app) == HOST_LAN_IP


def test_isolated_internal_network_has_no_address_on_the_bridge(daemon: Daemon) -> None:
    bad = daemon.docker("network", "create", "-o", f"{B}gateway_mode_ipv4=isolated", "iso",
                        check=False)
    assert bad.returncode != 0 and "needs an internal network" in bad.stderr
    daemon.docker("network", "create", "--internal", "--subnet", "10.82.0.0/24", "-o",
                  f"{B}gateway_mode_ipv4=isolated", "iso")
    c = daemon.client()
    nid = str(c.networks.inspect("iso")["Id"])
    a = serve(daemon, "a", "iso", [80])
    b = serve(daemon, "b", "iso", [80])
    bridge = f"br-{nid[:12]}"
    [link] = daemon.host.ip_json("addr", "show", "dev", bridge)
    assert [a for a in link["addr_info"] if a["family"] == "inet"] == []  # type: ignore[attr-defined]
    # The containers reach each other; the host is not on their network.
    assert container_connects(daemon, b, ip_of(c, a, "iso"), 80)
    assert sh("ping", "-c1", "-W1", ip_of(c, a, "iso"), ns=daemon.host.name,
              check=False).returncode != 0
    assert c.networks.inspect("iso")["Options"] == {f"{B}gateway_mode_ipv4": "isolated"}


def test_routed_and_unprotected_ipv6_over_tcp_and_udp(daemon: Daemon, lan: TestHost,
                                                     servers: list[subprocess.Popen[str]]
                                                     ) -> None:
    """The same per family: an IPv6 ``routed`` network opens its published container ports
    (``open6``, TCP and UDP) at the container's address; an IPv6 ``nat-unprotected`` one
    opens every port to the LAN, none to another network's containers."""
    c = daemon.client()
    c.networks.create({"Name": "rt6", "EnableIPv6": True, "IPAM": {"Config": [
        {"Subnet": "10.81.0.0/24"}, {"Subnet": "fd00:81::/64"}]},
        "Options": {f"{B}gateway_mode_ipv6": "routed"}})
    c.networks.create({"Name": "nu6", "EnableIPv6": True, "IPAM": {"Config": [
        {"Subnet": "10.80.0.0/24"}, {"Subnet": "fd00:80::/64"}]},
        "Options": {f"{B}gateway_mode_ipv6": "nat-unprotected"}})
    for subnet in ("fd00:81::/64", "fd00:80::/64"):
        lan.ip("-6", "route", "add", subnet, "via", HOST_LAN_IP6)
    web = run(c, network="rt6", name="web", ExposedPorts={"80/tcp": {}, "53/udp": {}},
              HostConfig={"PortBindings": {"80/tcp": [{"HostIp": "::", "HostPort": ""}],
                                           "53/udp": [{"HostIp": "::", "HostPort": ""}]}})
    app = run(c, network="nu6", name="app")
    for cid, port in ((web, 80), (web, 53), (web, 81), (app, 8080)):
        serve_v6(servers, sandbox(c, cid), port)
    web6 = c.containers.inspect(web)["NetworkSettings"]["Networks"]["rt6"]["GlobalIPv6Address"]
    app6 = c.containers.inspect(app)["NetworkSettings"]["Networks"]["nu6"]["GlobalIPv6Address"]
    assert lan_connects(lan, web6, 80) and lan_connects(lan, web6, 53, "udp")
    assert not lan_connects(lan, web6, 81)  # listening, not published
    assert lan_connects(lan, app6, 8080) and lan_connects(lan, app6, 8080, "udp")
    assert not ns_connects(sandbox(c, web), app6, 8080)  # from another network: no
