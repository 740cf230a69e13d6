"""The bridge driver: a Linux bridge per network, a veth per endpoint, nftables for the rest."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from nsnet.drivers.base import TAG, PortMapping, Sandbox, endpoint_addresses
from nsnet.drivers.iface_prefix import OPT_IFACE_PREFIX, validate_iface_prefix
from nsnet.errors import Conflict, Forbidden, Invalid, NsnetError, Unavailable
from nsnet.kernel.api import Kernel
from nsnet.kernel.firewall import NetworkFirewall
from nsnet.kernel.links import random_veth_name
from nsnet.kernel.port_firewall import EndpointPorts, Hairpin, PortRule, PortRules
from nsnet.model import Endpoint, Network

log = logging.getLogger(__name__)

OPT_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_DEFAULT = "com.docker.network.bridge.default_bridge"
OPT_HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"
OPT_GW_MODE4 = "com.docker.network.bridge.gateway_mode_ipv4"
OPT_GW_MODE6 = "com.docker.network.bridge.gateway_mode_ipv6"
KNOWN_BOOL = ("true", "false", "1", "0")
GATEWAY_MODES = ("nat", "nat-unprotected", "routed", "isolated")
# Every option a bridge network takes; anything else is refused, not ignored (rule 7). The
# enable_ipv4/6 pair is the API's (api/networks.py), kept in Options as Docker keeps it.
KNOWN_OPTIONS = frozenset({
    OPT_NAME, OPT_ICC, OPT_MASQ, OPT_MTU, OPT_DEFAULT, OPT_HOST_BINDING, OPT_GW_MODE4,
    OPT_GW_MODE6, OPT_IFACE_PREFIX, "com.docker.network.enable_ipv4",
    "com.docker.network.enable_ipv6",
})


def _bool_opt(net: Network, key: str, default: bool) -> bool:
    v = net.options.get(key)
    if v is None or v == "":
        return default
    return v.lower() in ("true", "1")


def bridge_name(net: Network) -> str:
    if net.driver_state.get("bridge"):
        return net.driver_state["bridge"]
    if net.options.get(OPT_NAME):
        return net.options[OPT_NAME]
    return "br-" + net.short_id


def mtu_of(net: Network) -> int | None:
    v = net.options.get(OPT_MTU)
    return int(v) if v and v != "0" else None


def host_binding_ipv4(net: Network) -> str:
    """The host address a ``-p`` without one publishes on (``0.0.0.0`` unless the network's
    ``host_binding_ipv4`` says otherwise; despite its name, an IPv6 address is allowed)."""
    return net.options.get(OPT_HOST_BINDING) or "0.0.0.0"


def gateway_mode(net: Network, family: int) -> str:
    """For one address family, as moby 28: ``nat`` (masquerade out; in only through published
    ports on the host's addresses), ``nat-unprotected`` (the same, and every port open to
    direct routing from outside), ``routed`` (no masquerade; the containers' own addresses
    reachable by routing: ICMP and their published ports), ``isolated`` (internal networks
    only: the bridge gets no address, so the host is not on the network either)."""
    return net.options.get(OPT_GW_MODE4 if family == 4 else OPT_GW_MODE6) or "nat"


def _check_options(net: Network) -> None:
    for key in sorted(net.options):
        if key not in KNOWN_OPTIONS:
            raise Invalid(f"unknown bridge network option {key!r}: nsnet takes "
                          f"{', '.join(sorted(KNOWN_OPTIONS))}")
    v = net.options.get(OPT_HOST_BINDING)
    if v:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise Invalid(f"invalid value {v!r} for option {OPT_HOST_BINDING}: not an IP "
                          "address") from None
    for key in (OPT_GW_MODE4, OPT_GW_MODE6):
        v = net.options.get(key)
        if v and v not in GATEWAY_MODES:
            raise Invalid(f"invalid value {v!r} for option {key}: must be one of "
                          f"{', '.join(GATEWAY_MODES)}")
        if v == "isolated" and not net.internal:
            raise Invalid(f"option {key}=isolated needs an internal network (--internal): "
                          "without a gateway address its containers could not get out")
    validate_iface_prefix(net)


class BridgeDriver:
    name = "bridge"
    has_endpoints = True

    def __init__(self, kernel: Kernel, ports: PortRules | None = None) -> None:
        self.kernel = kernel
        # Published ports (issue 12): the kernel's port firewall (a fake in unit tests, so
        # none writes the machine's own firewall), unless a test hands in its own.
        self._ports = ports
        self._published: dict[str, tuple[str, tuple[PortMapping, ...]]] = {}
        self._localnet: set[str] = set()
        # (network id, subnet) -> endpoints publishing in it: the subnet's hairpin element
        # comes with the first and goes with the last. By subnet, not family: a network may
        # have two subnets of one family, each with its own element.
        # The element itself is kept beside its publishers, for reconcile to put it back.
        self._hairpins: dict[tuple[str, str], tuple[Hairpin, set[str]]] = {}
        self._forwarding_on = False
        self._reaping: set[str] = set()
        self._index_cache: dict[str, int] = {}

    def validate(self, net: Network) -> None:
        _check_options(net)
        name = bridge_name(net)
        if not 1 <= len(name) <= 15 or any(c in name for c in "/ :\t\n"):
            raise Invalid(f"invalid bridge name {name!r}: 1 to 15 characters, no '/', ':' or "
                          "spaces")
        for key in (OPT_ICC, OPT_MASQ):
            v = net.options.get(key)
            if v is not None and v.lower() not in KNOWN_BOOL:
                raise Invalid(f"invalid value {v!r} for option {key}: must be true or false")
        v = net.options.get(OPT_MTU)
        if v is not None and v != "":
            try:
                mtu = int(v)
            except ValueError:
                raise Invalid(f"invalid MTU {v!r}: not a number") from None
            if mtu != 0 and not 68 <= mtu <= 65535:
                raise Invalid(f"invalid MTU {mtu}: must be between 68 and 65535")

    def firewall_of(self, net: Network) -> NetworkFirewall:
        return NetworkFirewall(
            short_id=net.short_id,
            name=net.name,
            bridge=bridge_name(net),
            subnets=tuple(p.subnet for p in net.pools),
            internal=net.internal,
            icc=_bool_opt(net, OPT_ICC, True),
            masquerade=_bool_opt(net, OPT_MASQ, True),
            routed4=gateway_mode(net, 4) == "routed",
            routed6=gateway_mode(net, 6) == "routed",
            unprotected4=gateway_mode(net, 4) == "nat-unprotected",
            unprotected6=gateway_mode(net, 6) == "nat-unprotected",
        )

    def _enable_forwarding(self) -> None:
        if not self._forwarding_on:
            self.kernel.sysctl_set("net.ipv4.ip_forward", "1")
            self._forwarding_on = True

    def validate_unique(self, net: Network, others: list[Network]) -> None:
        """moby refuses two networks on one bridge; so do we (403)."""
        name = bridge_name(net)
        for o in others:
            if o.id != net.id and o.driver == "bridge" and bridge_name(o) == name:
                raise Forbidden(f"networks have same bridge name: {name} is used by network "
                                f"{o.name}")
        info = self.kernel.links.link_info(name)
        if info is not None and info.get("kind") != "bridge":
            raise Forbidden(f"cannot use {name} as a bridge: it is an existing link of kind "
                            f"{info.get('kind') or 'unknown'}")

    def create_network(self, net: Network) -> None:
        """Make the network's objects; on a re-create (reconcile), only what is missing.

        A failure removes only what this call made: a live network whose re-create hits an
        error keeps its firewall and bridge.
        """
        name = bridge_name(net)
        fresh = "bridge" not in net.driver_state
        if name in self._reaping:
            # A network of this bridge name was just removed: let its delete finish first.
            self.kernel.reaper.flush()
            self._reaping.discard(name)
        owned = net.driver_state.get("owns_bridge", "1") == "1"
        # Only a bridge we own carries our tag: reconcile deletes tagged links no network
        # owns, and must never delete the user's (or Docker's) bridge.
        idx, created = self.kernel.links.ensure_bridge(name, mtu_of(net),
                                                     TAG + net.id if owned else None)
        if created:
            self._localnet.discard(name)  # a new link: its sysctls are the defaults again
        if fresh:
            net.driver_state["owns_bridge"] = "1" if created else "0"
            if not created:
                self.kernel.links.clear_alias(idx)
        self._index_cache[name] = idx
        net.driver_state["bridge"] = name
        try:
            if net.driver_state["owns_bridge"] == "1" and gateway_mode(net, 6) == "isolated":
                # No address at all, not even the fe80:: one every IPv6 interface gets: with
                # it the host reached every container over link-local IPv6. Bridging goes on
                # (the bridge's own IP stack is what goes away).
                self.kernel.sysctl_set(f"net.ipv6.conf.{name}.disable_ipv6", "1")
            for p in net.pools:
                family = ipaddress.ip_network(p.subnet).version
                if p.gateway and gateway_mode(net, family) != "isolated":
                    plen = ipaddress.ip_network(p.subnet).prefixlen
                    self.kernel.links.ensure_address(idx, f"{p.gateway}/{plen}")
            if any(ipaddress.ip_network(p.subnet).version == 6 for p in net.pools):
                self.kernel.sysctl_set("net.ipv6.conf.all.forwarding", "1")
            self._enable_forwarding()
            self.kernel.firewall.apply_network(self.firewall_of(net))
        except BaseException:
            if fresh:
                self.kernel.firewall.remove_network(net.short_id, name,
                                                  tuple(p.subnet for p in net.pools))
                if created:
                    self.kernel.links.delete(name)
            raise

    def delete_network(self, net: Network) -> None:
        name = bridge_name(net)
        cached = self._index_cache.pop(name, None)
        self._localnet.discard(name)
        self.kernel.firewall.remove_network(net.short_id, name, tuple(p.subnet for p in net.pools))
        if net.driver_state.get("owns_bridge", "1") != "1":
            # The user's bridge stays; our gateway addresses on it go.
            idx = self.kernel.links.index(name)
            if idx is not None:
                for p in net.pools:
                    if p.gateway:
                        plen = ipaddress.ip_network(p.subnet).prefixlen
                        self.kernel.links.remove_address(idx, f"{p.gateway}/{plen}")
            return
        # A bridge delete waits ~40 ms for RCU: it runs off the request path. Nothing is
        # attached to it any more and its firewall chains are gone already. Its IPv4 addresses
        # go first (one netlink call each): the kernel drops their connected routes at once
        # and says so (RTM_DELADDR, which the route watcher hears), so the subnet is free for
        # the next network even while deletes queue up behind the reaper, and no second link
        # holds a route to it meanwhile.
        idx = cached if cached is not None else self.kernel.links.index(name)
        if idx is not None:
            for p in net.pools:
                if p.gateway and ipaddress.ip_network(p.subnet).version == 4:
                    plen = ipaddress.ip_network(p.subnet).prefixlen
                    self.kernel.links.remove_address(idx, f"{p.gateway}/{plen}")
        self.kernel.reaper.delete_later(name)
        self._reaping.add(name)

    def _bridge_index(self, net: Network) -> int:
        """The bridge's index, or ``Unavailable`` when it is gone: never a rebuild.

        Rebuilding here hid damage and put a whole network set-up (bridge, addresses,
        firewall) inside a ``run`` or ``connect``. ``create_network``, called by reconcile at
        start and by ``nsnet system reconcile``, is the one place that makes it again.
        """
        name = bridge_name(net)
        idx = self._index_cache.get(name)
        if idx is None:
            idx = self.kernel.links.index(name)
            if idx is None:
                raise Unavailable(f"network {net.name}: its bridge {name} is missing; run "
                                  "`nsnet system reconcile` to rebuild it")
            self._index_cache[name] = idx
        return idx

    def join(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        assert sb.ns_path is not None
        isolate = not _bool_opt(net, OPT_ICC, True)
        # A link of this name may have just been disconnected and still be in deletion.
        self.kernel.wait_for_name(sb.ns_path, ep.ifname)
        master = self._bridge_index(net)
        for attempt in range(3):
            ep.host_ifname = random_veth_name()
            try:
                with self.kernel.netns_fd(sb.ns_path) as fd:
                    idx = self.kernel.links.add_veth_into(ep.host_ifname, ep.ifname, ep.mac, fd,
                                                        master, mtu_of(net),
                                                        want_index=isolate)
                break
            except Conflict:
                if attempt == 2:
                    raise
                continue  # a random name taken by someone else: draw another
            except NsnetError:
                if attempt == 2:
                    raise
                # A stale cached index (bridge re-made behind our back): look it up again.
                self._index_cache.pop(bridge_name(net), None)
                master = self._bridge_index(net)
        sock = None
        try:
            if isolate and idx is not None:
                self.kernel.links.set_isolated(idx, True)
            addrs = endpoint_addresses(ep)
            sock = self.kernel.prepare_interface(sb.ns_path, ep.ifname, ipv6=ep.ipv6 is not None)
            with self.kernel.sandbox_links(sb.ns_path) as links:
                links.configure_endpoint(ep.ifname, addrs, None, None)
        except BaseException:
            if sock is not None:
                sock.close()
            if ep.host_ifname:
                self.kernel.links.delete(ep.host_ifname)
            raise
        # The address may have had another MAC a moment ago (restart, re-create): tell peers.
        self.kernel.announcer.announce(sock, ep.ifname, addrs)

    def stale_ports(self, net: Network, owned: set[str]) -> list[str]:
        """veths on this network's bridge that no endpoint owns (left by a crash).

        Only on a bridge nsnet made: a user's bridge may carry ports that are not ours."""
        if net.driver_state.get("owns_bridge", "1") != "1":
            return []
        idx = self.kernel.links.index(bridge_name(net))
        if idx is None:
            return []
        return [p for p in self.kernel.links.ports(idx) if p not in owned]

    def restore(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        """Reconcile one live endpoint: back on its (maybe re-made) bridge, or re-made."""
        self._index_cache.pop(bridge_name(net), None)
        master = self._bridge_index(net)
        if ep.host_ifname and self.kernel.links.enslave(ep.host_ifname, master):
            if not _bool_opt(net, OPT_ICC, True):
                idx = self.kernel.links.index(ep.host_ifname)
                if idx is not None:
                    self.kernel.links.set_isolated(idx, True)
            return
        if sb.ns_path is None:
            return
        # The pair is gone (someone deleted it): make it again with the same identity.
        with self.kernel.sandbox_links(sb.ns_path) as links:
            if links.exists(ep.ifname):
                links.delete(ep.ifname)
        self.join(net, ep, sb)
        if ep.default_route:
            with self.kernel.sandbox_links(sb.ns_path) as links:
                if ep.gateway:
                    links.set_default_route(ep.ifname, ep.gateway, 4)
                if ep.ipv6_gateway:
                    links.set_default_route(ep.ifname, ep.ipv6_gateway, 6)

    def leave(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        if ep.host_ifname:
            # Both ends down at once: no more traffic, and the container's kernel drops the
            # routes (and local address) of the old link, so a quick reconnect that gets the
            # same address on a new link is not shadowed by the dying one. The ~15 ms delete
            # happens off the request path.
            self.kernel.links.set_down(ep.host_ifname)
            if sb.ns_path:
                try:
                    with self.kernel.sandbox_links(sb.ns_path) as links:
                        links.set_down(ep.ifname)
                except (OSError, NsnetError):
                    pass  # the sandbox is going away too
            self.kernel.delete_peer_later(ep.host_ifname, sb.ns_path, ep.ifname)

    # -- published ports (PublishesPorts; issue 12) --------------------------------------

    def _port_rules(self) -> PortRules:
        return self._ports if self._ports is not None else self.kernel.ports

    @staticmethod
    def _endpoint_ports(net: Network, ep: Endpoint,
                        ports: Sequence[PortMapping]) -> list[tuple[EndpointPorts, Hairpin]]:
        """One firewall unit per address family the ports use (a host address's family;
        "" is IPv4's every address, ``::`` IPv6's), with the network's hairpin element in
        that family."""
        out: list[tuple[EndpointPorts, Hairpin]] = []
        for family, address, plen in ((4, ep.ipv4, ep.ipv4_prefixlen),
                                      (6, ep.ipv6, ep.ipv6_prefixlen)):
            mine = [m for m in ports if _family(m.host_ip) == family]
            if not mine:
                continue
            if not address:
                raise Invalid(f"network {net.name}: the endpoint has no IPv{family} address "
                              "to publish ports to")
            subnet = f"{address}/{plen or (32 if family == 4 else 128)}"
            rules = tuple(PortRule(m.protocol, m.host_ip, m.host_port, address,
                                   m.container_port) for m in mine)
            direct = gateway_mode(net, family) == "routed"
            out.append((EndpointPorts(ep.id, address, rules, direct), Hairpin(net.id, subnet)))
        return out

    def publish(self, net: Network, ep: Endpoint, ports: Sequence[PortMapping]) -> None:
        """One firewall transaction for all of ``ports``, both families; the host ports
        themselves are the engine's to reserve (engine/published_ports.py). Traffic from the
        host to 127.0.0.1 needs ``route_localnet`` on this bridge, set once, and only when a
        port listens on every IPv4 address or on a loopback one (IPv6 has no such switch:
        ::1 is not published)."""
        if net.internal:
            raise Forbidden(f"cannot publish ports on internal network {net.name}")
        units = self._endpoint_ports(net, ep, ports)
        name = bridge_name(net)
        if name not in self._localnet and any(
                not m.host_ip or (_family(m.host_ip) == 4
                                  and ipaddress.ip_address(m.host_ip).is_loopback)
                for m in ports):
            self.kernel.sysctl_set(f"net.ipv4.conf.{name}.route_localnet", "1")
            self._localnet.add(name)
        # Its own published port from inside (the DNATed packet leaves by the port it came
        # in). First: the engine pushes no undo for a publish that raised, so nothing may
        # fail after the transaction below.
        idx = self.kernel.links.index(ep.host_ifname) if ep.host_ifname else None
        if idx is not None:
            self.kernel.links.set_hairpin(idx, True)
        first = [h for _, h in units if (net.id, h.key_subnet) not in self._hairpins]
        self._port_rules().publish([spec for spec, _ in units], first)
        for _, h in units:
            self._hairpins.setdefault((net.id, h.key_subnet), (h, set()))[1].add(ep.id)
        self._published[ep.id] = (net.id, tuple(ports))

    def unpublish(self, net: Network, ep: Endpoint, ports: Sequence[PortMapping]) -> None:
        if not ports:
            return
        # An address the endpoint lacks was never published: nothing of it to remove.
        usable = [m for m in ports if (ep.ipv4 if _family(m.host_ip) == 4 else ep.ipv6)]
        units = self._endpoint_ports(net, ep, usable)
        last = []
        for _, h in units:
            _, holders = self._hairpins.get((net.id, h.key_subnet), (h, set()))
            holders.discard(ep.id)
            if not holders:
                self._hairpins.pop((net.id, h.key_subnet), None)
                last.append(h)
        self._port_rules().unpublish([spec for spec, _ in units], last)
        self._published.pop(ep.id, None)

    def published(self, net: Network) -> dict[str, list[PortMapping]]:
        """Endpoints of ``net`` with elements in the kernel, with the ports this driver
        published for them (the elements name only the endpoint)."""
        present = {e.endpoint_id for e in self._port_rules().elements()}
        return {eid: list(ports) for eid, (nid, ports) in self._published.items()
                if nid == net.id and eid[:12] in present}

    def remove_unowned_ports(self, owned: set[str]) -> list[str]:
        """Reconcile: elements whose endpoint (by its id12 in the comment) is not live, and
        hairpin elements of subnets where no live endpoint publishes; and the hairpin
        elements the count holds but the kernel lost (a flushed ruleset: the publishes
        before this call put the ports back, but add a subnet's element only for its first
        publisher). Returns the endpoints' whose elements went."""
        keep = {eid[:12] for eid in owned}
        for eid in [eid for eid in self._published if eid[:12] not in keep]:
            self._published.pop(eid, None)
        for key, (_, holders) in list(self._hairpins.items()):
            holders.intersection_update(owned)
            if not holders:
                del self._hairpins[key]
        live = {(nid[:12], subnet) for nid, subnet in self._hairpins}
        rules = self._port_rules()
        elements = rules.elements()
        stale = [e for e in elements
                 if ((e.network_id, e.subnet) not in live if e.network_id
                     else e.endpoint_id not in keep)]
        rules.remove_elements(stale)
        present = {(e.network_id, e.subnet) for e in elements if e.network_id} - \
            {(e.network_id, e.subnet) for e in stale}
        lost = [h for (nid, subnet), (h, _) in self._hairpins.items()
                if (nid[:12], subnet) not in present]
        if lost:
            try:
                rules.publish([], lost)
            except (OSError, NsnetError):
                # The rest of reconcile goes on; the next one tries again.
                log.exception("restoring hairpin elements %s",
                              ", ".join(h.key_subnet for h in lost))
        return sorted({e.endpoint_id for e in stale if not e.network_id})


def _family(host_ip: str) -> int:
    """The address family of a published port's host address ("" is IPv4's every one)."""
    return 4 if not host_ip else ipaddress.ip_address(host_ip).version
