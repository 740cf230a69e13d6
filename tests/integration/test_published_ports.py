"""Published ports (issue 12) through the docker CLI, the Docker SDK's body and the nsnet CLI,
checked from outside: a "LAN" namespace on a veth (TEST-NET-3) plays a client on the host's
network; the host itself and a second container are the other clients.

The server runs in the container's network namespace (``nsenter --net`` of its sandbox, a host
python): it answers with the address it sees the client come from, so the test reads the
client address the container sees, over TCP and UDP alike (busybox ``nc`` has no UDP).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import api_error, run, sandbox

from nsnet.testing.hosts import Daemon, TestHost, sh
from nsnet.testing.lan import lan_machine

pytestmark = pytest.mark.root

LAN_IP = "203.0.113.2"
HOST_LAN_IP = "203.0.113.1"
LAN_IP6 = "2001:db8:1::2"
HOST_LAN_IP6 = "2001:db8:1::1"

# Answers every TCP connection or UDP datagram with "from <peer address>".
SERVE = """
import socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
af, any_ = (socket.AF_INET6, "::") if sys.argv[3:] == ["6"] else (socket.AF_INET, "0.0.0.0")
if proto == "tcp":
    s = socket.socket(af); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if af == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((any_, port)); s.listen(16)
    print("ready", flush=True)
    while True:
        conn, peer = s.accept(); conn.sendall(f"from {peer[0]}".encode()); conn.close()
else:
    s = socket.socket(af, socket.SOCK_DGRAM)
    if af == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((any_, port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(100); s.sendto(f"from {peer[0]}".encode(), peer)
"""
TALK = """
import socket, sys
ip, port, proto, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
try:
    if proto == "tcp":
        s = socket.create_connection((ip, port), timeout=timeout)
    else:
        af = socket.AF_INET6 if ":" in ip else socket.AF_INET
        s = socket.socket(af, socket.SOCK_DGRAM); s.settimeout(timeout)
        s.connect((ip, port)); s.send(b"hi")
    print(s.recv(100).decode())
except OSError as e:
    print("failed", e)
"""


@pytest.fixture
def lan(daemon: Daemon) -> Iterator[TestHost]:
    with lan_machine(daemon.host, host_addresses=[f"{HOST_LAN_IP}/24", f"{HOST_LAN_IP6}/64"],
                     lan_addresses=[f"{LAN_IP}/24", f"{LAN_IP6}/64"], prefix="nspp") as other:
        yield other


class Servers:
    """Servers started in sandboxes, stopped at the end of the test."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, ns_path: str, proto: str, port: int, family: int = 4) -> None:
        p = subprocess.Popen(["nsenter", f"--net={ns_path}", sys.executable, "-c", SERVE, proto,
                              str(port), str(family)], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        self.procs.append(p)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        s.stop()


def talk(ns_path: str, ip: str, port: int, proto: str = "tcp", timeout: float = 2.0) -> str:
    """What a client in ``ns_path`` gets back from ``ip:port``: "from <addr>" or "failed"."""
    return sh("nsenter", f"--net={ns_path}", sys.executable, "-c", TALK, ip, str(port),
              proto, str(timeout)).stdout.strip()


def ruleset(d: Daemon) -> object:
    """The daemon host's whole ruleset minus handles (they grow with every change)."""
    out = sh("nft", "-j", "list", "ruleset", ns=d.host.name).stdout
    items = json.loads(out)["nftables"]
    for it in items:
        for obj in it.values():
            if isinstance(obj, dict):
                obj.pop("handle", None)
    return items


def can_bind(d: Daemon, port: int, proto: str = "tcp", family: int = 4) -> bool:
    kind = "SOCK_STREAM" if proto == "tcp" else "SOCK_DGRAM"
    af, any_ = ("AF_INET6", "::") if family == 6 else ("AF_INET", "0.0.0.0")
    code = (f"import socket; s = socket.socket(socket.{af}, socket.{kind}); "
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            f"s.bind(('{any_}', {port}))")
    return sh("nsenter", f"--net={d.host.path}", sys.executable, "-c", code,
              check=False).returncode == 0


def test_published_ports_reach_the_container_from_everywhere(
        daemon: Daemon, lan: TestHost, servers: Servers) -> None:
    c = daemon.client()
    daemon.docker("network", "create", "--subnet", "10.77.0.0/24", "pub")
    before = ruleset(daemon)
    daemon.docker("run", "-d", "--name", "web", "--network", "pub", "-p", "8080:80",
                  "-p", "5353:53/udp", "-p", "127.0.0.1:8181:81", "busybox", "sleep", "600")
    web = str(c.containers.inspect("web")["Id"])
    web_ns = sandbox(c, web)
    web_ip = c.containers.inspect(web)["NetworkSettings"]["Networks"]["pub"]["IPAddress"]
    servers.start(web_ns, "tcp", 80)
    servers.start(web_ns, "udp", 53)
    servers.start(web_ns, "tcp", 81)

    # A client on the LAN: the container sees its real address, over TCP and UDP.
    assert talk(lan.path, HOST_LAN_IP, 8080) == f"from {LAN_IP}"
    assert talk(lan.path, HOST_LAN_IP, 5353, "udp") == f"from {LAN_IP}"
    # 127.0.0.1:8181 is not reachable from the LAN, only from the host itself.
    assert talk(lan.path, HOST_LAN_IP, 8181).startswith("failed")
    # The host itself, by its own address and by 127.0.0.1 (masqueraded to the bridge's).
    assert talk(daemon.host.path, HOST_LAN_IP, 8080) == f"from {HOST_LAN_IP}"
    assert talk(daemon.host.path, "127.0.0.1", 8080) == "from 10.77.0.1"
    assert talk(daemon.host.path, "127.0.0.1", 8181) == "from 10.77.0.1"
    # Hairpin: another container on the bridge reaches web through the host's addresses.
    other = run(c, network="pub", name="other")
    assert talk(sandbox(c, other), HOST_LAN_IP, 8080) == "from 10.77.0.1"
    assert talk(sandbox(c, other), "10.77.0.1", 5353, "udp") == "from 10.77.0.1"
    assert web_ip.startswith("10.77.0.")
    # From a container on another network: it leaves its own network, whose outbound
    # masquerade (Docker's ``-s <subnet> ! -o <bridge>``) gives it the address of the bridge
    # it leaves by.
    daemon.docker("network", "create", "--subnet", "10.78.0.0/24", "pub2")
    far = run(c, network="pub2", name="far")
    assert talk(sandbox(c, far), HOST_LAN_IP, 8080) == "from 10.77.0.1"

    # Read back in Docker's shapes, by the docker CLI and by nsnet's.
    ports = c.containers.inspect(web)["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                     "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
                     "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8181"}]}
    assert daemon.docker("port", "web").stdout.splitlines() == [
        "53/udp -> 0.0.0.0:5353", "80/tcp -> 0.0.0.0:8080", "81/tcp -> 127.0.0.1:8181"]
    assert daemon.docker("port", "web", "80").stdout.strip() == "0.0.0.0:8080"
    assert daemon.cli("port", "web", "53/udp").stdout.strip() == "0.0.0.0:5353"
    missing = daemon.cli("port", "web", "99", check=False)
    assert missing.returncode == 1 and "No public port '99/tcp' published for web" in \
        missing.stderr
    ps = daemon.docker("ps", "--filter", "name=web", "--format", "{{.Ports}}").stdout
    assert "0.0.0.0:8080->80/tcp" in ps and "127.0.0.1:8181->81/tcp" in ps

    # The host ports are held: no other program and no other container gets them.
    assert not can_bind(daemon, 8080) and not can_bind(daemon, 5353, "udp")
    p = daemon.docker("run", "-d", "--network", "pub", "-p", "8080:80", "busybox", "sleep",
                      "60", check=False)
    assert p.returncode == 125
    assert "Bind for 0.0.0.0:8080 failed: port is already allocated" in p.stderr
    p = daemon.cli("run", "-d", "--network", "pub", "-p", "5353:53/udp", "busybox", "sleep",
                   "60", check=False)
    assert p.returncode != 0 and "port is already allocated" in p.stderr
    # The failed starts left nothing: the ruleset holds exactly web's elements still.
    assert talk(lan.path, HOST_LAN_IP, 8080) == f"from {LAN_IP}"

    # The network's hairpin outlives the first container that published: a second one
    # still answers other containers by the host's address once web is gone.
    daemon.docker("run", "-d", "--name", "web2", "--network", "pub", "-p", "8082:80",
                  "busybox", "sleep", "600")
    servers.start(sandbox(c, str(c.containers.inspect("web2")["Id"])), "tcp", 80)
    daemon.docker("rm", "-f", "web")
    assert talk(sandbox(c, other), HOST_LAN_IP, 8082) == "from 10.77.0.1"

    # Removal removes exactly its rules and releases the ports.
    daemon.docker("rm", "-f", "web2", "other", "far")
    daemon.docker("network", "rm", "pub2")
    for cid in [x["Id"] for x in c.containers.list(all=True)]:
        c.containers.remove(cid, force=True)
    assert ruleset(daemon) == before
    assert can_bind(daemon, 8080) and can_bind(daemon, 5353, "udp")


def test_a_container_reaches_its_own_published_port(daemon: Daemon, servers: Servers) -> None:
    """With br_netfilter on, the DNATed packet is bridged back out of the port it came in by,
    which needs hairpin mode on that port (set on publishing endpoints only)."""
    c = daemon.client()
    daemon.docker("network", "create", "--subnet", "10.75.0.0/24", "pub")
    daemon.docker("run", "-d", "--name", "web", "--network", "pub", "-p", "8080:80",
                  "busybox", "sleep", "600")
    web_ns = sandbox(c, str(c.containers.inspect("web")["Id"]))
    servers.start(web_ns, "tcp", 80)
    assert talk(web_ns, "10.75.0.1", 8080) == "from 10.75.0.1"


def test_ephemeral_ranges_publish_all_and_refusals(daemon: Daemon, servers: Servers) -> None:
    c = daemon.client()
    daemon.docker("network", "create", "--subnet", "10.78.0.0/24", "pub")
    daemon.docker("network", "create", "--internal", "--subnet", "10.79.0.0/24", "back")
    lo, hi = map(int, sh("cat", "/proc/sys/net/ipv4/ip_local_port_range").stdout.split())
    # -p 80: a free port from the kernel's ephemeral range; -P: every exposed port.
    daemon.docker("run", "-d", "--name", "eph", "--network", "pub", "-p", "80", "--expose",
                  "90", "--expose", "91/udp", "-P", "busybox", "sleep", "600")
    lines = daemon.docker("port", "eph").stdout.splitlines()
    assert [ln.split(" -> ")[0] for ln in lines] == ["80/tcp", "90/tcp", "91/udp"]
    for ln in lines:
        port = int(ln.rsplit(":", 1)[1])
        assert lo <= port <= hi
    eph = str(c.containers.inspect("eph")["Id"])
    servers.start(sandbox(c, eph), "tcp", 90)
    p90 = int(lines[1].rsplit(":", 1)[1])
    assert talk(daemon.host.path, "127.0.0.1", p90) == "from 10.78.0.1"
    # Ranges, one to one, through the Docker SDK's body shape (HostPort as a number too).
    body = {"Image": "busybox", "Cmd": ["sleep", "600"],
            "ExposedPorts": {"7000/tcp": {}, "7001/tcp": {}},
            "HostConfig": {"NetworkMode": "pub",
                           "PortBindings": {"7000/tcp": [{"HostPort": 9000}],
                                            "7001/tcp": [{"HostPort": "9001"}]}}}
    rng = str(c.containers.create(body, name="rng")["Id"])
    c.containers.start(rng)
    assert c.containers.inspect(rng)["HostConfig"]["PortBindings"] == {
        "7000/tcp": [{"HostIp": "", "HostPort": "9000"}],
        "7001/tcp": [{"HostIp": "", "HostPort": "9001"}]}
    summary = next(x for x in c.containers.list() if x["Id"] == rng)["Ports"]
    assert sorted((p["PrivatePort"], p["PublicPort"]) for p in summary) == [(7000, 9000),
                                                                            (7001, 9001)]
    # A host range for one container port takes its first free port.
    daemon.docker("run", "-d", "--name", "r2", "--network", "pub", "-p", "9000-9002:7000",
                  "busybox", "sleep", "600")
    assert daemon.docker("port", "r2", "7000").stdout.strip() == "0.0.0.0:9002"

    # Refusals, each a clear 4xx before anything is made.
    p = daemon.docker("run", "--network", "back", "-p", "8080:80", "busybox", "true",
                      check=False)
    assert p.returncode == 125 and "internal network back" in p.stderr
    err = api_error(c.containers.create, {"Image": "busybox", "HostConfig": {
        "NetworkMode": "host", "PortBindings": {"80/tcp": [{"HostPort": "80"}]}}})
    assert err.status == 400 and "network mode host" in err.message
    err = api_error(c.containers.create, {"Image": "busybox", "HostConfig": {
        "PortBindings": {"80/icmp": [{"HostPort": "80"}]}}})
    assert err.status == 400
    p = daemon.cli("run", "-d", "-p", "99999:80", "busybox", "sleep", "1", check=False)
    assert p.returncode != 0 and p.stderr.strip().count("\n") == 0


def test_reconcile_after_a_crash_keeps_ports_published_and_held(
        daemon: Daemon, lan: TestHost, servers: Servers) -> None:
    c = daemon.client()
    daemon.docker("network", "create", "--subnet", "10.76.0.0/24", "pub")
    before = ruleset(daemon)
    daemon.docker("run", "-d", "--name", "web", "--network", "pub", "-p", "8080:80",
                  "busybox", "sleep", "600")
    web = str(c.containers.inspect("web")["Id"])
    servers.start(sandbox(c, web), "tcp", 80)
    published = ruleset(daemon)
    daemon.kill()  # kill -9: the sockets die with it, the rules stay
    daemon.start()
    assert talk(lan.path, HOST_LAN_IP, 8080) == f"from {LAN_IP}"
    assert not can_bind(daemon, 8080)
    assert ruleset(daemon) == published
    # A stray element (its container gone behind the daemon's back) is removed by reconcile.
    sh("nft", "add element inet nsnet ports4 { tcp . 8999 comment \"nsnet ep 0123456789ab\""
       " : 10.76.0.99 . 80 }", ns=daemon.host.name)
    report = daemon.cli("system", "reconcile").stdout
    assert "0123456789ab" in report or ruleset(daemon) == published
    assert ruleset(daemon) == published
    daemon.docker("rm", "-f", "web")
    assert ruleset(daemon) == before
    deadline = time.monotonic() + 5
    while not can_bind(daemon, 8080) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert can_bind(daemon, 8080)


def test_a_disconnect_takes_the_networks_ports_along(daemon: Daemon) -> None:
    """Ports published on a network go when the container leaves it (the maps must not send
    them to an address IPAM may hand to another container); the host port is free again."""
    c = daemon.client()
    before = ruleset(daemon)
    daemon.docker("network", "create", "--subnet", "10.77.0.0/24", "pubd")
    daemon.docker("run", "-d", "--name", "dis", "--network", "pubd", "-p", "8086:80",
                  "busybox", "sleep", "600")
    daemon.docker("network", "connect", "bridge", "dis")
    ip = c.containers.inspect("dis")["NetworkSettings"]["Networks"]["pubd"]["IPAddress"]
    assert f'"{ip}"' in json.dumps(ruleset(daemon))
    assert daemon.docker("port", "dis").stdout.strip()
    assert not can_bind(daemon, 8086)
    daemon.docker("network", "disconnect", "pubd", "dis")
    assert f'"{ip}"' not in json.dumps(ruleset(daemon))
    assert daemon.docker("port", "dis").stdout.strip() == ""
    assert can_bind(daemon, 8086)
    assert c.containers.inspect("dis")["State"]["Running"]
    daemon.docker("rm", "-f", "dis")
    daemon.docker("network", "rm", "pubd")
    assert ruleset(daemon) == before


def test_the_kernel_picks_no_port_nsnet_holds() -> None:
    """Sanity of the reservation primitive the daemon relies on (no daemon needed): a
    listening socket on 0.0.0.0 keeps even SO_REUSEADDR binds off the port."""
    held = socket.socket()
    held.bind(("0.0.0.0", 0))
    held.listen(1)
    port = held.getsockname()[1]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with pytest.raises(OSError):
        s.bind(("127.0.0.1", port))
    s.close()
    held.close()


def test_docker_sdk_ports_and_nsnet_ps(daemon: Daemon, lan: TestHost, servers: Servers) -> None:
    """The Docker SDK's ``ports=`` (a number, a tuple with an address, a list of bindings)
    unchanged, read back through its own ``container.ports``; nsnet ps shows the column."""
    docker = pytest.importorskip("docker")
    sdk = docker.DockerClient(base_url=f"unix://{daemon.socket}")
    try:
        sdk.networks.create("pub", ipam=docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet="10.74.0.0/24")]))
        ctr = sdk.containers.run("busybox", ["sleep", "600"], detach=True, name="web",
                                 network="pub", ports={"80/tcp": 8080,
                                                       "81/tcp": ("127.0.0.1", 8181),
                                                       "53/udp": [5353, 5354]})
        ctr.reload()
        assert ctr.ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                             "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8181"}],
                             "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"},
                                        {"HostIp": "0.0.0.0", "HostPort": "5354"}]}
        servers.start(str(ctr.attrs["NetworkSettings"]["SandboxKey"]), "udp", 53)
        assert talk(lan.path, HOST_LAN_IP, 5354, "udp") == f"from {LAN_IP}"
        ps = daemon.cli("ps").stdout
        assert "0.0.0.0:8080->80/tcp" in ps and "0.0.0.0:5353->53/udp" in ps
        ctr.remove(force=True)
        assert can_bind(daemon, 8080) and can_bind(daemon, 5354, "udp")
    finally:
        sdk.close()


COMPOSE_FILE = """\
version: "3.8"
services:
  web:
    image: busybox
    command: ["httpd", "-f", "-p", "80", "-h", "/etc"]
    ports: ["8080:80", "127.0.0.1:8181:80"]
networks:
  default:
    ipam:
      config: [{subnet: 10.73.0.0/24}]
"""
FETCH = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode().strip())
except OSError as e:
    print("failed", e)
"""


def test_docker_compose_ports(daemon: Daemon, lan: TestHost, tmp_path: Path) -> None:
    """docker-compose 1.29's ``ports:`` unchanged: up publishes, down releases."""
    import shutil

    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("needs docker-compose (make install)")
    proj = tmp_path / "pp"
    proj.mkdir()
    (proj / "docker-compose.yml").write_text(COMPOSE_FILE)

    def compose(*args: str) -> None:
        p = subprocess.run([exe, "--no-ansi", "-p", "pp", *args], capture_output=True,
                           text=True, env=daemon.env, timeout=120, cwd=proj)
        assert p.returncode == 0, f"docker-compose {args}: {p.stderr}"

    compose("up", "-d")
    hostname = daemon.docker("inspect", "-f", "{{.Config.Hostname}}", "pp_web_1").stdout
    url = f"http://{HOST_LAN_IP}:8080/hostname"
    got = sh("nsenter", f"--net={lan.path}", sys.executable, "-c", FETCH, url).stdout.strip()
    assert got == hostname.strip()
    local = sh("nsenter", f"--net={daemon.host.path}", sys.executable, "-c", FETCH,
               "http://127.0.0.1:8181/hostname").stdout.strip()
    assert local == hostname.strip()
    assert daemon.docker("port", "pp_web_1").stdout.splitlines() == [
        "80/tcp -> 0.0.0.0:8080", "80/tcp -> 127.0.0.1:8181"]
    compose("down")
    assert can_bind(daemon, 8080)


# -- IPv6 --------------------------------------------------------------------------------------


def test_dual_stack_publishes_on_both_families(daemon: Daemon, lan: TestHost,
                                                servers: Servers) -> None:
    """``-p 8080:80`` on a dual-stack network is ``0.0.0.0:8080`` and ``[::]:8080`` (Docker's
    two bindings), each reaching the container with the client's real address; an IPv6 host
    address publishes on that address only; ``[::1]`` is refused (no proxy to serve it)."""
    c = daemon.client()
    daemon.docker("network", "create", "--ipv6", "--subnet", "10.72.0.0/24", "--subnet",
                  "fd00:72::/64", "pub6")
    before = ruleset(daemon)
    daemon.docker("run", "-d", "--name", "web", "--network", "pub6", "-p", "8080:80",
                  "-p", "5353:53/udp", "-p", f"[{HOST_LAN_IP6}]:8443:443", "busybox", "sleep",
                  "600")
    web_ns = sandbox(c, str(c.containers.inspect("web")["Id"]))
    servers.start(web_ns, "tcp", 80)
    servers.start(web_ns, "tcp", 80, 6)
    servers.start(web_ns, "udp", 53, 6)
    servers.start(web_ns, "tcp", 443, 6)

    # From the LAN over both families, the container sees the client itself.
    assert talk(lan.path, HOST_LAN_IP, 8080) == f"from {LAN_IP}"
    assert talk(lan.path, HOST_LAN_IP6, 8080) == f"from {LAN_IP6}"
    assert talk(lan.path, HOST_LAN_IP6, 5353, "udp") == f"from {LAN_IP6}"
    assert talk(lan.path, HOST_LAN_IP6, 8443) == f"from {LAN_IP6}"
    assert talk(lan.path, HOST_LAN_IP, 8443).startswith("failed")  # one address only
    # From the host by its own IPv6 address; from another container on the bridge (hairpin,
    # masqueraded to the bridge's IPv6 address).
    assert talk(daemon.host.path, HOST_LAN_IP6, 8080) == f"from {HOST_LAN_IP6}"
    other = run(c, network="pub6", name="other")
    assert talk(sandbox(c, other), HOST_LAN_IP6, 8080) == "from fd00:72::1"
    assert talk(web_ns, HOST_LAN_IP6, 8080) == "from fd00:72::1"  # its own port, over IPv6
    # ::1 is not DNATed to the container (the kernel drops a ::1 source leaving by a bridge):
    # nothing answers there, and asking for it is refused with the reason.
    assert talk(daemon.host.path, "::1", 8080).startswith("failed")
    p = daemon.docker("run", "-d", "--network", "pub6", "-p", "[::1]:8090:80", "busybox",
                      "sleep", "60", check=False)
    assert p.returncode == 125 and "::1 is not supported" in p.stderr

    ports = c.containers.inspect("web")["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                                {"HostIp": "::", "HostPort": "8080"}],
                     "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"},
                                {"HostIp": "::", "HostPort": "5353"}],
                     "443/tcp": [{"HostIp": HOST_LAN_IP6, "HostPort": "8443"}]}
    assert daemon.docker("port", "web", "80").stdout.splitlines() == ["0.0.0.0:8080",
                                                                      "[::]:8080"]
    assert daemon.cli("port", "web").stdout.splitlines() == [
        "53/udp -> 0.0.0.0:5353", "53/udp -> [::]:5353", "80/tcp -> 0.0.0.0:8080",
        "80/tcp -> [::]:8080", f"443/tcp -> [{HOST_LAN_IP6}]:8443"]
    ps = daemon.docker("ps", "--filter", "name=web", "--format", "{{.Ports}}").stdout
    assert "0.0.0.0:8080->80/tcp" in ps and "[::]:8080->80/tcp" in ps
    assert "[::]:8080->80/tcp" in daemon.cli("ps").stdout
    # Both families' ports are held, and a second container cannot have them.
    assert not can_bind(daemon, 8080, family=6) and not can_bind(daemon, 8080)
    assert not can_bind(daemon, 5353, "udp", family=6)
    p = daemon.docker("run", "-d", "--network", "pub6", "-p", "8080:80", "busybox", "sleep",
                      "60", check=False)
    assert p.returncode == 125 and "port is already allocated" in p.stderr

    daemon.docker("rm", "-f", "web", "other")
    for cid in [x["Id"] for x in c.containers.list(all=True)]:
        c.containers.remove(cid, force=True)
    assert ruleset(daemon) == before
    assert can_bind(daemon, 8080, family=6) and can_bind(daemon, 5353, "udp", family=6)


def test_ipv6_reaches_containers_on_a_network_made_a_moment_ago(daemon: Daemon, lan: TestHost,
                                                               servers: Servers) -> None:
    """bug: the first IPv6 connection forwarded to a container (from the LAN, or hairpin from
    another container) within 1-2 s of its network's creation stalled. The host resolves the
    container's address with a neighbour solicitation sent from the bridge's link-local
    address, and the kernel sends none while that address is tentative (DAD): the SYN waited
    for a retransmit a second later, or was lost (seen in ~1 of 3 runs of the dual-stack
    test). The bridge's addresses must be usable as soon as it exists."""
    c = daemon.client()
    net = c.networks.create({"Name": "fresh6", "EnableIPv6": True, "IPAM": {"Config": [
        {"Subnet": "10.73.0.0/24"}, {"Subnet": "fd00:73::/64"}]}})
    web = run(c, network="fresh6", name="web",
              HostConfig={"PortBindings": {"80/tcp": [{"HostPort": "8086"}]}})
    other = run(c, network="fresh6", name="other")
    bridge = f"br-{str(net['Id'])[:12]}"
    addrs = daemon.host.ip_json("-6", "addr", "show", "dev", bridge)
    flags = [(str(a["local"]), bool(a.get("tentative")))
             for a in addrs[0]["addr_info"]]  # type: ignore[attr-defined]
    assert any(a.startswith("fe80:") for a, _ in flags) and not any(t for _, t in flags), flags
    servers.start(sandbox(c, web), "tcp", 80, 6)
    # Whatever the host learnt of the containers is forgotten: it must solicit the
    # container's address now. A solicitation not sent costs a 1 s retransmit: the bound
    # below is that, not a speed target.
    daemon.host.ip("-6", "neigh", "flush", "dev", bridge)
    assert talk(lan.path, HOST_LAN_IP6, 8086, timeout=0.9) == f"from {LAN_IP6}"
    daemon.host.ip("-6", "neigh", "flush", "dev", bridge)
    assert talk(sandbox(c, other), HOST_LAN_IP6, 8086, timeout=0.9) == "from fd00:73::1"


def test_an_ipv6_only_network_publishes_on_ipv6_only(daemon: Daemon, lan: TestHost,
                                                     servers: Servers) -> None:
    c = daemon.client()
    daemon.docker("network", "create", "--ipv4=false", "--ipv6", "--subnet", "fd00:71::/64",
                  "six")
    before = ruleset(daemon)
    daemon.docker("run", "-d", "--name", "web", "--network", "six", "-p", "8081:80",
                  "busybox", "sleep", "600")
    servers.start(sandbox(c, str(c.containers.inspect("web")["Id"])), "tcp", 80, 6)
    assert daemon.docker("port", "web").stdout.splitlines() == ["80/tcp -> [::]:8081"]
    assert talk(lan.path, HOST_LAN_IP6, 8081) == f"from {LAN_IP6}"
    assert talk(lan.path, HOST_LAN_IP, 8081).startswith("failed")
    assert can_bind(daemon, 8081) and not can_bind(daemon, 8081, family=6)
    p = daemon.docker("run", "-d", "--network", "six", "-p", "127.0.0.1:8082:80", "busybox",
                      "sleep", "60", check=False)
    assert p.returncode == 125 and "no IPv4 address on network six" in p.stderr
    daemon.docker("rm", "-f", "web")
    for cid in [x["Id"] for x in c.containers.list(all=True)]:
        c.containers.remove(cid, force=True)
    assert ruleset(daemon) == before

