"""Published ports: DNAT by verdict-free maps in the ``inet nsnet`` table, no proxy process.

Layout (per address family; IPv4 shown, IPv6 is the same with ``6`` and ``ip6``)::

    table inet nsnet
      map   ports4     inet_proto . inet_service : ipv4_addr . inet_service   (any host address)
      map   ports4_ip  ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
      set   hairpin4   ipv4_addr . ipv4_addr (interval)  network subnet . network subnet
      chain ports_pre  hook prerouting dstnat:  fib daddr type local jump ports_dnat
      chain ports_out  hook output -100:        fib daddr type local jump ports_dnat
      chain ports_dnat dnat ip to ip daddr . meta l4proto . th dport map @ports4_ip
                       dnat ip to meta l4proto . th dport map @ports4
      chain ports_post hook postrouting srcnat - 1:
                       ct status dnat ip saddr . ip daddr @hairpin4 masquerade
                       ct status dnat ip saddr 127.0.0.0/8 masquerade

Publishing a container's ports is one transaction for both address families that adds its
map elements (each with a comment naming the endpoint, which is how reconcile finds strays)
and, for the first container of a network to publish, the network's hairpin element (comment
naming the network); the last one to go takes it along. Nothing is rewritten, and the one
interval set holds one element per network, not per container: a per-container element made
every start's commit slower with the number of publishing containers (0.40 -> 0.55 ms at 1,000
in ``bench/published_ports.py``'s step; the maps are hash lookups and stay flat).

Why each rule: ``fib daddr type local`` limits DNAT to the host's own addresses (traffic
passing through the host to elsewhere is left alone). Traffic from a container to a published
port on the same network is masqueraded (hairpin: source and DNATed destination both in the
network's subnet): without it the reply would go straight back over the bridge, from an
address the client did not talk to. A client on another network leaves its own network and is
masqueraded by that network's outbound rule, as with Docker. Traffic from the host itself to
127.0.0.1 is masqueraded to the bridge's address, which also needs ``route_localnet`` on that
bridge (the kernel otherwise drops a 127/8 source leaving a non-loopback link); the driver sets
it. External clients are not masqueraded, so the container sees the real client address.
The forward chain of the target network accepts ``ct status dnat`` (kernel/firewall.py).

On a network whose gateway mode is ``routed`` for the family, the container ports are also
added to the firewall's ``open4``/``open6`` sets (kernel/firewall.py), which that network's chain
accepts: moby's routed mode reaches published ports at the container's own address.

IPv6 (``ports6``, ``ports6_ip``, ``hairpin6``) is the same but for the host's own loopback:
a connection from ``::1`` is DNATed and masqueraded alike, yet the kernel never delivers it
(there is no ``route_localnet`` for IPv6; moby serves ``[::1]`` only with its userland proxy),
so there is no ``::1`` masquerade rule and ``-p [::1]:...`` is refused by the engine.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from nsnet.kernel.nft import Nft, NftError

TABLE = "inet nsnet"
PROTOCOLS = ("tcp", "udp", "sctp")
COMMENT_PREFIX = "nsnet ep "
NETWORK_COMMENT_PREFIX = "nsnet net "


@dataclass(frozen=True)
class PortRule:
    """One published port as the firewall writes it: ``host_ip:host_port/proto`` reaches
    ``address:container_port``. ``host_ip`` "" (or ``0.0.0.0``, ``::``) is every address of
    the host in the family of ``address``."""

    protocol: str
    host_ip: str
    host_port: int
    address: str
    container_port: int


@dataclass(frozen=True)
class EndpointPorts:
    """Everything one endpoint publishes in one address family. ``direct``: its network is
    in ``routed`` mode for this family, so the container ports are also opened to direct
    routing at the container's address (the ``open4``/``open6`` sets of kernel/firewall.py)."""

    endpoint_id: str
    address: str
    rules: tuple[PortRule, ...]
    direct: bool = False

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class Hairpin:
    """A network (one family of it) whose containers reach each other's published ports:
    DNATed traffic from its subnet to its subnet is masqueraded."""

    network_id: str
    subnet: str

    @property
    def family(self) -> int:
        return ipaddress.ip_network(self.subnet, strict=False).version

    @property
    def key_subnet(self) -> str:
        """The subnet as its element holds it (host bits cleared): what tells two hairpin
        elements of one network apart."""
        return str(ipaddress.ip_network(self.subnet, strict=False))


@dataclass(frozen=True)
class PublishedElement:
    """A map or set element found in the kernel, for reconcile: an endpoint's (a published
    port) or a network's (its hairpin element)."""

    family: int
    endpoint_id: str  # from the element's comment (the first 12 characters of the id)
    delete_command: str
    network_id: str = ""  # a hairpin element's network (first 12 characters), else ""
    subnet: str = ""  # a hairpin element's subnet (a network may have two of one family)


class PortRules(Protocol):
    """What the bridge driver needs of the port firewall; ``FakePortRules`` in tests."""

    def publish(self, eps: Sequence[EndpointPorts],
                hairpins: Sequence[Hairpin] = ()) -> None: ...

    def unpublish(self, eps: Sequence[EndpointPorts],
                  hairpins: Sequence[Hairpin] = ()) -> None: ...

    def elements(self) -> list[PublishedElement]: ...

    def remove_elements(self, elements: list[PublishedElement]) -> None: ...


def _names(family: int) -> tuple[str, str, str, str, str]:
    """(any-address map, per-address map, hairpin set, nft family word, address type)."""
    if family == 4:
        return "ports4", "ports4_ip", "hairpin4", "ip", "ipv4_addr"
    return "ports6", "ports6_ip", "hairpin6", "ip6", "ipv6_addr"


def base_plan(family: int = 4) -> str:
    """The maps and chains for one family; idempotent (``add`` of what exists is a no-op, and
    the chains are flushed before their rules are written again)."""
    anymap, ipmap, hairpin, _, addr = _names(family)
    lines = [
        f"add table {TABLE}",
        f"add map {TABLE} {anymap} {{ type inet_proto . inet_service : {addr} . inet_service; }}",
        f"add map {TABLE} {ipmap} "
        f"{{ type {addr} . inet_proto . inet_service : {addr} . inet_service; }}",
        f"add set {TABLE} {hairpin} {{ type {addr} . {addr}; flags interval; }}",
        f"add chain {TABLE} ports_pre {{ type nat hook prerouting priority dstnat; "
        "policy accept; }",
        f"add chain {TABLE} ports_out {{ type nat hook output priority -100; policy accept; }}",
        f"add chain {TABLE} ports_post {{ type nat hook postrouting priority srcnat - 1; "
        "policy accept; }",
        f"add chain {TABLE} ports_dnat",
    ]
    return "\n".join(lines) + "\n"


def chains_plan(families: tuple[int, ...]) -> str:
    """The rules of the port chains for the families in use, rewritten as a whole."""
    lines = [f"flush chain {TABLE} {c}" for c in ("ports_pre", "ports_out", "ports_dnat",
                                                  "ports_post")]
    lines.append(f"add rule {TABLE} ports_pre fib daddr type local jump ports_dnat")
    lines.append(f"add rule {TABLE} ports_out fib daddr type local jump ports_dnat")
    for family in families:
        anymap, ipmap, hairpin, word, _ = _names(family)
        lines.append(f"add rule {TABLE} ports_dnat dnat {word} to {word} daddr . meta l4proto "
                     f". th dport map @{ipmap}")
        lines.append(f"add rule {TABLE} ports_dnat dnat {word} to meta l4proto . th dport "
                     f"map @{anymap}")
        lines.append(f"add rule {TABLE} ports_post ct status dnat {word} saddr . {word} daddr "
                     f"@{hairpin} masquerade")
        if family == 4:  # IPv6 has no route_localnet: a ::1 source never leaves by a bridge
            lines.append(f"add rule {TABLE} ports_post ct status dnat ip saddr 127.0.0.0/8 "
                         "masquerade")
    return "\n".join(lines) + "\n"


def _check(ep: EndpointPorts) -> None:
    fam = ep.family
    if not ep.endpoint_id.isalnum():
        raise ValueError(f"bad endpoint id {ep.endpoint_id!r}")
    for r in ep.rules:
        if r.protocol not in PROTOCOLS:
            raise ValueError(f"bad protocol {r.protocol!r}")
        for p in (r.host_port, r.container_port):
            if not 0 < p < 65536:
                raise ValueError(f"port out of range: {p}")
        if r.host_ip and ipaddress.ip_address(r.host_ip).version != fam:
            raise ValueError(f"host address {r.host_ip} is not of the family of {ep.address}")
        if ipaddress.ip_address(r.address) != ipaddress.ip_address(ep.address):
            raise ValueError(f"rule for {r.address} in the ports of {ep.address}")


def _hairpin_key(h: Hairpin) -> str:
    if not h.network_id.isalnum():
        raise ValueError(f"bad network id {h.network_id!r}")
    return f"{h.key_subnet} . {h.key_subnet}"


def _key(r: PortRule) -> tuple[str, str]:
    """(map suffix, key) of a rule's element."""
    if r.host_ip and not ipaddress.ip_address(r.host_ip).is_unspecified:
        return "_ip", f"{r.host_ip} . {r.protocol} . {r.host_port}"
    return "", f"{r.protocol} . {r.host_port}"


def _comment(ep: EndpointPorts) -> str:
    return f'"{COMMENT_PREFIX}{ep.endpoint_id[:12]}"'


def _open_keys(ep: EndpointPorts) -> list[str]:
    """The endpoint's container ports as ``open4``/``open6`` keys, once each (two host ports
    may lead to one container port)."""
    if not ep.direct:
        return []
    return list(dict.fromkeys(f"{r.address} . {r.protocol} . {r.container_port}"
                              for r in ep.rules))


def _open_set(family: int) -> str:
    return "open4" if family == 4 else "open6"


def publish_plan(eps: Sequence[EndpointPorts], hairpins: Sequence[Hairpin] = ()) -> str:
    """Endpoints' elements (a container's, both families) and the hairpin elements of
    networks publishing for the first time, as one transaction."""
    lines = []
    for h in hairpins:
        _, _, hairpin, _, _ = _names(h.family)
        lines.append(f"add element {TABLE} {hairpin} {{ {_hairpin_key(h)} "
                     f'comment "{NETWORK_COMMENT_PREFIX}{h.network_id[:12]}" }}')
    for ep in eps:
        _check(ep)
        anymap, _, _, _, _ = _names(ep.family)
        c = _comment(ep)
        for r in ep.rules:
            suffix, key = _key(r)
            lines.append(f"add element {TABLE} {anymap}{suffix} "
                         f"{{ {key} comment {c} : {r.address} . {r.container_port} }}")
        for key in _open_keys(ep):
            lines.append(f"add element {TABLE} {_open_set(ep.family)} {{ {key} comment {c} }}")
    return "\n".join(lines) + "\n"


def unpublish_plan(eps: Sequence[EndpointPorts], hairpins: Sequence[Hairpin] = ()) -> list[str]:
    """One command per element, so a partial leftover can be removed piece by piece."""
    cmds = []
    for ep in eps:
        _check(ep)
        anymap, _, _, _, _ = _names(ep.family)
        for r in ep.rules:
            suffix, key = _key(r)
            cmds.append(f"delete element {TABLE} {anymap}{suffix} {{ {key} }}")
        for key in _open_keys(ep):
            cmds.append(f"delete element {TABLE} {_open_set(ep.family)} {{ {key} }}")
    for h in hairpins:
        _, _, hairpin, _, _ = _names(h.family)
        cmds.append(f"delete element {TABLE} {hairpin} {{ {_hairpin_key(h)} }}")
    return cmds


def _json_value(v: object) -> str:
    """One part of a JSON element key as nft's text syntax."""
    if isinstance(v, dict) and "prefix" in v:
        p = v["prefix"]
        return f"{p['addr']}/{p['len']}"
    if isinstance(v, dict) and "range" in v:
        lo, hi = v["range"]
        return f"{lo}-{hi}"
    return str(v)


def parse_elements(listing: str, family: int, name: str) -> list[PublishedElement]:
    """Elements of one of our maps or sets from ``nft -j list map|set``: their owner (the
    comment) and the command that deletes each."""
    try:
        data = json.loads(listing or "{}")
    except ValueError:
        return []
    out = []
    for item in data.get("nftables", []):
        obj = item.get("map") or item.get("set")
        if not obj:
            continue
        for el in obj.get("elem", []) or []:
            if isinstance(el, list):  # a map element: [key, value]
                el = el[0]
            comment = ""
            if isinstance(el, dict) and "elem" in el:
                comment = el["elem"].get("comment", "")
                el = el["elem"]["val"]
            parts = el["concat"] if isinstance(el, dict) and "concat" in el else [el]
            key = " . ".join(_json_value(p) for p in parts)
            owner = comment[len(COMMENT_PREFIX):] if comment.startswith(COMMENT_PREFIX) else ""
            network = comment[len(NETWORK_COMMENT_PREFIX):] \
                if comment.startswith(NETWORK_COMMENT_PREFIX) else ""
            subnet = _subnet_of(key) if network else ""
            out.append(PublishedElement(family, owner,
                                        f"delete element {TABLE} {name} {{ {key} }}", network,
                                        subnet))
    return out


def _subnet_of(key: str) -> str:
    """A hairpin key's subnet, spelt as ``Hairpin.key_subnet`` spells it ("" if unreadable)."""
    try:
        return str(ipaddress.ip_network(key.split(" . ")[0], strict=False))
    except ValueError:
        return ""


class PortFirewall:
    """Applies the plans in the daemon's (host) namespace through libnftables."""

    def __init__(self, families: tuple[int, ...] = (4,)) -> None:
        self._nft = Nft()
        self._families = families
        self._base_done = False

    def ensure_base(self) -> None:
        """The maps and chains (again if someone deleted the table): a transaction of its
        own, as nft 1.0.6 cannot add an interval element to a set made in the same batch."""
        self._nft.run("".join(base_plan(f) for f in self._families))
        self._nft.run(chains_plan(self._families))
        self._base_done = True

    def publish(self, eps: Sequence[EndpointPorts], hairpins: Sequence[Hairpin] = ()) -> None:
        plan = publish_plan(eps, hairpins)
        if not self._base_done:
            self.ensure_base()
        try:
            self._nft.run(plan)
        except NftError:
            self.ensure_base()
            self._nft.run(plan)

    def unpublish(self, eps: Sequence[EndpointPorts], hairpins: Sequence[Hairpin] = ()) -> None:
        cmds = unpublish_plan(eps, hairpins)
        try:
            self._nft.run("\n".join(cmds) + "\n")
            return
        except NftError:
            pass
        for c in cmds:  # something was gone already: the rest one at a time (idempotent)
            try:
                self._nft.run(c + "\n")
            except NftError:
                continue

    def elements(self) -> list[PublishedElement]:
        # Reconcile asks first, at every start: the maps and chains are made then, so the
        # ruleset does not change shape with the first published port.
        if not self._base_done:
            self.ensure_base()
        jnft = Nft(json_output=True)
        out: list[PublishedElement] = []
        try:
            for family in self._families:
                anymap, ipmap, hairpin, _, _ = _names(family)
                for kind, name in (("map", anymap), ("map", ipmap), ("set", hairpin),
                                   ("set", _open_set(family))):
                    try:
                        listing = jnft.run(f"list {kind} {TABLE} {name}")
                    except NftError:
                        continue
                    out.extend(parse_elements(listing, family, name))
        finally:
            jnft.close()
        return out

    def remove_elements(self, elements: list[PublishedElement]) -> None:
        for e in elements:
            try:
                self._nft.run(e.delete_command + "\n")
            except NftError:
                continue

    def close(self) -> None:
        self._nft.close()


class FakePortRules:
    """The port firewall as a set of plan texts, for tests without root."""

    def __init__(self) -> None:
        self.published: dict[str, dict[int, EndpointPorts]] = {}  # endpoint -> family -> ports
        self.hairpins: dict[tuple[str, str], Hairpin] = {}  # (network, subnet) -> element
        self.plans: list[str] = []

    def publish(self, eps: Sequence[EndpointPorts], hairpins: Sequence[Hairpin] = ()) -> None:
        self.plans.append(publish_plan(eps, hairpins))
        for ep in eps:
            self.published.setdefault(ep.endpoint_id, {})[ep.family] = ep
        for h in hairpins:
            self.hairpins[(h.network_id, h.key_subnet)] = h

    def unpublish(self, eps: Sequence[EndpointPorts], hairpins: Sequence[Hairpin] = ()) -> None:
        self.plans.append("\n".join(unpublish_plan(eps, hairpins)) + "\n")
        for ep in eps:
            self._drop(ep.endpoint_id, ep.family)
        for h in hairpins:
            self.hairpins.pop((h.network_id, h.key_subnet), None)

    def _drop(self, endpoint_id: str, family: int) -> None:
        families = self.published.get(endpoint_id, {})
        families.pop(family, None)
        if not families:
            self.published.pop(endpoint_id, None)

    def elements(self) -> list[PublishedElement]:
        out = [PublishedElement(fam, eid[:12], f"fake ep {eid} {fam}")
               for eid, families in self.published.items() for fam in families]
        out += [PublishedElement(h.family, "", f"fake net {nid} {subnet}", nid[:12], subnet)
                for (nid, subnet), h in self.hairpins.items()]
        return out

    def remove_elements(self, elements: list[PublishedElement]) -> None:
        for e in elements:
            _, kind, key, last = e.delete_command.split()  # last: a family, or a subnet
            if kind == "ep":
                self._drop(key, int(last))
            else:
                self.hairpins.pop((key, last), None)
