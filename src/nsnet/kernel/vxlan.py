"""The overlay data plane of one network on one host (docs/architecture.md, rule 7).

Each overlay network gets a namespace of its own, pinned at ``<dir>/ov-<vni>``, holding a
bridge ``ovbr0`` and a VXLAN device ``vx-<vni>`` enslaved to it; local containers get a veth
into that bridge. Keeping the segment out of the daemon's namespace means two overlays never
share a bridge, a neighbour table or an FDB, whatever subnets they use.

How the VXLAN device sends from the underlay: it is *created* through a netlink socket of the
daemon's own namespace with ``IFLA_NET_NS_FD`` naming the overlay namespace. The kernel makes
the device in the target namespace but binds its UDP socket in the requester's (``vxlan->net``
is the netlink caller's namespace), so encapsulated packets leave from the host's underlay with
``local = VTEP``. Docker creates the device in the host and moves it (``net_ns_fd`` on an
existing link, ~19 ms); born in place it costs what a veth does, and nothing ever moves.

The device has ``learning off`` (peers come from the store, never from the wire) and ``proxy
on``: ARP requests from local containers are answered by the device from its neighbour table,
so an ARP never leaves the host. There is no all-zeros FDB entry, so unknown unicast and
broadcast are dropped instead of flooded to every VTEP: a known endpoint is reached with one
packet to one host, and an unknown one is not reached at all. Each remote endpoint is two
permanent entries on ``vx-<vni>``: neighbour (IP -> MAC) and FDB (MAC -> remote VTEP).

Costs: one overlay namespace is ~1 ms (``NamespaceThread.create``), its bridge and VXLAN a few
ms more (once per network per host); a peer is two netlink requests on a warm socket.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nsnet.errors import Invalid, NotFound
from nsnet.kernel.links import Links, _kernel_error, _link_kind_error
from nsnet.kernel.netns import NamespaceThread, is_namespace

VXLAN_PORT = 4789  # IANA; Docker and Linux's ``dstport 4789``
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
DEFAULT_MTU = 1500 - VXLAN_OVERHEAD
OVERLAY_BRIDGE = "ovbr0"
NS_PREFIX = "ov-"
VXLAN_PREFIX = "vx-"
MIN_VNI, MAX_VNI = 1, (1 << 24) - 1

NUD_PERMANENT = 0x80
NTF_SELF = 0x02


def overlay_ns_name(vni: int) -> str:
    return f"{NS_PREFIX}{vni}"


def vxlan_name(vni: int) -> str:
    """``vx-`` + up to 8 digits: always within IFNAMSIZ (15)."""
    return f"{VXLAN_PREFIX}{vni}"


@dataclass(frozen=True)
class Peer:
    """A remote endpoint as the data plane needs it: where its MAC lives."""

    mac: str
    ip: str
    vtep: str


@dataclass(frozen=True)
class PeerEntries:
    """What the kernel holds on one VXLAN device, as read back (for reconcile)."""

    neighbours: dict[str, str]  # ip -> mac (permanent entries only)
    fdb: dict[str, str]  # mac -> remote VTEP

    def peers(self) -> set[Peer]:
        """Complete peers: a neighbour whose MAC has an FDB entry."""
        return {Peer(mac, ip, self.fdb[mac]) for ip, mac in self.neighbours.items()
                if mac in self.fdb}


def _check_vni(vni: int) -> None:
    if not MIN_VNI <= vni <= MAX_VNI:
        raise Invalid(f"VNI {vni} out of range {MIN_VNI}-{MAX_VNI}")


def _check_peer(p: Peer) -> None:
    try:
        ipaddress.IPv4Address(p.ip)
        ipaddress.IPv4Address(p.vtep)
    except ValueError as e:
        raise Invalid(f"peer {p}: {e}") from None
    parts = p.mac.split(":")
    if len(parts) != 6 or not all(len(x) == 2 and all(c in "0123456789abcdefABCDEF" for c in x)
                                  for x in parts):
        raise Invalid(f"peer {p}: bad MAC {p.mac!r}")


def underlay_mtu(host: IPRoute, vtep: str) -> int:
    """The MTU of the host link carrying ``vtep`` (Invalid when no local link has it: a VXLAN
    bound to an address the host lacks would be made and then send nothing)."""
    for msg in host.get_addr(family=socket.AF_INET):
        if msg.get_attr("IFA_ADDRESS") == vtep or msg.get_attr("IFA_LOCAL") == vtep:
            link = host.link("get", index=msg["index"])[0]
            return int(link.get_attr("IFLA_MTU"))
    raise Invalid(f"VTEP address {vtep} is not an address of this host")


class OverlayNetwork:
    """One overlay network's namespace on this host, through a socket opened inside it.

    Peer changes for one network are serialised by the caller's queue (rule 7); the lock here
    only keeps one socket's requests and replies paired.
    """

    def __init__(self, ns_path: str, vni: int, ipr: IPRoute) -> None:
        self.ns_path = ns_path
        self.vni = vni
        self.vxlan = vxlan_name(vni)
        self.links = Links(ipr)  # veths into the bridge go through Links.add_veth_into
        self._ipr = ipr
        self._lock = threading.Lock()
        self._vx_index: int | None = None

    def close(self) -> None:
        self.links.close()

    def bridge_index(self) -> int:
        return self._index(OVERLAY_BRIDGE)

    def vxlan_index(self) -> int:
        """Cached: the device lives exactly as long as the namespace this object holds a
        socket in, so its index never changes (saves a netlink round trip per peer)."""
        if self._vx_index is None:
            self._vx_index = self._index(self.vxlan)
        return self._vx_index

    def mtu(self) -> int:
        """The bridge's MTU: what every veth into it must use."""
        info = self.links.link_info(OVERLAY_BRIDGE)
        if info is None:
            raise NotFound(f"{OVERLAY_BRIDGE} is missing in overlay namespace {self.ns_path}")
        return int(str(info["mtu"]))

    def _index(self, name: str) -> int:
        idx = self.links.index(name)
        if idx is None:
            raise NotFound(f"{name} is missing in overlay namespace {self.ns_path}")
        return idx

    def add_peer(self, p: Peer) -> None:
        """Neighbour and FDB entry for a remote endpoint; idempotent (replace), so a peer that
        moved to another VTEP is re-pointed in place."""
        _check_peer(p)
        vx = self.vxlan_index()
        with self._lock:
            try:
                self._ipr.fdb("replace", ifindex=vx, lladdr=p.mac, dst=p.vtep,
                              state=NUD_PERMANENT, flags=NTF_SELF)
                self._ipr.neigh("replace", ifindex=vx, dst=p.ip, lladdr=p.mac,
                                state=NUD_PERMANENT)
            except NetlinkError as e:
                raise _kernel_error(e, f"peer {p.ip} on {self.vxlan}") from e

    def remove_peer(self, mac: str, ip: str | None) -> None:
        """Both entries; idempotent (either may be missing already)."""
        vx = self.vxlan_index()
        with self._lock:
            if ip is not None:
                self._delete_entry(lambda: self._ipr.neigh("del", ifindex=vx, dst=ip))
            self._delete_entry(lambda: self._ipr.fdb("del", ifindex=vx, lladdr=mac,
                                                     flags=NTF_SELF))

    @staticmethod
    def _delete_entry(fn: Callable[[], object]) -> None:
        try:
            fn()
        except NetlinkError as e:
            if e.code not in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
                raise _kernel_error(e, "peer entry") from e

    def entries(self) -> PeerEntries:
        """Permanent neighbours and FDB entries with a remote on ``vx-<vni>`` (the bridge's
        own learned entries for local ports are not ours and not listed)."""
        vx = self.vxlan_index()
        neighbours: dict[str, str] = {}
        fdb: dict[str, str] = {}
        with self._lock:
            for m in self._ipr.get_neighbours(family=socket.AF_INET, ifindex=vx):
                if m["state"] & NUD_PERMANENT and m.get_attr("NDA_LLADDR"):
                    neighbours[m.get_attr("NDA_DST")] = m.get_attr("NDA_LLADDR")
            for m in self._ipr.fdb("dump", ifindex=vx):
                dst, mac = m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR")
                if m["ifindex"] == vx and dst and mac and mac != "00:00:00:00:00:00":
                    fdb[mac] = dst
        return PeerEntries(neighbours, fdb)

    def sync_peers(self, wanted: Iterable[Peer]) -> tuple[int, int]:
        """Make the device hold exactly ``wanted`` (reconcile, resync after an etcd outage):
        removes entries no wanted peer owns, adds or re-points the rest. (added, removed)."""
        want = {p.mac: p for p in wanted}
        for p in want.values():
            _check_peer(p)
        have = self.entries()
        removed = 0
        for ip, mac in have.neighbours.items():
            if mac not in want or want[mac].ip != ip:
                self.remove_peer(mac, ip)
                removed += 1
        for mac in have.fdb:
            if mac not in want and mac not in have.neighbours.values():
                self.remove_peer(mac, None)
                removed += 1
        complete = have.peers()
        added = 0
        for p in want.values():
            if p not in complete:
                self.add_peer(p)
                added += 1
        return added, removed


def overlay_ns_path(ns_dir: Path, vni: int) -> str:
    return str(ns_dir / overlay_ns_name(vni))


def create_overlay(ns: NamespaceThread, host: IPRoute, ns_dir: Path, vni: int, vtep: str,
                   mtu: int | None = None) -> OverlayNetwork:
    """The namespace, bridge and VXLAN of one overlay network; all or nothing.

    ``host`` is a netlink socket of the namespace that owns the underlay (the daemon's own):
    the VXLAN is created through it, born in the overlay namespace, sending from ``vtep``.
    ``mtu`` defaults to the underlay's MTU minus 50 (1450 on a 1500 underlay).
    """
    _check_vni(vni)
    try:
        ipaddress.IPv4Address(vtep)
    except ValueError:
        raise Invalid(f"VTEP {vtep!r} is not an IPv4 address") from None
    if mtu is None:
        mtu = underlay_mtu(host, vtep) - VXLAN_OVERHEAD
    elif not 68 <= mtu <= underlay_mtu(host, vtep) - VXLAN_OVERHEAD:
        raise Invalid(f"overlay MTU {mtu} does not fit the underlay at {vtep} "
                      f"(at most its MTU minus {VXLAN_OVERHEAD})")
    path = overlay_ns_path(ns_dir, vni)
    if is_namespace(path):
        raise Invalid(f"overlay namespace for VNI {vni} already exists")
    ns_dir.mkdir(parents=True, exist_ok=True)
    ns.create(path)
    ipr: IPRoute | None = None
    try:
        ipr = ns.call_in(path, _open_quiet_socket)
        ipr.link("add", ifname=OVERLAY_BRIDGE, kind="bridge", mtu=mtu)
        br = int(ipr.link("get", ifname=OVERLAY_BRIDGE)[0]["index"])
        with _ns_fd(path) as fd:
            try:
                host.link("add", ifname=vxlan_name(vni), kind="vxlan", vxlan_id=vni,
                          vxlan_local=vtep, vxlan_port=VXLAN_PORT, vxlan_learning=0,
                          vxlan_proxy=1, mtu=mtu, net_ns_fd=fd)
            except NetlinkError as e:
                raise _link_kind_error(e, "vxlan", vxlan_name(vni)) from e
        ipr.link("set", index=br, state="up")
        vx = int(ipr.link("get", ifname=vxlan_name(vni))[0]["index"])
        ipr.link("set", index=vx, master=br, state="up")
        ipr.link("set", ifname="lo", state="up")
        return OverlayNetwork(path, vni, ipr)
    except BaseException:
        if ipr is not None:
            ipr.close()
        ns.remove(path)  # takes the bridge and the VXLAN with it
        raise


def open_overlay(ns: NamespaceThread, ns_dir: Path, vni: int) -> OverlayNetwork:
    """An existing overlay namespace (after a daemon restart); NotFound when it is gone."""
    path = overlay_ns_path(ns_dir, vni)
    if not is_namespace(path):
        raise NotFound(f"no overlay namespace for VNI {vni}")
    return OverlayNetwork(path, vni, ns.iproute(path))


def remove_overlay(ns: NamespaceThread, ns_dir: Path, vni: int) -> None:
    """Unpin the namespace; the kernel reaps it with its bridge, VXLAN and bridge-side veths
    (their container ends go with them). Idempotent."""
    ns.remove(overlay_ns_path(ns_dir, vni))


def list_overlays(ns_dir: Path) -> dict[int, str]:
    """VNI -> path of the overlay namespaces pinned under ``ns_dir`` (for reconcile)."""
    out: dict[int, str] = {}
    try:
        names = os.listdir(ns_dir)
    except FileNotFoundError:
        return out
    for name in names:
        rest = name.removeprefix(NS_PREFIX)
        if rest != name and rest.isdigit():
            out[int(rest)] = str(ns_dir / name)
    return out


def _open_quiet_socket() -> IPRoute:
    """Runs inside the new overlay namespace: no IPv6 on its links (the segment is IPv4; their
    link-local addresses would only send router solicitations and MLD reports nobody reads),
    then the netlink socket everything else goes through."""
    for key in ("default", "all"):
        with contextlib.suppress(OSError), \
                open(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6", "w") as f:
            f.write("1")
    return IPRoute()


@contextlib.contextmanager
def _ns_fd(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)
