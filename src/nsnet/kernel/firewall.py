"""The host firewall: one ``inet nsnet`` table, per-network chains reached through verdict maps.

Layout (see docs/kernel-names.md)::

    table inet nsnet
      map to_net    ifname : verdict      oifname  -> jump n-<id12>-to    (traffic entering a net)
      map from_net  ifname : verdict      iifname  -> jump n-<id12>-from  (traffic leaving a net)
      map nat4      ipv4_addr : verdict   saddr (interval) -> jump n-<id12>-nat
      map nat6      ipv6_addr : verdict
      set bridges   ifname                 every network's bridge (who is "another network")
      set internal  ifname                 internal networks' bridges: nothing of theirs enters
                                           another network (not even DNATed, see network_plan)
      set open4     ipv4_addr . inet_proto . inet_service   published container ports open
      set open6     ipv6_addr . inet_proto . inet_service   to direct routing (routed mode)
      chain nsnet-user  the user's own rules (Docker's DOCKER-USER): never flushed by nsnet
      chain loopback_guard  hook prerouting raw: iifname != "lo" ip daddr 127.0.0.0/8 drop
      chain forward     hook forward, policy accept: jump nsnet-user;
                        oifname vmap @to_net; iifname vmap @from_net
      chain postrouting hook postrouting (srcnat):   ip saddr vmap @nat4; ip6 saddr vmap @nat6

Adding a network adds three chains and three map elements in one transaction; nothing else is
rewritten, so the cost is flat in the number of networks and containers. The postrouting hook
has no input interface, which is why NAT is keyed by source subnet and not by bridge name.

The policies stay ``accept``: nsnet only judges packets of its own interfaces and leaves the rest
of the host's forwarding alone. Another firewall's drop is final, though, so when iptables-nft's
``filter FORWARD`` exists each network also gets accepts there (``foreign_firewall``), added
after its own chains and removed before them: those accepts never stand without the judge.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from nsnet.kernel.foreign_firewall import ForeignForward
from nsnet.kernel.nft import Nft, NftError, run_in_namespace

TABLE = "inet nsnet"


@dataclass(frozen=True)
class NetworkFirewall:
    """What the firewall needs to know of one bridge network."""

    short_id: str
    name: str
    bridge: str
    subnets: tuple[str, ...]
    internal: bool = False
    icc: bool = True
    masquerade: bool = True
    # Gateway mode ``routed`` per family (drivers/bridge.py): no masquerade for it; the
    # containers answer ICMP from anywhere and their published ports are open to direct
    # routing at the container's own address (``open4``/``open6``), as in moby's routed mode.
    routed4: bool = False
    routed6: bool = False
    # Gateway mode ``nat-unprotected``: masquerade as ``nat``, and every port of the
    # containers open to direct routing from outside (not from another network's bridge).
    unprotected4: bool = False
    unprotected6: bool = False


def _q(s: str) -> str:
    return '"' + s.replace('"', "") + '"'


def _cut(s: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, cut at a character boundary: nftables refuses a
    comment over 128 bytes, and a network name may be 255 characters (the id12 beside it
    still names the network)."""
    return s.encode()[:limit].decode(errors="ignore")


# The user's own chain (Docker's ``DOCKER-USER``): made once, jumped to first from the forward
# hook, never flushed or deleted by nsnet, so rules put there survive restarts, reconcile and
# network changes. A ``drop`` there is final; ``return`` (or falling off the end) goes on to
# nsnet's rules; an ``accept`` skips them. See docs/kernel-names.md for an example.
USER_CHAIN = "nsnet-user"


def base_plan() -> str:
    """Idempotent: ``add`` of an existing object is a no-op in nftables.

    The hook chains are flushed and rewritten (they hold only nsnet's dispatch rules); the
    user chain is only ``add``-ed, which leaves an existing one and its rules untouched.
    """
    return "\n".join([
        f"add table {TABLE}",
        f"add chain {TABLE} {USER_CHAIN}",
        f"add map {TABLE} to_net {{ type ifname : verdict; }}",
        f"add map {TABLE} from_net {{ type ifname : verdict; }}",
        f"add map {TABLE} nat4 {{ type ipv4_addr : verdict; flags interval; }}",
        f"add map {TABLE} nat6 {{ type ipv6_addr : verdict; flags interval; }}",
        f"add set {TABLE} bridges {{ type ifname; }}",
        f"add set {TABLE} internal {{ type ifname; }}",
        f"add set {TABLE} open4 {{ type ipv4_addr . inet_proto . inet_service; }}",
        f"add set {TABLE} open6 {{ type ipv6_addr . inet_proto . inet_service; }}",
        f"add chain {TABLE} forward {{ type filter hook forward priority filter; policy accept; }}",
        f"add chain {TABLE} postrouting "
        "{ type nat hook postrouting priority srcnat; policy accept; }",
        # route_localnet on a bridge (kernel/port_firewall.py: the host reaching published
        # ports at 127.0.0.1) also makes the kernel accept packets *to* 127.0.0.0/8 arriving on
        # it: a container could reach the host's loopback-only services and loopback-only
        # published ports through its gateway's MAC (CVE-2020-8558's shape). Dropped first,
        # whatever the interface: with br_netfilter this hook sees the bridge *port* as the
        # input, and no interface has a use for a packet to 127/8 from the wire.
        f"add chain {TABLE} loopback_guard "
        "{ type filter hook prerouting priority raw; policy accept; }",
        f"flush chain {TABLE} forward",
        f"flush chain {TABLE} postrouting",
        f"flush chain {TABLE} loopback_guard",
        f'add rule {TABLE} loopback_guard iifname != "lo" ip daddr 127.0.0.0/8 drop',
        f"add rule {TABLE} forward jump {USER_CHAIN}",
        f"add rule {TABLE} forward oifname vmap @to_net",
        f"add rule {TABLE} forward iifname vmap @from_net",
        f"add rule {TABLE} postrouting ip saddr vmap @nat4",
        f"add rule {TABLE} postrouting ip6 saddr vmap @nat6",
    ]) + "\n"


def chain_names(short_id: str) -> tuple[str, str, str]:
    return f"n-{short_id}-to", f"n-{short_id}-from", f"n-{short_id}-nat"


def network_plan(n: NetworkFirewall) -> str:
    """(Re)write one network's chains and hook them into the maps, atomically."""
    to_c, from_c, nat_c = chain_names(n.short_id)
    br = _q(n.bridge)
    comment = _q(f"nsnet network {_cut(n.name, 96)} {n.short_id}")
    lines = []
    for c in (to_c, from_c, nat_c):
        lines.append(f"add chain {TABLE} {c}")
        lines.append(f"flush chain {TABLE} {c}")
    # Entering the network: replies to its own connections, its own members (ICC), nothing else.
    lines.append(f"add rule {TABLE} {to_c} ct state established,related accept comment {comment}")
    # From an internal network: nothing, whatever the rules below would let in. This chain is
    # looked up by the packet's way out, so the internal network's own ``from`` chain never
    # sees it: without this, its containers reached published ports of every other network
    # through their own gateway address (DNAT, then ``ct status dnat accept``), and a routed
    # network's open ports and ICMP directly; moby's isolation drops both.
    lines.append(f"add rule {TABLE} {to_c} iifname != {br} iifname @internal drop "
                 f"comment {comment}")
    if not n.internal:
        # Published ports (kernel/port_firewall.py): what its DNAT let in from outside.
        lines.append(f"add rule {TABLE} {to_c} ct status dnat accept comment {comment}")
    verdict = "accept" if n.icc else "drop"
    lines.append(f"add rule {TABLE} {to_c} iifname {br} {verdict} comment {comment}")
    lines += _routed_icmp(n, to_c, comment)
    lines += _direct_routing(n, to_c, comment)
    lines.append(f"add rule {TABLE} {to_c} drop comment {comment}")
    # Leaving the network: an internal network keeps everything inside its subnet.
    if n.internal:
        lines.append(f"add rule {TABLE} {from_c} drop comment {comment}")
    else:
        lines.append(f"add rule {TABLE} {from_c} accept comment {comment}")
    if n.masquerade and not n.internal:
        lines += _masquerade(n, nat_c, br, comment)
    lines.append(f"add element {TABLE} to_net {{ {br} : jump {to_c} }}")
    lines.append(f"add element {TABLE} from_net {{ {br} : jump {from_c} }}")
    lines.append(f"add element {TABLE} bridges {{ {br} }}")
    if n.internal:
        lines.append(f"add element {TABLE} internal {{ {br} }}")
    for s in n.subnets:
        net = ipaddress.ip_network(s)
        m = "nat4" if net.version == 4 else "nat6"
        lines.append(f"add element {TABLE} {m} {{ {net} : jump {nat_c} }}")
    return "\n".join(lines) + "\n"


def _routed_icmp(n: NetworkFirewall, to_c: str, comment: str) -> list[str]:
    """A routed family's containers answer ping from anywhere (moby's routed mode); other new
    connections from outside still stop at the drop, unless a published port opens them."""
    if n.internal:
        return []
    protos = [p for p, on in (("icmp", n.routed4), ("ipv6-icmp", n.routed6)) if on]
    return [f"add rule {TABLE} {to_c} meta l4proto {p} accept comment {comment}"
            for p in protos]


def _direct_routing(n: NetworkFirewall, to_c: str, comment: str) -> list[str]:
    """New connections routed straight to a container's address. ``routed``: its published
    ports, from anywhere (other networks too, as moby's routed mode). ``nat-unprotected``:
    every port, from outside the host's networks only. ``nat``: none (moby opens published
    ports to direct routing there too; nsnet does not, they are reached by the host's
    addresses)."""
    if n.internal:
        return []
    out = []
    for fam, word, routed, unprotected in (("ipv4", "ip", n.routed4, n.unprotected4),
                                           ("ipv6", "ip6", n.routed6, n.unprotected6)):
        if routed:
            s = "open4" if fam == "ipv4" else "open6"
            out.append(f"add rule {TABLE} {to_c} {word} daddr . meta l4proto . th dport @{s} "
                       f"accept comment {comment}")
        elif unprotected:
            out.append(f"add rule {TABLE} {to_c} meta nfproto {fam} iifname != @bridges "
                       f"accept comment {comment}")
    return out


def _masquerade(n: NetworkFirewall, nat_c: str, br: str, comment: str) -> list[str]:
    """Masquerade the families in ``nat`` gateway mode; a ``routed`` family leaves with the
    container's own address. One unqualified rule when neither is routed (the common case)."""
    if not n.routed4 and not n.routed6:
        return [f"add rule {TABLE} {nat_c} oifname != {br} masquerade comment {comment}"]
    fams = [f for f, routed in (("ipv4", n.routed4), ("ipv6", n.routed6)) if not routed]
    return [f"add rule {TABLE} {nat_c} meta nfproto {f} oifname != {br} masquerade "
            f"comment {comment}" for f in fams]


def network_remove_plan(short_id: str, bridge: str, subnets: tuple[str, ...]) -> list[str]:
    """One command per object so a partial leftover can still be removed piece by piece."""
    to_c, from_c, nat_c = chain_names(short_id)
    br = _q(bridge)
    cmds = [
        f"delete element {TABLE} to_net {{ {br} }}",
        f"delete element {TABLE} from_net {{ {br} }}",
        f"delete element {TABLE} bridges {{ {br} }}",
        # Only an internal network has one: added first, so the delete cannot fail either way.
        f"add element {TABLE} internal {{ {br} }}",
        f"delete element {TABLE} internal {{ {br} }}",
    ]
    for s in subnets:
        net = ipaddress.ip_network(s)
        m = "nat4" if net.version == 4 else "nat6"
        cmds.append(f"delete element {TABLE} {m} {{ {net} }}")
    for c in (to_c, from_c, nat_c):
        cmds.append(f"delete chain {TABLE} {c}")
    return cmds


class Firewall:
    """Applies the plans in the daemon's (host) namespace."""

    def __init__(self) -> None:
        self._nft = Nft()
        self._base_done = False
        self.foreign = ForeignForward(self._nft)

    def ensure_base(self) -> None:
        # Called by reconcile first: the rules kept of other tables are read afresh too.
        self.foreign.invalidate()
        self._nft.run(base_plan())
        self._base_done = True

    def apply_network(self, n: NetworkFirewall) -> None:
        # The base table is its own transaction: nft 1.0.6 cannot add an interval element to
        # a map made earlier in the same batch. It is made once, and again if someone removed it.
        if not self._base_done:
            self.ensure_base()
        try:
            self._nft.run(network_plan(n))
        except NftError:
            self.ensure_base()
            self._nft.run(network_plan(n))
        self.foreign.ensure(n.short_id, n.bridge, n.subnets)

    def remove_network(self, short_id: str, bridge: str, subnets: tuple[str, ...]) -> None:
        self.foreign.remove(short_id)
        cmds = network_remove_plan(short_id, bridge, subnets)
        try:
            self._nft.run("\n".join(cmds) + "\n")
            return
        except NftError:
            pass
        # Something was already gone: remove what is left, one object at a time (idempotent).
        for c in cmds:
            try:
                self._nft.run(c + "\n")
            except NftError:
                continue

    def remove_stale(self, short_id: str) -> None:
        """Remove a network's chains when only the table knows it (reconcile after a crash):
        its map entries are found by the chain they jump to, since the bridge and subnets are
        not known any more."""
        prefix = f"n-{short_id}-"
        jnft = Nft(json_output=True)
        cmds: list[str] = []
        try:
            for m in ("to_net", "from_net", "nat4", "nat6"):
                try:
                    data = json.loads(jnft.run(f"list map {TABLE} {m}") or "{}")
                except (NftError, ValueError):
                    continue
                for item in data.get("nftables", []):
                    for key, verdict in item.get("map", {}).get("elem", []):
                        target = (verdict.get("jump") or {}).get("target", "")
                        if not target.startswith(prefix):
                            continue
                        if isinstance(key, str):
                            cmds.append(f"delete element {TABLE} {m} {{ {_q(key)} }}")
                            if m == "to_net":
                                cmds.append(f"delete element {TABLE} bridges {{ {_q(key)} }}")
                                cmds.append(f"delete element {TABLE} internal {{ {_q(key)} }}")
                        elif "prefix" in key:
                            pk = key["prefix"]
                            cmds.append(f"delete element {TABLE} {m} "
                                        f"{{ {pk['addr']}/{pk['len']} }}")
        finally:
            jnft.close()
        cmds += [f"delete chain {TABLE} {c}" for c in chain_names(short_id)]
        self.foreign.remove(short_id)
        for c in cmds:
            try:
                self._nft.run(c + "\n")
            except NftError:
                continue

    def network_chains(self) -> set[str]:
        """Short IDs that have chains in the table (for reconcile)."""
        try:
            out = self._nft.run(f"list table {TABLE}")
        except NftError:
            return set()
        ids = set()
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("chain n-") and line.endswith("-to {"):
                ids.add(line[len("chain n-"):-len("-to {")])
        return ids

    def run_in_namespace(self, ns_path: str, commands: str) -> None:
        """A sandbox's own small table (its resolver's DNAT): one transaction in its
        namespace, in the nftables thread whose descriptor numbers stay low."""
        run_in_namespace(ns_path, commands)

    def delete_table(self) -> None:
        try:
            self._nft.run(f"delete table {TABLE}\n")
        except NftError:
            pass

    def close(self) -> None:
        self.foreign.close()
        self._nft.close()


# -- the per-sandbox resolver table (docs/architecture.md rule 6) --------------------------

RESOLVER_IP = "127.0.0.11"
SANDBOX_DNS_TABLE = "ip nsnet-dns"


def sandbox_dns_plan(udp_port: int, tcp_port: int) -> str:
    """The small table inside a sandbox that sends 127.0.0.11:53 to the resolver's sockets.

    The daemon's sockets listen on kernel-chosen ports so port 53 stays free for the
    container's own use; conntrack undoes the DNAT on replies, so no SNAT rule is needed. The
    chain is flushed first, so applying the plan again (a reconnect) replaces the ports.
    """
    for port in (udp_port, tcp_port):
        if not 0 < port < 65536:
            raise ValueError(f"resolver port out of range: {port}")
    t = SANDBOX_DNS_TABLE
    return "\n".join([
        f"add table {t}",
        f"add chain {t} output {{ type nat hook output priority -100; policy accept; }}",
        f"flush chain {t} output",
        f"add rule {t} output ip daddr {RESOLVER_IP} udp dport 53 "
        f"dnat to {RESOLVER_IP}:{udp_port} comment \"nsnet embedded DNS\"",
        f"add rule {t} output ip daddr {RESOLVER_IP} tcp dport 53 "
        f"dnat to {RESOLVER_IP}:{tcp_port} comment \"nsnet embedded DNS\"",
    ]) + "\n"
