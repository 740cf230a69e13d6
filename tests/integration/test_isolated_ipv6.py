"""Gateway mode ``isolated`` for IPv6 (drivers/bridge.py): the host is not on the network, not
even by the link-local address the kernel gives every interface with IPv6 on.

Complements tests/integration/test_gateway_modes.py, which checks IPv4's global address only.
"""

from __future__ import annotations

import json

import pytest
from helpers import run, sandbox

from nsnet.testing.hosts import Daemon, sh

pytestmark = pytest.mark.root

B = "com.docker.network.bridge."


def _link_local(d: Daemon, ns: str | None, dev: str) -> list[str]:
    args = ["ip", "-j", "-6", "addr", "show", "dev", dev, "scope", "link"]
    out = sh("nsenter", f"--net={ns}", *args).stdout if ns else \
        sh(*args, ns=d.host.name).stdout
    return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])
            if "local" in a]


def test_an_isolated_ipv6_network_leaves_the_host_off_it(daemon: Daemon) -> None:
    """bug: the bridge of an IPv6-isolated network kept its fe80:: address, so the host
    reached every container over link-local IPv6 (ping, and any port they listen on)."""
    c = daemon.client()
    daemon.docker("network", "create", "--internal", "--ipv6", "--subnet", "fd00:86::/64",
                  "-o", f"{B}gateway_mode_ipv6=isolated", "iso6")
    nid = str(c.networks.inspect("iso6")["Id"])
    bridge = f"br-{nid[:12]}"
    a = run(c, network="iso6", name="a")
    b = run(c, network="iso6", name="b")
    [a_ll] = _link_local(daemon, sandbox(c, a), "eth0")
    a_ip = str(c.containers.inspect(a)["NetworkSettings"]["Networks"]["iso6"]
               ["GlobalIPv6Address"])
    # The containers still reach each other.
    assert sh("nsenter", f"--net={sandbox(c, b)}", "ping", "-6", "-c1", "-W2", a_ip,
              check=False).returncode == 0
    # The host cannot reach a container: it has no address on the bridge.
    assert sh("ping", "-6", "-c3", "-w4", f"{a_ll}%{bridge}", ns=daemon.host.name,
              check=False).returncode != 0
    assert _link_local(daemon, None, bridge) == []
