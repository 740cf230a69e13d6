"""The network's hairpin element (kernel/port_firewall.py) against the real kernel, where the
driver's first-publisher/last-publisher count can disagree with the ruleset: a network with two
IPv4 subnets, and a ruleset that lost its elements while the daemon kept running.

A container reaching a neighbour's published port by the gateway's address must be
masqueraded to that address: the server (a host python in the neighbour's namespace) answers
with the client address it sees.
"""

from __future__ import annotations

import subprocess

import pytest
from helpers import ask, run, sandbox, serve

from nsnet.testing.hosts import Daemon, sh

pytestmark = pytest.mark.root

def hairpin_set(d: Daemon) -> str:
    return sh("nft", "list", "set", "inet", "nsnet", "hairpin4", ns=d.host.name).stdout


def test_each_subnet_of_a_network_hairpins(daemon: Daemon,
                                           servers: list[subprocess.Popen[str]]) -> None:
    """bug: the count was per network and family, so a network with two IPv4 subnets got
    the hairpin element of its first publisher's subnet only: a client in the second subnet
    reaching a published port of a neighbour there was not masqueraded."""
    c = daemon.client()
    daemon.docker("network", "create", "--subnet", "10.81.0.0/24", "--subnet",
                  "10.82.0.0/24", "two")
    run(c, network="two", ip="10.81.0.5", name="web1",
        HostConfig={"PortBindings": {"80/tcp": [{"HostPort": "8081"}]}})
    web2 = run(c, network="two", ip="10.82.0.5", name="web2",
               HostConfig={"PortBindings": {"80/tcp": [{"HostPort": "8082"}]}})
    client = run(c, network="two", ip="10.82.0.9", name="client")
    serve(servers, sandbox(c, web2))
    assert "10.82.0.0/24 . 10.82.0.0/24" in hairpin_set(daemon)
    assert ask(sandbox(c, client), "10.82.0.1", 8082) == "from 10.82.0.1"
    daemon.docker("rm", "-f", "web1")  # its subnet's last publisher: only its element goes
    text = hairpin_set(daemon)
    assert "10.81.0.0/24" not in text and "10.82.0.0/24 . 10.82.0.0/24" in text
    assert ask(sandbox(c, client), "10.82.0.1", 8082) == "from 10.82.0.1"
    daemon.docker("rm", "-f", "web2", "client")
    assert "10.82.0.0/24" not in hairpin_set(daemon)


def test_reconcile_restores_a_hairpin_element_the_ruleset_lost(
        daemon: Daemon, servers: list[subprocess.Popen[str]]) -> None:
    """bug: after the table went (``nft flush ruleset``, a firewall reload) ``nsnet system
    reconcile`` put the ports back but not the network's hairpin element, since the
    driver still counted the container as its publisher."""
    c = daemon.client()
    daemon.docker("network", "create", "--subnet", "10.83.0.0/24", "pub")
    web = run(c, network="pub", name="web",
              HostConfig={"PortBindings": {"80/tcp": [{"HostPort": "8083"}]}})
    client = run(c, network="pub", name="client")
    serve(servers, sandbox(c, web))
    assert ask(sandbox(c, client), "10.83.0.1", 8083) == "from 10.83.0.1"
    sh("nft", "delete", "table", "inet", "nsnet", ns=daemon.host.name)
    daemon.cli("system", "reconcile")
    assert "10.83.0.0/24 . 10.83.0.0/24" in hairpin_set(daemon)
    assert ask(sandbox(c, client), "10.83.0.1", 8083) == "from 10.83.0.1"
