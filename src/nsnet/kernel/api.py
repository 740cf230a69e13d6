"""The kernel as the engine and the drivers see it: typed protocols, no pyroute2, no nft.

``HostKernel`` (netlink, libnftables, a namespace thread) implements ``Kernel``;
``nsnet.testing.fake_kernel.FakeKernel`` implements it in memory, so the engine's use-cases,
their undo and the drivers can be tested without root. Only what callers above ``kernel``
use is here: a method the fake lacks is a method nobody may call.

Sub-objects are read-only properties: a protocol attribute a caller could assign would be
invariant, and ``HostKernel.links: Links`` would then not match ``links: HostLinks``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

from nsnet.kernel.firewall import NetworkFirewall
from nsnet.kernel.port_firewall import PortRules

T = TypeVar("T")


class SandboxLinks(Protocol):
    """Links inside one sandbox's namespace, through a socket opened there."""

    def exists(self, name: str) -> bool: ...

    def delete(self, name: str) -> None:
        """Idempotent delete by name."""

    def set_up(self, name: str) -> None: ...

    def set_down(self, name: str) -> None:
        """Idempotent: a missing link is fine."""

    def loopback_up(self) -> None: ...

    def configure_endpoint(self, ifname: str, addresses: list[str], gateway4: str | None,
                           gateway6: str | None) -> None:
        """Addresses (``addr/len``), up, and the default routes given."""

    def set_default_route(self, ifname: str, gateway: str, family: int = 4) -> None:
        """Replace the sandbox's default route of ``family`` with one via ``gateway``."""


class HostLinks(SandboxLinks, Protocol):
    """Links in the daemon's own namespace: bridges, host-side veths, parents, shims."""

    def index(self, name: str) -> int | None: ...

    def link_info(self, name: str) -> dict[str, object] | None:
        """``index``, ``kind``, ``mtu``, ``master``, ``mac`` of a link, or None."""

    def ensure_bridge(self, name: str, mtu: int | None, alias: str | None,
                      known_index: int | None = None) -> tuple[int, bool]:
        """(index, created): make the bridge if missing, up, tagged with ``alias``."""

    def clear_alias(self, index: int) -> None: ...

    def ensure_address(self, index: int, cidr: str) -> None: ...

    def remove_address(self, index: int, cidr: str) -> None: ...

    def add_veth_into(self, host_name: str, peer_name: str, peer_mac: str, peer_ns_fd: int,
                      master: int | None, mtu: int | None,
                      want_index: bool = False) -> int | None:
        """A veth whose peer is born inside the namespace ``peer_ns_fd`` (from
        ``Kernel.netns_fd``); the host side's index when ``want_index``."""

    def add_macvlan_into(self, name: str, parent: int, mode: str, mac: str, ns_fd: int | None,
                         mtu: int | None, kind: str = "macvlan") -> None: ...

    def add_vlan(self, name: str, parent: int, vlan_id: int) -> None: ...

    def add_veth_pair(self, name: str, peer: str, alias: str) -> int: ...

    def add_route(self, dst: str, ifname: str) -> None:
        """Never a replace: ``errors.Conflict`` when the route exists."""

    def ports(self, master: int) -> list[str]:
        """Names of the links enslaved to ``master`` (reconcile only)."""
        ...

    def enslave(self, name: str, master: int) -> bool:
        """Put a link back on its bridge; False when the link is gone."""
        ...

    def set_isolated(self, index: int, isolated: bool) -> None: ...

    def set_hairpin(self, index: int, on: bool) -> None:
        """Bridge port hairpin mode: a frame may leave by the port it came in on."""
        ...

    def tagged(self, tag_prefix: str) -> Iterator[tuple[str, str]]:
        """(name, alias) of links whose alias starts with ``tag_prefix``."""
        ...


class ForeignRules(Protocol):
    """Our accept rules in another firewall's FORWARD chain (kernel/foreign_firewall.py)."""

    def remove_unowned(self, known: set[str]) -> list[str]:
        """Remove the accepts of networks not in ``known`` (short ids); which went."""
        ...


class FirewallOps(Protocol):
    """The ``inet nsnet`` table of the host namespace and the sandboxes' small tables."""

    @property
    def foreign(self) -> ForeignRules: ...

    def ensure_base(self) -> None: ...

    def apply_network(self, n: NetworkFirewall) -> None: ...

    def remove_network(self, short_id: str, bridge: str, subnets: tuple[str, ...]) -> None:
        """Idempotent."""

    def remove_stale(self, short_id: str) -> None:
        """A network's chains when only the table knows it (reconcile)."""

    def network_chains(self) -> set[str]:
        """Short ids that have chains in the table."""
        ...

    def run_in_namespace(self, ns_path: str, commands: str) -> None:
        """One nft transaction inside a sandbox (its resolver table)."""


class Namespaces(Protocol):
    """Network namespaces pinned on paths; the only way to run code inside one."""

    def create(self, ns_path: str) -> None:
        """A new namespace pinned on ``ns_path``; nothing left behind on failure."""

    def remove(self, ns_path: str) -> None:
        """Unpin it (the kernel reaps it and its links); idempotent."""

    def call_in(self, ns_path: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside ``ns_path`` (to open a socket there); blocks ~1 ms."""
        ...


class Reaper(Protocol):
    """Link deletes off the request path (a veth delete waits ~15 ms for RCU)."""

    def delete_later(self, name: str, done: Callable[[], None] | None = None) -> None: ...

    def flush(self) -> None:
        """Wait for every queued delete."""


class RouteSource(Protocol):
    def networks(self) -> list[ipaddress.IPv4Network]:
        """The host's IPv4 routes, so IPAM can skip pools that overlap them."""
        ...


class Announcements(Protocol):
    def announce(self, sock: socket.socket, ifname: str, addresses: Iterable[str]) -> None:
        """Tell the segment about a new MAC for ``addresses``; takes ownership of ``sock``."""


class OverlayPeer(NamedTuple):
    """A remote endpoint as a VXLAN device holds it: its IP and MAC behind its host's VTEP."""

    mac: str
    ip: str
    vtep: str


class Overlays(Protocol):
    """Overlay networks' data planes on this host, one namespace per VNI (kernel/vxlan.py).

    Each holds the bridge ``ovbr0`` and ``vx-<vni>``; endpoint veths go into the bridge through
    ``links(vni)``, remote endpoints are ``OverlayPeer`` entries on the VXLAN device. Every
    call on an absent VNI raises ``errors.NotFound`` except ``exists``, ``create`` and the
    idempotent ``remove``.
    """

    def exists(self, vni: int) -> bool: ...

    def create(self, vni: int, vtep: str, mtu: int | None) -> None:
        """Namespace, bridge and VXLAN sending from ``vtep``, all or nothing; ``mtu`` defaults
        to the underlay's minus 50. ``errors.Invalid`` when it exists or does not fit."""

    def remove(self, vni: int) -> None:
        """The namespace with everything in it (endpoint veths too); idempotent."""

    def present(self) -> set[int]:
        """VNIs whose overlay namespace exists on this host (reconcile)."""
        ...

    def links(self, vni: int) -> HostLinks:
        """Links inside the overlay namespace: the bridge and its endpoint ports."""
        ...

    def mtu(self, vni: int) -> int:
        """The bridge's MTU, which every endpoint veth must use."""
        ...

    def add_peer(self, vni: int, peer: OverlayPeer) -> None:
        """Permanent neighbour and FDB entries; a replace when the peer moved."""

    def remove_peer(self, vni: int, mac: str, ip: str | None) -> None:
        """Idempotent."""

    def peers(self, vni: int) -> set[OverlayPeer]:
        """Complete peers the device holds now."""
        ...

    def sync_peers(self, vni: int, wanted: Iterable[OverlayPeer]) -> tuple[int, int]:
        """Hold exactly ``wanted``: (added, removed)."""
        ...


class Kernel(Protocol):
    """Everything the engine and the drivers do to the kernel."""

    @property
    def links(self) -> HostLinks: ...

    @property
    def ns(self) -> Namespaces: ...

    @property
    def firewall(self) -> FirewallOps: ...

    @property
    def reaper(self) -> Reaper: ...

    @property
    def routes(self) -> RouteSource: ...

    @property
    def announcer(self) -> Announcements: ...

    @property
    def overlays(self) -> Overlays: ...

    @property
    def ports(self) -> PortRules:
        """Published ports' maps in this (the daemon's) namespace; a fake in unit tests, so
        no test without a daemon namespace writes the machine's own firewall."""
        ...

    @property
    def netns_dir(self) -> Path:
        """Where sandbox namespaces are pinned (one file per sandbox)."""
        ...

    def sandbox_links(self, ns_path: str) -> AbstractContextManager[SandboxLinks]:
        """Links inside a sandbox for the duration of one operation."""
        ...

    def netns_fd(self, ns_path: str) -> AbstractContextManager[int]:
        """An fd of the namespace, for links born inside it."""
        ...

    def prepare_interface(self, ns_path: str, ifname: str, ipv6: bool) -> socket.socket:
        """Switch IPv6 off on a new, still-down interface unless ``ipv6``; the packet socket
        that will announce it once up."""
        ...

    def sysctl_set(self, key: str, value: str) -> None:
        """A sysctl of the daemon's namespace (``net.ipv4.ip_forward``)."""

    def delete_peer_later(self, host_ifname: str, ns_path: str | None, ifname: str) -> None:
        """Delete a veth off the request path; ``ifname`` stays taken in its sandbox until
        then."""

    def dying_names(self, ns_path: str) -> set[str]:
        """Container-side names whose pair is queued for deletion."""
        ...

    def wait_for_name(self, ns_path: str, ifname: str) -> None:
        """Let a pending delete of ``ifname`` finish before re-using the name."""

    def close(self) -> None: ...
