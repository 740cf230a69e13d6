"""Firewall plans as text: what each network adds, without touching nftables."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nsnet.kernel import foreign_firewall as ff
from nsnet.kernel.firewall import NetworkFirewall, base_plan, network_plan, network_remove_plan


def test_base_plan_hooks_maps_and_keeps_policies_accept() -> None:
    plan = base_plan()
    assert "add table inet nsnet" in plan
    assert "oifname vmap @to_net" in plan and "iifname vmap @from_net" in plan
    assert "ip saddr vmap @nat4" in plan
    assert plan.count("policy accept") == 3  # forward, postrouting, loopback_guard
    assert "policy drop" not in plan
    # The one drop of the base: packets to 127/8 from the wire (route_localnet on a bridge).
    assert 'loopback_guard iifname != "lo" ip daddr 127.0.0.0/8 drop' in plan


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


# -- accepts in another firewall's FORWARD chain (kernel/foreign_firewall.py) ------------------

def _rule(handle: int, expr: list[dict[str, Any]], comment: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"family": "ip", "table": "filter", "chain": "FORWARD",
                         "handle": handle, "expr": expr}
    if comment is not None:
        r["comment"] = comment
    return {"rule": r}


def _if(key: str, name: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": name}}


COUNTER = {"counter": {"packets": 0, "bytes": 0}}
ACCEPT: dict[str, Any] = {"accept": None}


def test_foreign_rules_only_where_the_network_has_a_subnet() -> None:
    assert ff.wanted_rules("br-a", ("172.18.0.0/16",), "ip") == [("iifname", "br-a"),
                                                                  ("oifname", "br-a")]
    assert ff.wanted_rules("br-a", ("172.18.0.0/16",), "ip6") == []
    assert len(ff.wanted_rules("br-a", ("172.18.0.0/16", "fd00::/64"), "ip6")) == 2


def test_foreign_insert_is_a_rule_iptables_nft_can_decode() -> None:
    cmd = ff.insert_command("ip", "abc123abc123", ("oifname", "br-x"))
    assert cmd == ('insert rule ip filter FORWARD oifname "br-x" counter accept '
                   'comment "nsnet:abc123abc123"')
    # nft-native ct state in an iptables-nft chain makes `iptables -S` fail ("incompatible").
    assert "ct " not in cmd
    assert ff.delete_command("ip6", 7) == "delete rule ip6 filter FORWARD handle 7"


def test_ours_in_reads_only_our_comments() -> None:
    chain = [
        {"metainfo": {"version": "1.0.6"}},
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "policy": "drop"}},
        _rule(3, [_if("iifname", "br-a"), COUNTER, ACCEPT], "nsnet:aaa"),
        _rule(4, [_if("oifname", "br-a"), COUNTER, ACCEPT], "nsnet:aaa"),
        # Docker's rule (an xt match) and somebody's commented rule: not ours.
        _rule(5, [_if("oifname", "docker0"), {"xt": {"type": "match", "name": "conntrack"}},
                  COUNTER, ACCEPT]),
        _rule(6, [_if("iifname", "br-a"), ACCEPT], "someone else"),
        # Ours by comment but not a shape we write: seen, so it gets rewritten.
        _rule(7, [_if("iifname", "br-b"), {"drop": None}], "nsnet:bbb"),
    ]
    assert ff.ours_in(chain) == {"aaa": [(3, ("iifname", "br-a")), (4, ("oifname", "br-a"))],
                                 "bbb": [(7, None)]}


def test_foreign_sync_writes_nothing_when_right_and_rewrites_otherwise() -> None:
    wanted = [("iifname", "br-a"), ("oifname", "br-a")]
    right: list[ff.Present] = [(4, ("oifname", "br-a")), (3, ("iifname", "br-a"))]
    assert ff.sync_changes(wanted, right) == ([], [])
    # Inserted by this process (handle not read back yet) counts as present too.
    assert ff.sync_changes(wanted, [(None, ("oifname", "br-a")), (None, ("iifname", "br-a"))]) \
        == ([], [])
    # A flushed chain: both inserted.
    assert ff.sync_changes(wanted, []) == ([], wanted)
    # A duplicate, a stranger shape, a renamed bridge: ours go, the wanted ones come back.
    for present in ([*right, (9, ("iifname", "br-a"))], [right[0], (9, None)],
                    [(3, ("iifname", "br-old")), (4, ("oifname", "br-old"))]):
        assert ff.sync_changes(wanted, present) == (present, wanted)
    # Nothing wanted (no subnet of this family): only deletes.
    assert ff.sync_changes([], right) == (right, [])
    assert ff.commands("ip6", [("aaa", p) for p in right], [("bbb", wanted[0])]) == [
        ff.delete_command("ip6", 4), ff.delete_command("ip6", 3),
        ff.insert_command("ip6", "bbb", wanted[0])]


_sig = st.one_of(st.none(), st.tuples(st.sampled_from(["iifname", "oifname"]),
                                      st.sampled_from(["br-a", "br-b"])))


@settings(max_examples=200, deadline=None)
@given(present=st.lists(_sig, max_size=5), v6=st.booleans())
def test_foreign_sync_converges_in_one_step(present: list[tuple[str, str] | None],
                                            v6: bool) -> None:
    """Applying the commands to the chain leaves nothing for the next reconcile to do."""
    subnets = ("10.0.0.0/24", "fd00::/64") if v6 else ("10.0.0.0/24",)
    wanted = ff.wanted_rules("br-a", subnets, "ip6")
    chain: list[ff.Present] = list(enumerate(present, start=1))
    deletes, inserts = ff.sync_changes(wanted, chain)
    next_handle = len(chain) + 1
    for cmd in ff.commands("ip6", [("aaa", p) for p in deletes], [("aaa", r) for r in inserts]):
        if cmd.startswith("delete rule"):
            handle = int(cmd.rsplit(" ", 1)[1])
            chain = [(h, s) for h, s in chain if h != handle]
        else:
            assert 'comment "nsnet:aaa"' in cmd
            key, name = cmd.split()[5:7]
            chain.append((next_handle, (key, name.strip('"'))))
            next_handle += 1
    assert sorted(s for _, s in chain if s is not None) == sorted(wanted)
    assert ff.sync_changes(wanted, chain) == ([], [])


def test_sandbox_dns_plan_sends_port_53_to_the_resolver_sockets() -> None:
    """The sandbox's own table: both protocols DNAT to their own port, port 53 stays free
    (nothing listens there), and the chain is flushed before the rules, so a second apply
    (another connect) replaces the ports instead of adding a second pair."""
    from nsnet.kernel.firewall import sandbox_dns_plan

    plan = sandbox_dns_plan(40001, 40002).splitlines()
    assert plan[0] == "add table ip nsnet-dns"
    assert "type nat hook output priority -100" in plan[1]
    assert plan[2] == "flush chain ip nsnet-dns output"
    rules = plan[3:]
    assert rules == [
        'add rule ip nsnet-dns output ip daddr 127.0.0.11 udp dport 53 '
        'dnat to 127.0.0.11:40001 comment "nsnet embedded DNS"',
        'add rule ip nsnet-dns output ip daddr 127.0.0.11 tcp dport 53 '
        'dnat to 127.0.0.11:40002 comment "nsnet embedded DNS"',
    ]
    for bad in (0, 65536):
        try:
            sandbox_dns_plan(bad, 40002)
        except ValueError:
            continue
        raise AssertionError(f"port {bad} accepted")


def test_a_long_network_name_keeps_the_comment_under_nftables_limit() -> None:
    """nft refuses comments over 128 bytes; network names may be 255 characters (Docker's
    rule), so the name is cut by bytes at a character boundary and the id still says which."""
    n = NetworkFirewall(short_id="abc123abc123", name="é" * 200, bridge="br-abc123abc123",
                        subnets=("172.18.0.0/16",))
    comments = {line.split(" comment ", 1)[1] for line in network_plan(n).splitlines()
                if " comment " in line}
    assert comments == {'"nsnet network ' + "é" * 48 + ' abc123abc123"'}
    assert all(len(c.encode()) <= 128 for c in comments)
