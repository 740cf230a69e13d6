"""macvlan (and ipvlan) networks: containers directly on a physical segment.

Each endpoint is a macvlan on the parent link, created directly inside the sandbox (one netlink
round trip, no move). A network without a parent, or ``--internal``, gets a private veth pair as
its parent: Docker makes a dummy link there, and this kernel has no dummy links; a veth pair with
both ends up gives the macvlans carrier and keeps them off every real segment.

``-o parent=eth0.50`` makes (and later removes) the 802.1q sub-interface, where the kernel has
VLAN links. ``-o com.nsnet.macvlan.host_access=true`` adds a macvlan "shim" in the host
namespace with an address from the network and routes the network's container range through it:
the kernel never passes traffic between a parent and its own macvlans, so without the shim the
host cannot reach its macvlan containers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from nsnet.drivers.base import TAG, Sandbox, endpoint_addresses
from nsnet.drivers.iface_prefix import validate_iface_prefix
from nsnet.errors import Conflict, Invalid, NotFound, Unavailable
from nsnet.kernel.api import Kernel
from nsnet.model import Endpoint, Network

OPT_PARENT = "parent"
OPT_MODE = "macvlan_mode"
OPT_IPVLAN_MODE = "ipvlan_mode"
OPT_HOST_ACCESS = "com.nsnet.macvlan.host_access"
OPT_MTU = "com.docker.network.driver.mtu"
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
IPVLAN_MODES = ("l2", "l3", "l3s")


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("1", "true", "yes")


class MacvlanDriver:
    """Also serves ``ipvlan`` (``kind``), which differs only in the link kind and its modes."""

    has_endpoints = True

    def __init__(self, kernel: Kernel, networks: Callable[[], list[Network]],
                 kind: str = "macvlan") -> None:
        self.kernel = kernel
        self.kind = kind
        self.name = kind
        # All networks, for the parent a VLAN sub-interface may still be shared with.
        self._networks = networks

    # -- options ----------------------------------------------------------------------------

    def _mode(self, net: Network) -> str:
        if self.kind == "macvlan":
            return net.options.get(OPT_MODE) or "bridge"
        return net.options.get(OPT_IPVLAN_MODE) or "l2"

    def _private_parent(self, net: Network) -> str:
        return f"nsm-{net.id[:8]}"

    def _parent(self, net: Network) -> str:
        return net.driver_state.get("parent") or net.options.get(OPT_PARENT) or \
            self._private_parent(net)

    def validate(self, net: Network) -> None:
        known = {OPT_PARENT, OPT_MODE, OPT_IPVLAN_MODE, OPT_HOST_ACCESS, OPT_MTU,
                 "ipvlan_flag"}
        for k in net.options:
            if k not in known and not k.startswith("com.docker.network."):
                raise Invalid(f"unknown {self.kind} option {k!r}")
        validate_iface_prefix(net)
        modes = MACVLAN_MODES if self.kind == "macvlan" else IPVLAN_MODES
        if self._mode(net) not in modes:
            raise Invalid(f"invalid {self.kind} mode {self._mode(net)!r}: one of "
                          f"{', '.join(modes)}")
        parent = net.options.get(OPT_PARENT, "")
        if parent and (len(parent) > 15 or "/" in parent or " " in parent):
            raise Invalid(f"invalid parent interface name {parent!r}")
        if parent and "." in parent:
            base, _, vid = parent.rpartition(".")
            if not vid.isdigit() or not 1 <= int(vid) <= 4094 or not base:
                raise Invalid(f"invalid VLAN sub-interface {parent!r}: want <link>.<1-4094>")
        if _truthy(net.options.get(OPT_HOST_ACCESS)) and (net.internal or not parent):
            raise Invalid("host_access needs a parent link and a non-internal network")
        if self.kind == "ipvlan" and _truthy(net.options.get(OPT_HOST_ACCESS)):
            raise Invalid("host_access is for macvlan networks")

    # -- network ----------------------------------------------------------------------------

    def create_network(self, net: Network) -> None:
        links = self.kernel.links
        parent = net.options.get(OPT_PARENT, "")
        made: list[str] = []
        try:
            if not parent:
                name = self._private_parent(net)
                if not links.exists(name):
                    links.add_veth_pair(name, name + "p", TAG + net.id)
                    made.append(name)
                net.driver_state["parent"] = name
                net.driver_state["private_parent"] = "1"
            elif "." in parent and not links.exists(parent):
                base, _, vid = parent.rpartition(".")
                bidx = links.index(base)
                if bidx is None:
                    raise NotFound(f"invalid parent {parent}: link {base} not found")
                links.add_vlan(parent, bidx, int(vid))
                made.append(parent)
                net.driver_state["parent"] = parent
                net.driver_state["owns_parent"] = "1"
            else:
                if not links.exists(parent):
                    raise NotFound(f"invalid parent interface {parent}: link not found")
                net.driver_state["parent"] = parent
                links.set_up(parent)
            self._probe_kind(net)
            if _truthy(net.options.get(OPT_HOST_ACCESS)):
                self._reserve_shim_address(net)
                self._add_shim(net, made)
        except BaseException:
            # The engine pushes no undo for a create that raised: what this call made goes.
            for name in reversed(made):
                links.delete(name)
            raise

    def _probe_kind(self, net: Network) -> None:
        """Fail at create, not at the first run, when the kernel lacks the link kind."""
        probe = f"nsp-{net.id[:8]}"
        pidx = self.kernel.links.index(self._parent(net))
        if pidx is None:
            raise NotFound(f"invalid parent interface {self._parent(net)}")
        self.kernel.links.add_macvlan_into(probe, pidx, self._mode(net), "02:00:00:00:00:01",
                                         None, None, kind=self.kind)
        self.kernel.links.delete(probe)

    def _shim_name(self, net: Network) -> str:
        return f"nsh-{net.id[:8]}"

    def _reserve_shim_address(self, net: Network) -> None:
        """The shim's address: the subnet's highest free host address, kept out of IPAM as an
        auxiliary address so no container is ever given it (and inspect shows it)."""
        if net.driver_state.get("shim_address"):
            return
        for p in net.pools:
            sub = ipaddress.ip_network(p.subnet)
            if sub.version != 4:
                continue
            taken = {p.gateway, *p.aux_addresses.values()}
            last = int(sub.broadcast_address) - 1
            for i in range(last, int(sub.network_address), -1):
                cand = str(ipaddress.IPv4Address(i))
                if cand not in taken:
                    p.aux_addresses["nsnet-host-shim"] = cand
                    net.driver_state["shim_address"] = cand
                    return
        raise Invalid("host_access needs an IPv4 subnet with a free address for the host")

    def _add_shim(self, net: Network, made: list[str]) -> None:
        """The host-side macvlan; its name joins ``made`` when this call creates it."""
        shim = self._shim_name(net)
        links = self.kernel.links
        if not links.exists(shim):
            pidx = links.index(self._parent(net))
            assert pidx is not None
            links.add_macvlan_into(shim, pidx, "bridge", _shim_mac(net.id), None, None)
            made.append(shim)
        idx = links.index(shim)
        assert idx is not None
        addr = net.driver_state.get("shim_address")
        if not addr:
            raise Unavailable("host access shim has no address")
        links.ensure_address(idx, f"{addr}/32")
        links.set_up(shim)
        for p in net.pools:
            sub = ipaddress.ip_network(p.subnet)
            if sub.version != 4:
                continue
            # Containers are reached through the shim; the rest of the segment stays on the
            # parent. Never a replace: the host's own LAN route must survive (a more specific
            # ip-range route wins over it; an equal one is refused below).
            try:
                links.add_route(p.ip_range or str(sub), shim)
            except Conflict:
                raise Invalid(f"the host already routes {p.ip_range or sub}: give the network "
                              "an --ip-range for its containers to use host_access") from None

    def owned_links(self, net: Network) -> set[str]:
        out = {self._shim_name(net)}
        if net.driver_state.get("private_parent") == "1":
            out |= {self._private_parent(net), self._private_parent(net) + "p"}
        elif net.driver_state.get("owns_parent") == "1":
            out.add(self._parent(net))
        return out

    def delete_network(self, net: Network) -> None:
        links = self.kernel.links
        links.delete(self._shim_name(net))
        if net.driver_state.get("private_parent") == "1":
            links.delete(self._private_parent(net))
        elif net.driver_state.get("owns_parent") == "1":
            parent = self._parent(net)
            shared = [n for n in self._networks() if n.id != net.id and
                      n.driver in ("macvlan", "ipvlan") and
                      n.driver_state.get("parent") == parent]
            if not shared:
                links.delete(parent)

    # -- endpoints --------------------------------------------------------------------------

    def join(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        assert sb.ns_path is not None
        self.kernel.wait_for_name(sb.ns_path, ep.ifname)
        pidx = self.kernel.links.index(self._parent(net))
        if pidx is None:
            raise NotFound(f"parent interface {self._parent(net)} of network {net.name} is gone")
        mtu = int(net.options[OPT_MTU]) if net.options.get(OPT_MTU, "0") != "0" else None
        with self.kernel.netns_fd(sb.ns_path) as fd:
            self.kernel.links.add_macvlan_into(ep.ifname, pidx, self._mode(net), ep.mac, fd, mtu,
                                             kind=self.kind)
        sock = None
        try:
            addrs = endpoint_addresses(ep)
            sock = self.kernel.prepare_interface(sb.ns_path, ep.ifname, ipv6=ep.ipv6 is not None)
            with self.kernel.sandbox_links(sb.ns_path) as links:
                links.configure_endpoint(ep.ifname, addrs, None, None)
        except BaseException:
            if sock is not None:
                sock.close()
            with self.kernel.sandbox_links(sb.ns_path) as links:
                links.delete(ep.ifname)
            raise
        # The segment's router and peers may hold this address with an older MAC (an
        # ipvlan's MAC is its parent's: the announcer reads it from the link). ipvlan L3
        # links have no neighbours to tell.
        if self.kind == "ipvlan" and self._mode(net) != "l2":
            sock.close()
        else:
            self.kernel.announcer.announce(sock, ep.ifname, addrs)

    def leave(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        if not sb.ns_path:
            return
        with self.kernel.sandbox_links(sb.ns_path) as links:
            links.delete(ep.ifname)


def _shim_mac(net_id: str) -> str:
    b = bytes.fromhex(net_id[:12])
    return ":".join(f"{x:02x}" for x in bytes([(b[0] & 0xFE) | 0x02]) + b[1:6])
