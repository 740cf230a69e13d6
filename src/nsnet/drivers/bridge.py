"""The bridge driver: a Linux bridge per network, a veth per endpoint, nftables for the rest."""

from __future__ import annotations

import ipaddress

from nsnet.drivers.base import TAG, Sandbox, endpoint_addresses
from nsnet.errors import Conflict, Forbidden, Invalid, NsnetError, Unavailable
from nsnet.kernel.api import Kernel
from nsnet.kernel.firewall import NetworkFirewall
from nsnet.kernel.links import random_veth_name
from nsnet.model import Endpoint, Network

OPT_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_DEFAULT = "com.docker.network.bridge.default_bridge"
KNOWN_BOOL = ("true", "false", "1", "0")


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


class BridgeDriver:
    name = "bridge"
    has_endpoints = True

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._forwarding_on = False
        self._reaping: set[str] = set()
        self._index_cache: dict[str, int] = {}

    def validate(self, net: Network) -> None:
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
        if fresh:
            net.driver_state["owns_bridge"] = "1" if created else "0"
            if not created:
                self.kernel.links.clear_alias(idx)
        self._index_cache[name] = idx
        net.driver_state["bridge"] = name
        try:
            for p in net.pools:
                if p.gateway:
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
