"""The driver interface: what the engine asks of every network driver, and what some offer more.

Drivers do kernel work only; IPAM, the store and DNS stay in the engine. Every method is
idempotent where it removes, so the engine's undo stack and reconcile can call it blindly.

``Driver`` is the small interface every driver has (moby's ``driverapi.Driver`` is the model).
Abilities only some drivers have are separate ``Protocol``s below, checked with ``isinstance``
at the call site: a typo in a method name is then a type error, not a capability that silently
never runs (which is what ``getattr(drv, "restore", None)`` allowed). They are
``runtime_checkable``, so ``isinstance`` looks at method names only; mypy checks signatures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from nsnet.model import Endpoint, Network

TAG = "nsnet:"


@dataclass
class Sandbox:
    """A container's network namespace as the drivers see it."""

    container_id: str
    ns_path: str | None  # None: the container shares the host's namespace


def endpoint_addresses(ep: Endpoint) -> list[str]:
    """The endpoint's addresses as ``addr/len``, IPv4 first, then its link-local ones."""
    out = []
    if ep.ipv4:
        out.append(f"{ep.ipv4}/{ep.ipv4_prefixlen}")
    if ep.ipv6:
        out.append(f"{ep.ipv6}/{ep.ipv6_prefixlen}")
    out.extend(a for a in ep.link_local if a not in out)
    return out


def provides_gateway(drv: object) -> bool:
    """Whether the driver's endpoints can carry the sandbox's default route: a driver says
    no with ``provides_gateway = False`` (the overlay, whose segment has no router); an
    attribute rather than a protocol member, so the many drivers that do need not say so."""
    return bool(getattr(drv, "provides_gateway", True))


class Driver(Protocol):
    name: str
    # Whether containers on this driver's networks get an interface and an address.
    has_endpoints: bool

    def validate(self, net: Network) -> None:
        """Reject bad options before anything is made (raise errors.Invalid)."""

    def create_network(self, net: Network) -> None:
        """Make (or re-make, at reconcile) the network's kernel objects.

        The only place a network's objects are (re)built: ``join`` never rebuilds, it fails
        and names ``nsnet system reconcile`` instead (a rebuild in the hot path would hide
        damage and cost a full network set-up inside a ``run``).
        """

    def delete_network(self, net: Network) -> None:
        """Remove them; idempotent."""

    def join(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        """Create ``ep.ifname`` inside the sandbox with ``ep``'s addresses (no default route).

        Without an IPv6 address the interface gets no IPv6 at all (no ``fe80::``); once up,
        its addresses are announced (gratuitous ARP, unsolicited NA) because its MAC is new.
        A network whose kernel objects are missing is an error (``errors.Unavailable``),
        never a reason to rebuild them here.
        """

    def leave(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        """Take the endpoint out of use at once; the link may be deleted off the request path."""


# -- optional capabilities ----------------------------------------------------------------


@runtime_checkable
class Restorable(Protocol):
    """Reconcile can put a live endpoint back together after a daemon restart."""

    def restore(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        """Re-attach ``ep`` as stored, or re-make its link if someone deleted it.

        Called by reconcile only, after ``create_network`` re-made the network. It may change
        ``ep`` (a re-made veth gets a new host-side name); the engine writes the change back.
        """


@runtime_checkable
class OwnsLinks(Protocol):
    """The driver makes host-side links of its own besides endpoint links."""

    def owned_links(self, net: Network) -> set[str]:
        """Names of the tagged links ``net`` owns, so reconcile does not delete them as
        leftovers (a macvlan network's private parent, its host-access shim)."""
        ...


@runtime_checkable
class HasStalePorts(Protocol):
    """The driver can find endpoint links a crash left behind on a network."""

    def stale_ports(self, net: Network, owned: set[str]) -> list[str]:
        """Links attached to ``net`` that are not in ``owned`` (every live endpoint's and
        network's links): reconcile deletes them. Only links nsnet made, never a user's."""
        ...


@runtime_checkable
class UniqueValidator(Protocol):
    """The driver has rules that span networks (two networks on one bridge)."""

    def validate_unique(self, net: Network, others: list[Network]) -> None:
        """Raise ``errors.Forbidden`` when ``net`` clashes with one of ``others`` or with a
        link that already exists; called before anything is made."""


@dataclass(frozen=True)
class PortMapping:
    """One published port as a driver sees it (``-p host_ip:host_port:port/proto``); the
    engine's record of it is in ``Container.ports`` (engine/published_ports.py)."""

    protocol: str  # "tcp" | "udp" | "sctp"
    container_port: int
    host_port: int
    host_ip: str = ""  # "" = every address of the host


@runtime_checkable
class PublishesPorts(Protocol):
    """The driver can publish endpoint ports on the host (architecture rule 5: DNAT, no
    proxy): the bridge driver, over kernel/port_firewall.py."""

    def publish(self, net: Network, ep: Endpoint, ports: Sequence[PortMapping]) -> None:
        """Make ``ports`` reach ``ep``: one atomic firewall change (DNAT from the host's
        addresses, hairpin from the network itself), idempotent for ports already published.
        Raises ``errors.Conflict`` for a host port another endpoint holds, leaving nothing."""

    def unpublish(self, net: Network, ep: Endpoint, ports: Sequence[PortMapping]) -> None:
        """Remove them; idempotent (reconcile and undo call it blindly)."""

    def published(self, net: Network) -> dict[str, list[PortMapping]]:
        """Endpoint id -> ports present in the kernel, for reconcile to compare with the
        store."""
        ...


@dataclass(frozen=True)
class Peer:
    """A remote endpoint of a multi-host network: where its address lives."""

    endpoint_id: str
    address: str  # the endpoint's IP
    mac: str
    vtep: str  # the underlay address of the host that holds it


@runtime_checkable
class ProgramsPeers(Protocol):
    """The driver spans hosts and learns remote endpoints from the global store (overlay):
    drivers/overlay.py, fed by engine/peers.py. Every call is a no-op on a network whose data
    plane this host does not have (yet)."""

    def add_peer(self, net: Network, peer: Peer) -> None:
        """Program a permanent neighbour entry and a permanent FDB entry towards
        ``peer.vtep``; idempotent, and a replace when the peer moved to another host."""

    def remove_peer(self, net: Network, peer: Peer) -> None:
        """Remove both entries; idempotent."""

    def peers(self, net: Network) -> list[Peer]:
        """What the kernel holds now, for a resync after a lost watch."""
        ...

    def sync_peers(self, net: Network, peers: Iterable[Peer]) -> tuple[int, int]:
        """Make the kernel hold exactly ``peers`` (after a lost watch, at reconcile): removes
        entries no peer owns, adds or re-points the rest; (added, removed)."""
        ...
