"""The pure allocation functions global IPAM shares with the local allocator: the subnet pick
over Docker's global pool and the lowest-free address, checked against brute force."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from nsnet.errors import Conflict
from nsnet.ipam.allocator import (
    DEFAULT_POOLS,
    GLOBAL_POOLS,
    IPNetwork,
    lowest_free,
    pick_subnet,
    pool_of_requested,
)
from nsnet.model import IPAMPool


def brute_pick(used: list[IPNetwork], pools: tuple[tuple[str, int], ...]) -> IPNetwork:
    """The old linear scan: every candidate against every used network."""
    taken = [(int(u.network_address), int(u.broadcast_address)) for u in used]
    for base, size in pools:
        net = ipaddress.IPv4Network(base)
        step = 1 << (32 - size)
        for lo in range(int(net.network_address), int(net.broadcast_address) + 1, step):
            if not any(a <= lo + step - 1 and lo <= b for a, b in taken):
                return ipaddress.IPv4Network((lo, size))
    raise AssertionError("the test's networks never fill a pool")


def test_global_pool_is_docker_overlay_default() -> None:
    assert str(pick_subnet([], [], GLOBAL_POOLS)) == "10.0.0.0/24"
    used = [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("10.0.2.0/23")]
    assert str(pick_subnet(used, [], GLOBAL_POOLS)) == "10.0.1.0/24"
    # A wide user subnet is jumped over, and a host route counts as taken.
    used = [ipaddress.ip_network("10.0.0.0/16")]
    assert str(pick_subnet(used, [ipaddress.ip_network("10.1.0.0/24")],
                           GLOBAL_POOLS)) == "10.1.1.0/24"


def test_pick_from_a_nearly_full_global_pool_is_fast_enough() -> None:
    """65,535 taken /24s: the bisect finds the last one (the linear scan took minutes)."""
    used = [ipaddress.IPv4Network((0x0A000000 + (i << 8), 24)) for i in range(65535)]
    assert str(pick_subnet(used, [], GLOBAL_POOLS)) == "10.255.255.0/24"


# /16 or longer: a dozen of them never fill a pool, and the brute force stays quick.
slash = st.integers(min_value=16, max_value=28)
octets = st.integers(min_value=0, max_value=(1 << 24) - 1)


@st.composite
def nets(draw: st.DrawFn) -> IPNetwork:
    base = draw(st.sampled_from([0x0A000000, 0xAC100000, 0xC0A80000]))
    prefix = draw(slash)
    return ipaddress.IPv4Network((base + draw(octets), prefix), strict=False)


@settings(max_examples=150, deadline=None)
@given(st.lists(nets(), max_size=12), st.sampled_from([GLOBAL_POOLS, DEFAULT_POOLS]))
def test_pick_subnet_equals_brute_force(used: list[IPNetwork],
                                        pools: tuple[tuple[str, int], ...]) -> None:
    assert pick_subnet(used, [], pools) == brute_pick(used, pools)


def test_lowest_free_honours_range_gateway_aux() -> None:
    pool = IPAMPool(subnet="10.0.0.0/24", gateway="10.0.0.1", ip_range="10.0.0.0/29",
                    aux_addresses={"router": "10.0.0.2"})
    assert lowest_free(pool, set()) == "10.0.0.3"
    assert lowest_free(pool, {"10.0.0.3", "10.0.0.4"}) == "10.0.0.5"
    assert lowest_free(pool, {f"10.0.0.{i}" for i in range(3, 8)}) is None
    # The subnet's broadcast is never handed out, even inside an ip-range ending there.
    top = IPAMPool(subnet="10.0.0.0/24", gateway="10.0.0.1", ip_range="10.0.0.252/30")
    assert lowest_free(top, {"10.0.0.252", "10.0.0.253", "10.0.0.254"}) is None


def test_requested_address_checks() -> None:
    pools = [IPAMPool(subnet="10.0.0.0/24", gateway="10.0.0.1",
                      aux_addresses={"r": "10.0.0.9"})]
    assert pool_of_requested(pools, "10.0.0.7", 4, "ov")[0] == "10.0.0.7"
    for taken in ("10.0.0.1", "10.0.0.9"):
        try:
            pool_of_requested(pools, taken, 4, "ov")
        except Conflict as e:
            assert e.message == f"Address already in use: {taken} in network ov"
        else:
            raise AssertionError(f"{taken} was handed out")
