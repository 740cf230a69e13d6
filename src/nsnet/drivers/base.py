"""The driver interface: what the engine asks of every network driver.

Drivers do kernel work only; IPAM, the store and DNS stay in the engine. Every method is
idempotent where it removes, so the engine's undo stack and reconcile can call it blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nsnet.model import Endpoint, Network

TAG = "nsnet:"


@dataclass
class Sandbox:
    """A container's network namespace as the drivers see it."""

    container_id: str
    ns_path: str | None  # None: the container shares the host's namespace


def endpoint_addresses(ep: Endpoint) -> list[str]:
    """The endpoint's addresses as ``addr/len``, IPv4 first."""
    out = []
    if ep.ipv4:
        out.append(f"{ep.ipv4}/{ep.ipv4_prefixlen}")
    if ep.ipv6:
        out.append(f"{ep.ipv6}/{ep.ipv6_prefixlen}")
    return out


class Driver(Protocol):
    name: str
    # Whether containers on this driver's networks get an interface and an address.
    has_endpoints: bool

    def validate(self, net: Network) -> None:
        """Reject bad options before anything is made (raise errors.Invalid)."""

    def create_network(self, net: Network) -> None:
        """Make (or re-make, at reconcile) the network's kernel objects."""

    def delete_network(self, net: Network) -> None:
        """Remove them; idempotent."""

    def join(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        """Create ``ep.ifname`` inside the sandbox with ``ep``'s addresses (no default route).

        Without an IPv6 address the interface gets no IPv6 at all (no ``fe80::``); once up,
        its addresses are announced (gratuitous ARP, unsolicited NA) because its MAC is new.
        """

    def leave(self, net: Network, ep: Endpoint, sb: Sandbox) -> None:
        """Take the endpoint out of use at once; the link may be deleted off the request path."""
