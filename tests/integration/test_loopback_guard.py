"""Published ports on 127.0.0.1 need ``route_localnet`` on the bridge (kernel/port_firewall.py),
which also stops the kernel from dropping packets *to* 127.0.0.0/8 that arrive on the bridge
(CVE-2020-8558's shape): a container sending to 127.0.0.1 by its gateway's MAC must reach
neither a loopback-only published port nor a service of the host that listens on loopback.

The container here is made to send so with its own routing (root in its namespace); one with
the default CAP_NET_RAW can write the same frame by hand.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ask, ip_of, run, sandbox, serve

from nsnet.testing.hosts import Daemon, sh

pytestmark = pytest.mark.root

HOST_SERVICE = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9099)); s.listen(8)
print("ready", flush=True)
while True:
    conn, peer = s.accept(); conn.sendall(f"from {peer[0]}".encode()); conn.close()
"""


def test_a_container_cannot_reach_loopback_through_its_gateway(
        daemon: Daemon, servers: list[subprocess.Popen[str]]) -> None:
    c = daemon.client()
    daemon.docker("network", "create", "--subnet", "10.93.0.0/24", "pub")
    web = run(c, network="pub", name="web", HostConfig={
        "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8093"}]}})
    serve(servers, sandbox(c, web))
    host = subprocess.Popen(["nsenter", f"--net={daemon.host.path}", sys.executable, "-c",
                             HOST_SERVICE], stdout=subprocess.PIPE, text=True)
    servers.append(host)
    assert host.stdout is not None and host.stdout.readline().strip() == "ready"
    # The host itself reaches both (what route_localnet is for).
    assert ask(daemon.host.path, "127.0.0.1", 8093).startswith("from ")
    assert ask(daemon.host.path, "127.0.0.1", 9099).startswith("from ")
    attacker = sandbox(c, run(c, network="pub", name="attacker"))
    for cmd in (["ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"],
                ["ip", "route", "del", "local", "127.0.0.1", "dev", "lo", "table", "local"],
                ["ip", "route", "add", "127.0.0.1/32", "via", "10.93.0.1", "dev", "eth0"],
                ["sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"],
                ["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"]):
        sh("nsenter", f"--net={attacker}", *cmd, check=False)
    # Its own kernel drops the answers (a 127.0.0.1 source on eth0), so what tells is the
    # other end: a half-open connection from the container's address, the SYN answered.
    ask(attacker, "127.0.0.1", 8093)
    ask(attacker, "127.0.0.1", 9099)
    me = ip_of(c, "attacker", "pub")
    assert half_open(daemon.host.path, 9099, me) == []
    assert half_open(sandbox(c, web), 80, "10.93.0.1") == []  # hairpin: masqueraded


def half_open(ns_path: str, port: int, peer: str) -> list[str]:
    out = sh("nsenter", f"--net={ns_path}", "ss", "-Htn", "state", "syn-recv",
             f"( sport = :{port} )").stdout
    return [line for line in out.splitlines() if peer in line]
