"""``HostOverlays``: the overlay data planes of this host behind the ``Overlays`` protocol.

``kernel/vxlan.py`` has the primitives (one ``OverlayNetwork`` per VNI, made or opened from
a pinned namespace); this keeps one open per VNI for the daemon's life, so a peer change costs
its two netlink requests and never the ~1 ms of opening a socket inside a namespace. A daemon
restart finds the namespaces pinned under ``<exec-root>/overlay`` and opens them on first use.

Everything runs on the caller's thread (the engine's loop): the engine and the peer service
are the only callers, so changes to one network are serialised by the loop itself (rule 7).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pyroute2 import IPRoute

from nsnet.errors import NotFound
from nsnet.kernel.api import OverlayPeer
from nsnet.kernel.links import Links
from nsnet.kernel.netns import NamespaceThread, is_namespace
from nsnet.kernel.vxlan import (
    OverlayNetwork,
    Peer,
    create_overlay,
    list_overlays,
    open_overlay,
    overlay_ns_path,
    remove_overlay,
)


class HostOverlays:
    """``ns`` enters namespaces, ``host`` is a netlink socket of the daemon's own namespace
    (where the underlay is: every VXLAN device is created through it), ``ns_dir`` is where
    overlay namespaces are pinned."""

    def __init__(self, ns: NamespaceThread, host: IPRoute, ns_dir: Path) -> None:
        self._ns = ns
        self._host = host
        self.ns_dir = ns_dir
        self._sites: dict[int, OverlayNetwork] = {}

    def _site(self, vni: int) -> OverlayNetwork:
        site = self._sites.get(vni)
        if site is None:
            site = open_overlay(self._ns, self.ns_dir, vni)  # NotFound when absent
            self._sites[vni] = site
        return site

    def exists(self, vni: int) -> bool:
        return vni in self._sites or is_namespace(overlay_ns_path(self.ns_dir, vni))

    def create(self, vni: int, vtep: str, mtu: int | None) -> None:
        self._sites[vni] = create_overlay(self._ns, self._host, self.ns_dir, vni, vtep, mtu)

    def remove(self, vni: int) -> None:
        site = self._sites.pop(vni, None)
        if site is not None:
            site.close()
        remove_overlay(self._ns, self.ns_dir, vni)

    def present(self) -> set[int]:
        return set(list_overlays(self.ns_dir))

    def links(self, vni: int) -> Links:
        return self._site(vni).links

    def mtu(self, vni: int) -> int:
        return self._site(vni).mtu()

    def add_peer(self, vni: int, peer: OverlayPeer) -> None:
        self._site(vni).add_peer(Peer(peer.mac, peer.ip, peer.vtep))

    def remove_peer(self, vni: int, mac: str, ip: str | None) -> None:
        try:
            site = self._site(vni)
        except NotFound:
            return  # the namespace took its entries with it
        site.remove_peer(mac, ip)

    def peers(self, vni: int) -> set[OverlayPeer]:
        return {OverlayPeer(p.mac, p.ip, p.vtep) for p in self._site(vni).entries().peers()}

    def sync_peers(self, vni: int, wanted: Iterable[OverlayPeer]) -> tuple[int, int]:
        return self._site(vni).sync_peers(Peer(p.mac, p.ip, p.vtep) for p in wanted)

    def close(self) -> None:
        """Close the sockets; the namespaces stay (a restart finds them)."""
        for site in self._sites.values():
            site.close()
        self._sites.clear()
