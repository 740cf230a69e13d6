"""Issue 11: a container on several networks gets ``eth0`` and its default route where Docker
20.10 puts them (libnetwork's endpoint order: internal networks after the others, then
priority, then name), and ``LinkLocalIPs`` land on its interfaces. Read back from inside the
container with busybox ``ip`` and from its namespace with the host's ``ip -j``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from nsnet.testing.hosts import Daemon, sh

COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not Path(DOCKER).exists(), reason="needs the docker CLI"),
]


def compose(d: Daemon, project: Path, *args: str) -> None:
    p = subprocess.run([COMPOSE, "--no-ansi", "-p", project.name,
                        "-f", str(project / "docker-compose.yml"), *args],
                       capture_output=True, text=True, env=d.env, timeout=120, cwd=project)
    assert p.returncode == 0, f"docker-compose {' '.join(args)}: {p.stderr}\n{d.log_tail(30)}"


def project(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "docker-compose.yml").write_text(text)
    return path


def dx(d: Daemon, container: str, *cmd: str) -> str:
    return d.docker("exec", container, *cmd).stdout


def default_routes(d: Daemon, container: str) -> list[str]:
    """Default routes seen inside (busybox ip ignores a `show default` selector)."""
    return [" ".join(line.split()) for line in dx(d, container, "ip", "route").splitlines()
            if line.startswith("default")]


def addr_on(d: Daemon, container: str, ifname: str) -> list[str]:
    """IPv4 addresses (with prefix) on ``ifname``, read from inside ``container``."""
    out = dx(d, container, "ip", "-4", "-o", "addr", "show", "dev", ifname)
    return [line.split()[3] for line in out.splitlines()]


# The internal network is declared (and sorts) first, so compose creates the container on it
# and connects the frontend afterwards: nsnet used to give backend eth0.
APP = """\
version: "3.8"
services:
  app:
    image: busybox
    command: ["sleep", "3600"]
    networks: [backend, frontend]
networks:
  backend:
    internal: true
    ipam:
      config:
        - subnet: 172.31.9.0/24
  frontend:
    ipam:
      config:
        - subnet: 172.31.8.0/24
"""


@pytest.mark.skipif(not Path(COMPOSE).exists(), reason="needs docker-compose")
def test_compose_service_on_frontend_and_internal_backend(daemon: Daemon,
                                                          tmp_path: Path) -> None:
    app = project(tmp_path, "order", APP)
    compose(daemon, app, "up", "-d")
    assert addr_on(daemon, "order_app_1", "eth0")[0].startswith("172.31.8.")
    assert addr_on(daemon, "order_app_1", "eth1")[0].startswith("172.31.9.")
    assert default_routes(daemon, "order_app_1") == ["default via 172.31.8.1 dev eth0"]
    # A restart joins them again in the same order.
    daemon.docker("restart", "-t", "1", "order_app_1")
    assert addr_on(daemon, "order_app_1", "eth0")[0].startswith("172.31.8.")
    assert default_routes(daemon, "order_app_1") == ["default via 172.31.8.1 dev eth0"]
    compose(daemon, app, "down", "-t", "1")


def test_docker_cli_name_order_and_connect_to_a_running_container(daemon: Daemon) -> None:
    d = daemon
    d.docker("network", "create", "--subnet", "10.61.0.0/24", "zeta")
    d.docker("network", "create", "--subnet", "10.62.0.0/24", "alpha")
    d.docker("network", "create", "--subnet", "10.63.0.0/24", "--internal", "aaa")
    d.docker("create", "--name", "multi", "--network", "zeta", "busybox", "sleep", "3600")
    d.docker("network", "connect", "aaa", "multi")
    d.docker("network", "connect", "alpha", "multi")
    d.docker("start", "multi")
    # alpha < zeta by name; the internal aaa last although its name sorts first.
    assert addr_on(d, "multi", "eth0")[0].startswith("10.62.0.")
    assert addr_on(d, "multi", "eth1")[0].startswith("10.61.0.")
    assert addr_on(d, "multi", "eth2")[0].startswith("10.63.0.")
    assert default_routes(d, "multi") == ["default via 10.62.0.1 dev eth0"]

    # Connected while running: the next free name; aardvark now sorts first, so the route
    # moves to it as libnetwork's getGatewayEndpoint does, and back when it leaves.
    d.docker("network", "create", "--subnet", "10.64.0.0/24", "aardvark")
    d.docker("network", "connect", "aardvark", "multi")
    assert addr_on(d, "multi", "eth3")[0].startswith("10.64.0.")
    assert default_routes(d, "multi") == ["default via 10.64.0.1 dev eth3"]
    d.docker("network", "disconnect", "aardvark", "multi")
    assert default_routes(d, "multi") == ["default via 10.62.0.1 dev eth0"]
    d.docker("rm", "-f", "multi")
    for n in ("zeta", "alpha", "aaa", "aardvark"):
        d.docker("network", "rm", n)


def test_link_local_ips_on_run_connect_and_inspect(daemon: Daemon) -> None:
    d = daemon
    d.docker("network", "create", "--subnet", "10.65.0.0/24", "ll1")
    d.docker("network", "create", "--subnet", "10.66.0.0/24", "--ipv6", "--subnet",
             "fd00:66::/64", "ll2")
    d.docker("run", "-d", "--name", "llc", "--network", "ll1", "--link-local-ip",
             "169.254.10.10", "busybox", "sleep", "3600")
    assert "169.254.10.10/16" in addr_on(d, "llc", "eth0")
    d.docker("network", "connect", "--link-local-ip", "169.254.20.20", "--link-local-ip",
             "fe80::20", "ll2", "llc")
    assert "169.254.20.20/16" in addr_on(d, "llc", "eth1")
    key = d.docker("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "llc").stdout.strip()
    links = json.loads(sh("nsenter", f"--net={key}", "ip", "-j", "addr", "show", "dev",
                          "eth1").stdout)
    v6 = {f"{a['local']}/{a['prefixlen']}" for a in links[0]["addr_info"]
          if a["family"] == "inet6"}
    assert "fe80::20/64" in v6, v6
    shown = json.loads(d.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                "llc").stdout)
    assert shown["ll1"]["IPAMConfig"]["LinkLocalIPs"] == ["169.254.10.10"]
    assert shown["ll2"]["IPAMConfig"]["LinkLocalIPs"] == ["169.254.20.20", "fe80::20"]

    # Not link-local: a 400 as one readable line, and nothing made.
    p = d.docker("run", "-d", "--name", "bad", "--network", "ll1", "--link-local-ip",
                 "10.0.0.1", "busybox", "sleep", "1", check=False)
    assert p.returncode != 0 and "invalid link-local IP address: 10.0.0.1" in p.stderr, p.stderr
    assert d.docker("ps", "-aq", "--filter", "name=bad").stdout.strip() == ""
    # fe80:: on an interface nsnet keeps IPv4-only is refused, not dropped.
    p = d.docker("network", "connect", "--link-local-ip", "fe80::9", "ll1", "llc",
                 check=False)
    assert p.returncode != 0 and "--ipv6" in p.stderr, p.stderr
    d.docker("rm", "-f", "llc")
    d.docker("network", "rm", "ll1", "ll2")


def test_gw_priority_through_the_docker_cli(daemon: Daemon) -> None:
    """``docker run --network name=..,gw-priority=N`` and ``network connect --gw-priority``
    (API 1.48): the highest priority gives the default route, at start and at run time."""
    d = daemon
    d.docker("network", "create", "--subnet", "10.65.0.0/24", "gpa")
    d.docker("network", "create", "--subnet", "10.66.0.0/24", "gpb")
    d.docker("network", "create", "--subnet", "10.67.0.0/24", "gpc")
    d.docker("run", "-d", "--name", "prio", "--network", "gpa",
             "--network", "name=gpb,gw-priority=5", "busybox", "sleep", "3600")
    assert default_routes(d, "prio") == ["default via 10.66.0.1 dev eth0"]
    d.docker("network", "connect", "--gw-priority", "9", "gpc", "prio")
    assert default_routes(d, "prio") == ["default via 10.67.0.1 dev eth2"]
    prio = d.client().containers.inspect("prio")["NetworkSettings"]["Networks"]["gpc"]
    assert prio["GwPriority"] == 9
    d.docker("network", "disconnect", "gpc", "prio")
    assert default_routes(d, "prio") == ["default via 10.66.0.1 dev eth0"]
    d.docker("rm", "-f", "prio")
    for n in ("gpa", "gpb", "gpc"):
        d.docker("network", "rm", n)
