"""Another machine on a segment of a test host's: the "LAN" (or "outside") of integration tests.

Many tests need something beyond the daemon's host that is still not the machine's own network:
a client that connects to a published port, a LAN a container's masqueraded traffic reaches,
the parent segment of a macvlan network. It is a namespace of its own joined to the test host
by one veth: ``<ifname>`` on the host, ``<ifname>p`` in the other machine, the peer born there
(moving a link costs ~19 ms). Each test module picks its own addresses (TEST-NET and
documentation prefixes); IPv6 ones skip duplicate address detection, so they work at once.

Cost: one namespace and ~6 ``ip`` forks (~30 ms). The namespace goes at the end of the block,
and the veth with it.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator, Sequence

from nsnet.testing.hosts import TestHost, sh

__all__ = ["lan_machine"]


def _address_args(cidr: str) -> list[str]:
    nodad = ["nodad"] if ipaddress.ip_interface(cidr).version == 6 else []
    return [cidr, *nodad]


@contextlib.contextmanager
def lan_machine(host: TestHost, *, lan_addresses: Sequence[str] = (),
                host_addresses: Sequence[str] = (), ifname: str = "lan0",
                prefix: str = "nslan") -> Iterator[TestHost]:
    """A namespace on a veth of ``host``'s, both ends up: ``host_addresses`` (CIDRs) on
    ``ifname`` in ``host`` (none: a bare parent, as for macvlan), ``lan_addresses`` on
    ``<ifname>p`` in the other machine. Yields the other machine."""
    other = TestHost.create(prefix)
    peer = f"{ifname}p"
    try:
        sh("ip", "-n", host.name, "link", "add", ifname, "type", "veth", "peer", "name", peer,
           "netns", other.name)
        for cidr in host_addresses:
            host.ip("addr", "add", *_address_args(cidr), "dev", ifname)
        host.ip("link", "set", ifname, "up")
        for cidr in lan_addresses:
            other.ip("addr", "add", *_address_args(cidr), "dev", peer)
        other.ip("link", "set", peer, "up")
        yield other
    finally:
        other.destroy()
