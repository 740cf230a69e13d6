"""The overlay driver: one network across hosts over VXLAN (docs/architecture.md, rule 7).

On each host a network has its own namespace with the bridge ``ovbr0`` and ``vx-<vni>``
(``Kernel.overlays``, kernel/vxlan.py); a local container gets a veth from its sandbox into
that bridge, and every remote endpoint is a pair of permanent entries on the VXLAN device,
programmed by the engine's peer service (engine/peers.py) from the store's ``endpoints/`` watch
through ``add_peer``/``remove_peer``/``sync_peers``. The VNI comes from the cluster (global
IPAM) in Docker's option ``com.docker.network.driver.overlay.vxlanid_list``.

Decisions, and why:

- **The bridge carries no address.** Docker puts the subnet's gateway on its overlay bridge,
  but no container routes through it: an overlay container's default route goes through the
  local gateway-bridge network (Docker's ``docker_gwbridge``), never the overlay. The address
  would only give every container an IP stack of ours to talk to (the same address on every
  host, answering ARP and pings for nothing), so the segment stays pure L2; the gateway
  address is still reserved by IPAM and shown by ``network inspect``. ``provides_gateway``
  says so to the engine: an overlay endpoint never carries the default route.
- **IPv4 only.** Remote endpoints are reached by ARP answered from permanent neighbour entries
  and nothing is flooded, so IPv6 neighbour discovery (multicast) would silently find no one;
  an IPv6 overlay is refused at create rather than made half-working.
- **Unknown options are refused**, never dropped (encryption, Docker's other overlay options).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

from nsnet.drivers.base import Peer, Sandbox, endpoint_addresses
from nsnet.errors import Conflict, Invalid, NotFound, NsnetError, Unavailable
from nsnet.kernel.api import HostLinks, Kernel, OverlayPeer
from nsnet.kernel.links import random_veth_name
from nsnet.model import Endpoint, Network

log = logging.getLogger("nsnet.drivers.overlay")

OPT_MTU = "com.docker.network.driver.mtu"
OPT_VNI = "com.docker.network.driver.overlay.vxlanid_list"
OVERLAY_BRIDGE = "ovbr0"
KNOWN_OPTIONS = (OPT_MTU, OPT_VNI)
MAX_VNI = (1 << 24) - 1


def vni_of(net: Network) -> int:
    """The network's VNI; ``Invalid`` for a network the cluster has not given one."""
    raw = net.options.get(OPT_VNI, "")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_VNI:
        raise Invalid(f"overlay network {net.name} has no valid VXLAN id ({OPT_VNI}={raw!r})")
    return int(raw)


def mtu_of(net: Network) -> int | None:
    raw = net.options.get(OPT_MTU, "")
    return int(raw) if raw.isdigit() and raw != "0" else None


class OverlayDriver:
    """``vtep`` is this host's underlay address (``--cluster-advertise``). ``on_site`` is
    called with a network each time this host's data plane of it is made or re-made, so the
    peer service can program the remote endpoints it already knows into it."""

    name = "overlay"
    has_endpoints = True
    provides_gateway = False

    def __init__(self, kernel: Kernel, vtep: str,
                 on_site: Callable[[Network], None] | None = None) -> None:
        self.kernel = kernel
        self.vtep = vtep
        self.on_site = on_site

    def validate(self, net: Network) -> None:
        for key in net.options:
            if key not in KNOWN_OPTIONS:
                raise Invalid(f"the overlay driver does not support option {key!r}")
        raw = net.options.get(OPT_MTU)
        if raw is not None and raw != "":
            if not raw.isdigit():
                raise Invalid(f"invalid MTU {raw!r}: not a number")
            if raw != "0" and not 68 <= int(raw) <= 65535:
                raise Invalid(f"invalid MTU {raw}: must be between 68 and 65535")
        if OPT_VNI in net.options:
            vni_of(net)
        if net.enable_ipv6:
            raise Invalid("overlay networks are IPv4 only in nsnet: remote endpoints are "
                          "found by ARP from the cluster's records, IPv6 neighbour discovery "
                          "would reach no one")
        if not net.enable_ipv4:
            raise Invalid("an overlay network needs IPv4")

    # -- this host's data plane -------------------------------------------------------------

    def has_site(self, net: Network) -> bool:
        """Whether this host has the network's data plane (its overlay namespace)."""
        return self.kernel.overlays.exists(vni_of(net))

    def create_network(self, net: Network) -> None:
        """Make this host's data plane of ``net`` if it is missing (idempotent: reconcile and
        the global-network mirror call it on every host), then let the peer service fill it."""
        vni = vni_of(net)
        if not self.kernel.overlays.exists(vni):
            self.kernel.overlays.create(vni, self.vtep, mtu_of(net))
            log.info("overlay %s: VNI %d made on this host", net.name, vni)
        net.driver_state["vni"] = str(vni)
        self._site_made(net)

    def _site_made(self, net: Network) -> None:
        if self.on_site is None:
            return
        try:
            self.on_site(net)
        except Exception:  # the peer service resyncs on its own; a join must not fail here
            log.exception("programming the peers of overlay %s", net.name)

    def delete_network(self, net: Network) -> None:
        """This host's namespace with everything in it; idempotent."""
        try:
            vni = vni_of(net)
        except Invalid:
            return
        self.kernel.overlays.remove(vni)

    # -- endpoints --------------------------------------------------------------------------

    def _site_links(self, net: Network) -> tuple[int, HostLinks, int]:
        """(vni, links in the overlay namespace, bridge index).

        This host's data plane is made here on first use when absent: a global network may
        have been created on another host while this one was cut off from the store. That is
        the host's first use of the network, not a rebuild of damage (``Driver.join``); a
        bridge missing from an existing namespace is damage and is ``Unavailable``.
        """
        vni = vni_of(net)
        if not self.kernel.overlays.exists(vni):
            self.create_network(net)
        links = self.kernel.overlays.links(vni)
        master = links.index(OVERLAY_BRIDGE)
        if master is None:
            raise Unavailable(f"network {net.name}: {OVERLAY_BRIDGE} is missing from its "
                              "overlay namespace; run `nsnet system reconcile`")
        return vni, links, master

    def join(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        """A veth from the sandbox into ``ovbr0`` at the overlay's MTU; addresses, no route."""
        if sb.ns_path is None:
            raise Invalid("a container in the host's namespace cannot join an overlay network")
        vni, links, master = self._site_links(net)
        mtu = self.kernel.overlays.mtu(vni)
        self.kernel.wait_for_name(sb.ns_path, ep.ifname)
        for attempt in range(3):
            host_ifname = random_veth_name()
            try:
                with self.kernel.netns_fd(sb.ns_path) as fd:
                    links.add_veth_into(host_ifname, ep.ifname, ep.mac, fd, master, mtu)
                break
            except Conflict:
                if attempt == 2:
                    raise  # a random name taken by someone else: draw another
        ep.host_ifname = host_ifname
        sock = None
        try:
            addrs = endpoint_addresses(ep)
            sock = self.kernel.prepare_interface(sb.ns_path, ep.ifname, ipv6=False)
            with self.kernel.sandbox_links(sb.ns_path) as sandbox:
                sandbox.configure_endpoint(ep.ifname, addrs, None, None)
        except BaseException:
            if sock is not None:
                sock.close()
            with contextlib.suppress(NsnetError):
                links.delete(host_ifname)
            raise
        # Local neighbours on this host's bridge learn the new MAC; remote hosts learn it from
        # the endpoint's record (their entries are permanent, announcements do not move them).
        self.kernel.announcer.announce(sock, ep.ifname, addrs)

    def leave(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        """Both ends down at once, then the overlay side deleted (its ~15 ms RCU wait runs
        here: the host's reaper works in the daemon's namespace, not the overlay's)."""
        if not ep.host_ifname:
            return
        try:
            links = self.kernel.overlays.links(vni_of(net))
        except (NotFound, Invalid):
            return  # the namespace went and took the veth with it
        links.set_down(ep.host_ifname)
        if sb.ns_path:
            try:
                with self.kernel.sandbox_links(sb.ns_path) as sandbox:
                    sandbox.set_down(ep.ifname)
            except (OSError, NsnetError):
                pass  # the sandbox is going away too
        links.delete(ep.host_ifname)

    def restore(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        """After a restart: the veth is still in the bridge unless someone deleted it; then it
        is made again with the same identity."""
        _vni, links, master = self._site_links(net)
        if ep.host_ifname and links.enslave(ep.host_ifname, master):
            return
        if sb.ns_path is None:
            return
        with self.kernel.sandbox_links(sb.ns_path) as sandbox:
            if sandbox.exists(ep.ifname):
                sandbox.delete(ep.ifname)
        self.join(net, ep, sb)

    # -- peers (ProgramsPeers) --------------------------------------------------------------

    def add_peer(self, net: Network, peer: Peer) -> None:
        """No-op while this host has no data plane of ``net``: ``on_site`` fills it later."""
        vni = vni_of(net)
        if self.kernel.overlays.exists(vni):
            self.kernel.overlays.add_peer(vni, OverlayPeer(peer.mac, peer.address, peer.vtep))

    def remove_peer(self, net: Network, peer: Peer) -> None:
        self.kernel.overlays.remove_peer(vni_of(net), peer.mac, peer.address)

    def peers(self, net: Network) -> list[Peer]:
        """Entries read back from the kernel (no endpoint ids there: ``endpoint_id`` is "")."""
        vni = vni_of(net)
        if not self.kernel.overlays.exists(vni):
            return []
        held = self.kernel.overlays.peers(vni)
        return [Peer("", p.ip, p.mac, p.vtep) for p in sorted(held)]

    def sync_peers(self, net: Network, peers: Iterable[Peer]) -> tuple[int, int]:
        """Make the data plane hold exactly ``peers``; (added, removed). (0, 0) without one."""
        vni = vni_of(net)
        if not self.kernel.overlays.exists(vni):
            return 0, 0
        return self.kernel.overlays.sync_peers(
            vni, [OverlayPeer(p.mac, p.address, p.vtep) for p in peers])
