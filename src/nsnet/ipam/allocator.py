"""Docker's default IPAM: subnet choice from the default pools, lowest-free addresses.

Pure logic over an in-memory view, written through to the store, whose primary key on
(network, address) is the last word against double allocation. The engine serialises calls, so
the in-memory view and the store never disagree for long; at start the view is rebuilt from the
store.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
from collections.abc import Container, Iterable, Sequence

from nsnet.errors import Conflict, Forbidden, Invalid, Unavailable
from nsnet.model import IPAMPool, Network
from nsnet.store.base import IpamTable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# (base, size) as dockerd's local-scope defaults: 15 x /16, then 16 x /20 in 192.168/16.
DEFAULT_POOLS: tuple[tuple[str, int], ...] = (
    ("172.17.0.0/16", 16),
    ("172.18.0.0/16", 16),
    ("172.19.0.0/16", 16),
    ("172.20.0.0/14", 16),
    ("172.24.0.0/14", 16),
    ("172.28.0.0/14", 16),
    ("192.168.0.0/16", 20),
)
# Docker's global-scope default (libnetwork's ipamutils): 10.0.0.0/8 as 65,536 x /24, used for
# overlay networks; it overlaps none of the local pools above.
GLOBAL_POOLS: tuple[tuple[str, int], ...] = (("10.0.0.0/8", 24),)


def candidate_subnets(pools: Iterable[tuple[str, int]] = DEFAULT_POOLS) -> Iterable[IPNetwork]:
    for base, size in pools:
        yield from ipaddress.ip_network(base).subnets(new_prefix=size)


def pick_subnet(used: Iterable[IPNetwork], reserved: Iterable[IPNetwork],
                pools: Iterable[tuple[str, int]] = DEFAULT_POOLS) -> IPNetwork:
    """The first subnet of ``pools`` overlapping neither a network nor a host route/nameserver
    (``GLOBAL_POOLS`` for overlay networks)."""
    # Integer intervals sorted by start with a running maximum of their ends, so one bisect
    # tells whether a candidate overlaps anything: the global pool has 65,536 candidates.
    taken = sorted((int(n.network_address), int(n.broadcast_address))
                   for n in [*used, *reserved] if n.version == 4)
    starts = [a for a, _ in taken]
    reach = list(itertools.accumulate((b for _, b in taken), max))
    for base, size in pools:
        pool = ipaddress.IPv4Network(base)
        step = 1 << (32 - size)
        start = int(pool.network_address)
        for lo in range(start, int(pool.broadcast_address) + 1, step):
            hi = lo + step - 1
            below = bisect.bisect_right(starts, hi)
            if not below or reach[below - 1] < lo:
                return ipaddress.IPv4Network((lo, size))
    raise Forbidden("could not find an available, non-overlapping IPv4 address pool among "
                    "the defaults to assign to the network")


def parse_address(value: str, family: int | None = None) -> IPAddress:
    if not isinstance(value, str):
        raise Invalid(f"invalid IP address: {value!r}")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        kind = "IPv6" if family == 6 or ":" in value else "IPv4"
        raise Invalid(f"invalid {kind} address: {value}") from None
    if family and addr.version != family:
        raise Invalid(f"invalid IPv{family} address: {value}")
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        raise Invalid(f"invalid IPv6 address: {value}")
    return addr


# Ranges no container network may overlap: packets to them never leave a host (loopback),
# are never unicast (multicast, limited broadcast), or mean "this host" (0.0.0.0/8, ::/128),
# and IPv4-mapped IPv6 would alias the IPv4 space.
RESERVED_SUBNETS: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "::ffff:0:0/96", "ff00::/8",
))
# The longest prefixes with room for a gateway and one endpoint besides the network (and, for
# IPv4, broadcast) address the allocator never hands out.
MAX_PREFIX = {4: 30, 6: 126}


def parse_subnet(value: str) -> IPNetwork:
    if not isinstance(value, str):
        raise Invalid(f"invalid subnet {value!r}: not a CIDR address")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise Invalid(f"invalid subnet {value}: not a CIDR address") from None
    if "/" not in value:
        raise Invalid(f"invalid subnet {value}: missing prefix length")
    if ipaddress.ip_interface(value).ip != net.network_address:
        raise Invalid(f"invalid subnet {value}: it should be {net}")
    return net


def _checked_subnet(value: str, seen: list[IPNetwork]) -> IPNetwork:
    """A subnet that is not reserved, holds an endpoint and overlaps no earlier pool."""
    net = parse_subnet(value)
    for r in RESERVED_SUBNETS:
        if r.version == net.version and r.overlaps(net):
            raise Invalid(f"invalid pool request: subnet {net} overlaps the reserved range "
                          f"{r}")
    if net.prefixlen > MAX_PREFIX[net.version]:
        raise Invalid(f"invalid pool request: subnet {net} is too small: it must hold a "
                      f"gateway and at least one endpoint (at most /"
                      f"{MAX_PREFIX[net.version]})")
    for s in seen:
        if s.version == net.version and s.overlaps(net):
            raise Invalid(f"invalid pool request: Pool overlaps with other one on this "
                          f"address space ({net} and {s})")
    return net


def _checked_gateway(value: str, net: IPNetwork) -> str:
    gwa = parse_address(value, net.version)
    if gwa not in net:
        raise Invalid(f"invalid pool request: gateway {gwa} is not in subnet {net}")
    if gwa == net.network_address:
        raise Invalid(f"invalid pool request: gateway {gwa} is the network address of "
                      f"{net}")
    if net.version == 4 and gwa == net.broadcast_address:
        raise Invalid(f"invalid pool request: gateway {gwa} is the broadcast address "
                      f"of {net}")
    return str(gwa)


def _checked_range(value: str, net: IPNetwork) -> str:
    r = parse_subnet(value)
    if r.version != net.version or not r.subnet_of(net):  # type: ignore[arg-type]
        raise Invalid(f"invalid pool request: ip-range {r} is not within subnet {net}")
    return str(r)


def _checked_aux(aux: dict[str, str], net: IPNetwork) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in aux.items():
        a = parse_address(v, net.version)
        if a not in net:
            raise Invalid(f"invalid pool request: aux-address {k}={a} is not in subnet {net}")
        out[k] = str(a)
    return out


def validate_pools(pools: list[IPAMPool]) -> list[IPAMPool]:
    """Check and normalise user IPAM config as dockerd 25+ does (400 on any inconsistency)."""
    out: list[IPAMPool] = []
    seen: list[IPNetwork] = []
    for p in pools:
        if not p.subnet:
            if p.ip_range or p.gateway or p.aux_addresses:
                raise Invalid("every ip-range or gateway must have a corresponding subnet")
            continue
        net = _checked_subnet(p.subnet, seen)
        seen.append(net)
        gw = _checked_gateway(p.gateway, net) if p.gateway else None
        rng = _checked_range(p.ip_range, net) if p.ip_range else None
        aux = _checked_aux(p.aux_addresses or {}, net)
        out.append(IPAMPool(subnet=str(net), gateway=gw, ip_range=rng, aux_addresses=aux))
    # Docker lists the IPv4 config first whatever the order given.
    out.sort(key=lambda p: ipaddress.ip_network(p.subnet).version)
    return out


def default_gateway(net: IPNetwork) -> str:
    return str(net.network_address + 1)


def reserved_addresses(pool: IPAMPool) -> set[int]:
    """Addresses of ``pool`` no endpoint gets: its gateway and aux addresses."""
    r = {int(ipaddress.ip_address(a)) for a in pool.aux_addresses.values()}
    if pool.gateway:
        r.add(int(ipaddress.ip_address(pool.gateway)))
    return r


def pool_of_requested(pools: Sequence[IPAMPool], requested: str, family: int,
                      network_name: str) -> tuple[str, IPAMPool]:
    """A static address checked against the pools (not against who holds it): the address as
    text and the pool it belongs to. Shared by the local allocator and global IPAM."""
    addr = parse_address(requested, family)
    pool = next((p for p in pools if addr in ipaddress.ip_network(p.subnet)), None)
    if pool is None:
        raise Invalid(f"no configured subnet or ip-range contain the IP address {addr}")
    net = ipaddress.ip_network(pool.subnet)
    if addr == net.network_address or (
            net.version == 4 and net.prefixlen < 31 and addr == net.broadcast_address):
        raise Invalid(f"invalid address {addr}: network or broadcast address of {net}")
    if int(addr) in reserved_addresses(pool):
        raise Conflict(f"Address already in use: {addr} in network {network_name}")
    return str(addr), pool


def lowest_free(pool: IPAMPool, used: Container[str]) -> str | None:
    """The lowest address of the pool's ip-range (else subnet) that is neither the network or
    broadcast address, nor reserved, nor in ``used``; None when the pool is full."""
    net = ipaddress.ip_network(pool.subnet)
    rng = ipaddress.ip_network(pool.ip_range) if pool.ip_range else net
    first = int(rng.network_address)
    last = int(rng.broadcast_address)
    # The subnet's own network and broadcast addresses are never handed out.
    if first == int(net.network_address):
        first += 1
    if net.version == 4 and net.prefixlen < 31 and last == int(net.broadcast_address):
        last -= 1
    reserved = reserved_addresses(pool)
    cls = type(net.network_address)
    for i in range(first, last + 1):
        if i in reserved:
            continue
        s = str(cls(i))
        if s not in used:
            return s
    return None


class Allocator:
    def __init__(self, store: IpamTable) -> None:
        """Only the store protocol's address table is needed: SQLite now, etcd for global
        networks, ``testing.fake_store.MemoryStore`` in tests."""
        self._store = store
        self._used: dict[str, dict[str, str]] = {}
        for network, address, owner in store.ipam_all():
            self._used.setdefault(network, {})[address] = owner

    def in_use(self, network_id: str) -> dict[str, str]:
        return dict(self._used.get(network_id, {}))

    def _pool_for(self, network: Network, family: int) -> IPAMPool | None:
        for p in network.pools:
            if ipaddress.ip_network(p.subnet).version == family:
                return p
        return None

    def allocate(self, network: Network, owner: str, family: int = 4,
                 requested: str | None = None) -> tuple[str, int, str | None]:
        """Return (address, prefixlen, gateway) and record it, or raise."""
        used = self._used.setdefault(network.id, {})
        if requested:
            addr, pool = pool_of_requested(network.pools, requested, family, network.name)
            if addr in used:
                raise Conflict(f"Address already in use: {addr} in network {network.name}")
        else:
            found = self._pool_for(network, family)
            if found is None:
                raise Invalid(f"network {network.name} has no IPv{family} subnet")
            pool = found
            free = lowest_free(pool, used)
            if free is None:
                raise Unavailable(f"no available IPv{family} addresses on network "
                                  f"{network.name}")
            addr = free
        self._claim(network.id, addr, owner)
        return addr, ipaddress.ip_network(pool.subnet).prefixlen, pool.gateway

    def _claim(self, network_id: str, address: str, owner: str) -> None:
        self._store.ipam_claim(network_id, address, owner)
        self._used.setdefault(network_id, {})[address] = owner

    def release(self, network_id: str, address: str) -> None:
        self._store.ipam_release(network_id, address)
        self._used.get(network_id, {}).pop(address, None)

    def release_network(self, network_id: str) -> None:
        self._store.ipam_release_network(network_id)
        self._used.pop(network_id, None)
