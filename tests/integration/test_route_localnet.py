"""Published ports reached from the host at 127.0.0.1 need ``route_localnet`` on the bridge
(kernel/port_firewall.py); a bridge made again under the same name must get it again."""

from __future__ import annotations

import subprocess

import pytest
from helpers import ask, run, sandbox, serve

from nsnet.testing.hosts import Daemon

pytestmark = pytest.mark.root


def test_loopback_reaches_a_network_made_again_with_the_same_bridge_name(
        daemon: Daemon, servers: list[subprocess.Popen[str]]) -> None:
    """bug: the driver remembered route_localnet by bridge name and never set it on the new
    bridge of a network re-created with ``com.docker.network.bridge.name``."""
    c = daemon.client()
    for attempt in range(2):
        daemon.docker("network", "create", "--subnet", "10.87.0.0/24", "-o",
                      "com.docker.network.bridge.name=nslocal0", "loc")
        web = run(c, network="loc", name="web",
                  HostConfig={"PortBindings": {"80/tcp": [{"HostPort": "8087"}]}})
        serve(servers, sandbox(c, web))
        assert ask(daemon.host.path, "127.0.0.1", 8087).startswith("from "), attempt
        daemon.docker("rm", "-f", "web")
        daemon.docker("network", "rm", "loc")
