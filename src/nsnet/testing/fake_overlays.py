"""The fake kernel's overlay data planes: ``Overlays`` in memory, for tests without root.

An overlay is what ``kernel/vxlan.py`` makes, in the fake's terms: a namespace pinned at
``<exec-root>/overlay/ov-<vni>`` holding the bridge ``ovbr0`` and ``vx-<vni>`` enslaved to it,
so endpoint veths, ``objects()`` and leak assertions see it like any other namespace. Peer
entries are kept per VNI and go with the namespace, as the kernel's go with the device.

Like the real one: an existing VNI is refused (``Invalid``), the MTU must fit the underlay
(``underlay_mtu`` - 50), the VTEP and every peer are checked, and a missing overlay is
``NotFound``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from nsnet.errors import Invalid, NotFound
from nsnet.kernel.api import OverlayPeer
from nsnet.testing.fake_links import FakeLink, FakeLinks

if TYPE_CHECKING:
    from nsnet.testing.fake_kernel import FakeKernel

BRIDGE = "ovbr0"
OVERHEAD = 50


def _check_peer(p: OverlayPeer) -> None:
    try:
        ipaddress.IPv4Address(p.ip)
        ipaddress.IPv4Address(p.vtep)
    except ValueError as e:
        raise Invalid(f"peer {p}: {e}") from None
    parts = p.mac.split(":")
    if len(parts) != 6 or not all(len(x) == 2 for x in parts):
        raise Invalid(f"peer {p}: bad MAC {p.mac!r}")


class FakeOverlays:
    """See the module docstring. ``vteps`` are the host's addresses a VXLAN may send from."""

    def __init__(self, k: FakeKernel, ns_dir: Path) -> None:
        self._k = k
        self.ns_dir = ns_dir
        self.underlay_mtu = 1500
        self.vteps: set[str] | None = None  # None: any IPv4 address will do
        self._peers: dict[int, dict[str, OverlayPeer]] = {}

    def path(self, vni: int) -> str:
        return str(self.ns_dir / f"ov-{vni}")

    def _need(self, vni: int) -> str:
        path = self.path(vni)
        if path not in self._k.state.namespaces:
            self._peers.pop(vni, None)
            raise NotFound(f"no overlay namespace for VNI {vni}")
        return path

    def exists(self, vni: int) -> bool:
        return self.path(vni) in self._k.state.namespaces

    def create(self, vni: int, vtep: str, mtu: int | None) -> None:
        self._k.state.hit("create_overlay")
        if not 1 <= vni < 1 << 24:
            raise Invalid(f"VNI {vni} out of range")
        try:
            ipaddress.IPv4Address(vtep)
        except ValueError:
            raise Invalid(f"VTEP {vtep!r} is not an IPv4 address") from None
        if self.vteps is not None and vtep not in self.vteps:
            raise Invalid(f"VTEP address {vtep} is not an address of this host")
        limit = self.underlay_mtu - OVERHEAD
        if mtu is not None and not 68 <= mtu <= limit:
            raise Invalid(f"overlay MTU {mtu} does not fit the underlay at {vtep}")
        if self.exists(vni):
            raise Invalid(f"overlay namespace for VNI {vni} already exists")
        path = self.path(vni)
        self._k.ns.create(path)
        try:
            s = self._k.state
            br = s.add_link(FakeLink(name=BRIDGE, kind="bridge", ns=path, up=True,
                                     mtu=mtu or limit))
            s.add_link(FakeLink(name=f"vx-{vni}", kind="vxlan", ns=path, up=True,
                                mtu=mtu or limit, master=br.index))
        except BaseException:
            self._k.ns.remove(path)
            raise
        self._peers[vni] = {}

    def remove(self, vni: int) -> None:
        self._k.state.hit("remove_overlay")
        self._peers.pop(vni, None)
        self._k.ns.remove(self.path(vni))

    def present(self) -> set[int]:
        prefix = str(self.ns_dir / "ov-")
        return {int(p[len(prefix):]) for p in self._k.state.namespaces
                if p.startswith(prefix) and p[len(prefix):].isdigit()}

    def links(self, vni: int) -> FakeLinks:
        return FakeLinks(self._k.state, self._need(vni))

    def mtu(self, vni: int) -> int:
        link = self._k.state.get(self._need(vni), BRIDGE)
        assert link is not None and link.mtu is not None
        return link.mtu

    def add_peer(self, vni: int, peer: OverlayPeer) -> None:
        self._k.state.hit("add_peer")
        self._need(vni)
        _check_peer(peer)
        table = self._peers.setdefault(vni, {})
        for mac, old in list(table.items()):
            if old.ip == peer.ip and mac != peer.mac:
                del table[mac]  # a neighbour entry holds one MAC per IP
        table[peer.mac] = peer

    def remove_peer(self, vni: int, mac: str, ip: str | None) -> None:
        self._k.state.hit("remove_peer")
        if self.exists(vni):
            self._peers.get(vni, {}).pop(mac, None)

    def peers(self, vni: int) -> set[OverlayPeer]:
        self._need(vni)
        return set(self._peers.get(vni, {}).values())

    def sync_peers(self, vni: int, wanted: Iterable[OverlayPeer]) -> tuple[int, int]:
        self._k.state.hit("sync_peers")
        self._need(vni)
        want = {p.mac: p for p in wanted}
        for p in want.values():
            _check_peer(p)
        have = self._peers.setdefault(vni, {})
        removed = [m for m, p in have.items() if want.get(m) != p and m not in want]
        for m in removed:
            del have[m]
        added = 0
        for m, p in want.items():
            if have.get(m) != p:
                have[m] = p
                added += 1
        return added, len(removed)
