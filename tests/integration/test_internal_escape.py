"""An ``--internal`` network keeps its containers to their own subnet (moby: nothing in,
nothing out but between its members), whatever the other networks on the host publish.

The forward chain of kernel/firewall.py looks up the *destination* network's chain first, and
that chain accepts what a published port DNATed (``ct status dnat``) and, in routed mode, what
``open4`` opens: a container of an internal network must not get through either way.
"""

from __future__ import annotations

import subprocess

import pytest
from helpers import ask, exec_, ip_of, run, sandbox, serve

from nsnet.testing.hosts import Daemon, sh

pytestmark = pytest.mark.root

B = "com.docker.network.bridge."


def test_an_internal_container_reaches_no_published_port_of_another_network(
        daemon: Daemon, servers: list[subprocess.Popen[str]]) -> None:
    c = daemon.client()
    daemon.docker("network", "create", "--internal", "--subnet", "10.88.0.0/24", "inner")
    daemon.docker("network", "create", "--subnet", "10.89.0.0/24", "pub")
    daemon.docker("network", "create", "--subnet", "10.90.0.0/24", "-o",
                  f"{B}gateway_mode_ipv4=routed", "rt")
    web = run(c, network="pub", name="web",
              HostConfig={"PortBindings": {"80/tcp": [{"HostPort": "8089"}]}})
    rweb = run(c, network="rt", name="rweb",
               HostConfig={"PortBindings": {"80/tcp": [{"HostPort": "8090"}]}})
    serve(servers, sandbox(c, web))
    serve(servers, sandbox(c, rweb))
    inner = run(c, network="inner", name="inner")
    peer = run(c, network="inner", name="peer")
    inner_ns = sandbox(c, inner)
    # Its own network works.
    code, _, _ = exec_(c, inner, ["ping", "-c1", "-W2", ip_of(c, peer, "inner")])
    assert code == 0
    # Published ports, by the host's address on the internal bridge (on-link, no route
    # needed): moby's isolation drops them before any DNATed traffic is let in.
    assert ask(inner_ns, "10.88.0.1", 8089).startswith("failed")
    assert ask(inner_ns, "10.88.0.1", 8090).startswith("failed")
    # A routed network's published port at the container's own address, through the
    # gateway (a route a container with CAP_NET_RAW can do without).
    subprocess.run(["nsenter", f"--net={inner_ns}", "ip", "route", "add",
                    "10.90.0.0/24", "via", "10.88.0.1"], check=True)
    assert ask(inner_ns, ip_of(c, rweb, "rt"), 80).startswith("failed")
    code, _, _ = exec_(c, inner, ["ping", "-c1", "-W2", ip_of(c, rweb, "rt")])
    assert code != 0


def test_the_internal_element_goes_with_its_network(daemon: Daemon) -> None:
    """Removal adds the element before deleting it (nft 1.0.6 has no ``destroy``): an
    internal network's goes, and a non-internal network's removal still succeeds whole."""
    daemon.docker("network", "create", "--internal", "--subnet", "10.91.0.0/24", "inner")
    daemon.docker("network", "create", "--subnet", "10.92.0.0/24", "outer")
    nid = str(daemon.client().networks.inspect("inner")["Id"])

    def internal_set() -> str:
        return sh("nft", "list", "set", "inet", "nsnet", "internal", ns=daemon.host.name).stdout

    assert f'"br-{nid[:12]}"' in internal_set()
    daemon.docker("network", "rm", "outer")
    assert f'"br-{nid[:12]}"' in internal_set()
    daemon.docker("network", "rm", "inner")
    assert "br-" not in internal_set()
    table = sh("nft", "list", "table", "inet", "nsnet", ns=daemon.host.name).stdout
    assert "n-" + nid[:12] not in table
