"""Firewall plans as text: what each network adds, without touching nftables."""

from __future__ import annotations

from nsnet.kernel.firewall import NetworkFirewall, base_plan, network_plan, network_remove_plan


def test_base_plan_hooks_maps_and_keeps_policies_accept() -> None:
    plan = base_plan()
    assert "add table inet nsnet" in plan
    assert "oifname vmap @to_net" in plan and "iifname vmap @from_net" in plan
    assert "ip saddr vmap @nat4" in plan
    assert plan.count("policy accept") == 2
    assert "policy drop" not in plan


def test_network_plan_isolation_icc_masquerade() -> None:
    n = NetworkFirewall(short_id="abc123abc123", name="app", bridge="br-abc123abc123",
                        subnets=("172.18.0.0/16",))
    plan = network_plan(n)
    assert 'iifname "br-abc123abc123" accept' in plan
    assert "ct state established,related accept" in plan
    assert 'oifname != "br-abc123abc123" masquerade' in plan
    assert "add element inet nsnet nat4 { 172.18.0.0/16 : jump n-abc123abc123-nat }" in plan
    assert 'comment "nsnet network app abc123abc123"' in plan
    # Every rule of the network lives in its own chains: nothing else is rewritten.
    for line in plan.splitlines():
        if line.startswith("add rule"):
            assert " n-abc123abc123-" in line


def test_icc_false_and_internal() -> None:
    n = NetworkFirewall(short_id="x" * 12, name="i", bridge="br-x", subnets=("10.0.0.0/24",),
                        internal=True, icc=False)
    plan = network_plan(n)
    assert 'iifname "br-x" drop' in plan
    assert "masquerade" not in plan
    assert f"add rule inet nsnet n-{'x' * 12}-from drop" in plan


def test_remove_plan_is_per_object() -> None:
    cmds = network_remove_plan("abc", "br-abc", ("10.0.0.0/24", "fd00::/64"))
    assert cmds[:2] == ['delete element inet nsnet to_net { "br-abc" }',
                        'delete element inet nsnet from_net { "br-abc" }']
    assert "delete element inet nsnet nat6 { fd00::/64 }" in cmds
    assert cmds[-1] == "delete chain inet nsnet n-abc-nat"
