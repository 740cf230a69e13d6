"""The user's own chain (``inet nsnet nsnet-user``, Docker's ``DOCKER-USER``).

A rule the user puts there must keep working through everything nsnet does to its own table:
a daemon restart (which rebuilds the hook chains), ``nsnet system reconcile``, and networks
made and removed. The rule here is the documented example: one container may not reach the
LAN, its neighbour on the same network still may. The "LAN" is a second namespace on a veth
(TEST-NET-3), reached through the host's masquerade.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import exec_, ip_of, run

from nsnet.client.api import Client
from nsnet.testing.hosts import Daemon, TestHost, sh
from nsnet.testing.lan import lan_machine

pytestmark = pytest.mark.root

LAN_IP = "203.0.113.2"


@pytest.fixture
def lan(daemon: Daemon) -> Iterator[TestHost]:
    """A client on the LAN: ``lan0`` (203.0.113.1) on the test host, ``lan0p`` in it."""
    with lan_machine(daemon.host, host_addresses=["203.0.113.1/24"],
                     lan_addresses=[f"{LAN_IP}/24"], prefix="nsul") as other:
        yield other


def reaches_lan(c: Client, cid: str) -> bool:
    return exec_(c, cid, ["ping", "-c1", "-W1", LAN_IP])[0] == 0


def forward_rules(host: TestHost) -> list[dict[str, Any]]:
    return [item["rule"] for item in host.nft_json("list", "chain", "inet", "nsnet", "forward")
            if "rule" in item]


def user_rules(host: TestHost) -> list[dict[str, Any]]:
    return [item["rule"] for item in host.nft_json("list", "chain", "inet", "nsnet",
                                                   "nsnet-user") if "rule" in item]


def assert_blocked_only(c: Client, blocked: str, allowed: str) -> None:
    assert not reaches_lan(c, blocked)
    assert reaches_lan(c, allowed)


def test_user_rule_survives_restart_reconcile_and_network_changes(daemon: Daemon,
                                                                  lan: TestHost) -> None:
    c = daemon.client()
    # The chain is there from the start, empty, and the forward hook jumps to it first.
    assert user_rules(daemon.host) == []
    first = forward_rules(daemon.host)[0]
    assert first["expr"] == [{"jump": {"target": "nsnet-user"}}]
    c.networks.create({"Name": "app"})
    a = run(c, network="app", name="a")
    b = run(c, network="app", name="b")
    assert reaches_lan(c, a) and reaches_lan(c, b)

    # The documented example: a may not reach the LAN.
    sh("nft", "add", "rule", "inet", "nsnet", "nsnet-user", "ip", "saddr",
       ip_of(c, a, "app"), "oifname", "lan0", "drop", ns=daemon.host.name)
    assert_blocked_only(c, a, b)
    rule = user_rules(daemon.host)

    # Networks made and removed (with a container on one) leave the rule alone.
    c.networks.create({"Name": "other"})
    x = run(c, network="other", name="x")
    assert reaches_lan(c, x)
    c.containers.remove(x, force=True)
    c.networks.remove("other")
    assert user_rules(daemon.host) == rule
    assert_blocked_only(c, a, b)

    # Reconcile, through the API and the CLI.
    c.reconcile()
    daemon.cli("system", "reconcile")
    assert user_rules(daemon.host) == rule
    assert_blocked_only(c, a, b)

    # A daemon restart rebuilds the hook chains: one jump, still first, and the rule kept.
    daemon.stop()
    daemon.start()
    c = daemon.client()
    assert user_rules(daemon.host) == rule
    jumps = [r for r in forward_rules(daemon.host)
             if r["expr"] == [{"jump": {"target": "nsnet-user"}}]]
    assert len(jumps) == 1 and forward_rules(daemon.host)[0] == jumps[0]
    assert c.containers.inspect("a")["State"]["Running"]
    assert_blocked_only(c, a, b)

    # The user takes the rule out: a reaches the LAN again.
    sh("nft", "flush", "chain", "inet", "nsnet", "nsnet-user", ns=daemon.host.name)
    assert reaches_lan(c, a)


def test_user_chain_accept_and_return_semantics(daemon: Daemon, lan: TestHost) -> None:
    """``return`` goes on to nsnet's rules (an internal network stays closed); a ``drop``
    of traffic nsnet would accept is final; a chain the user deleted comes back empty."""
    c = daemon.client()
    c.networks.create({"Name": "inner", "Internal": True})
    c.networks.create({"Name": "open"})
    i = run(c, network="inner", name="i")
    o = run(c, network="open", name="o")
    sh("nft", "add", "rule", "inet", "nsnet", "nsnet-user", "ip", "saddr",
       ip_of(c, i, "inner"), "return", ns=daemon.host.name)
    assert not reaches_lan(c, i)  # return: nsnet's internal drop still judges
    assert reaches_lan(c, o)
    sh("nft", "add", "rule", "inet", "nsnet", "nsnet-user", "icmp", "type", "echo-request",
       "oifname", "lan0", "drop", ns=daemon.host.name)
    assert not reaches_lan(c, o)
    sh("nft", "delete", "chain", "inet", "nsnet", "nsnet-user", ns=daemon.host.name,
       check=False)  # refused while the forward chain jumps to it
    sh("nft", "flush", "chain", "inet", "nsnet", "forward", ns=daemon.host.name)
    sh("nft", "delete", "chain", "inet", "nsnet", "nsnet-user", ns=daemon.host.name)
    c.reconcile()
    assert user_rules(daemon.host) == []
    assert forward_rules(daemon.host)[0]["expr"] == [{"jump": {"target": "nsnet-user"}}]
    assert reaches_lan(c, o)
