"""The allocator and Docker's pool choice, without a kernel."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nsnet.errors import Conflict, Forbidden, Invalid, Unavailable
from nsnet.ipam.allocator import Allocator, pick_subnet, validate_pools
from nsnet.model import IPAMPool, Network
from nsnet.store.base import Store
from nsnet.store.local import LocalStore
from nsnet.testing.fake_store import MemoryStore


def net(pools: list[IPAMPool], user: bool = True) -> Network:
    return Network(id="n" * 64, name="lab", driver="bridge", created="", pools=pools,
                   user_subnets=user)


def n4(s: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(s)


def test_pick_subnet_follows_docker_pools() -> None:
    assert str(pick_subnet([], [])) == "172.17.0.0/16"
    assert str(pick_subnet([n4("172.17.0.0/16")], [])) == "172.18.0.0/16"
    # A host route inside a candidate skips it.
    assert str(pick_subnet([n4("172.17.0.0/16")], [n4("172.18.5.0/24")])) == "172.19.0.0/16"
    used = [n4(f"172.{i}.0.0/16") for i in range(17, 32)]
    assert str(pick_subnet(used, [])) == "192.168.0.0/20"
    used += [n4(f"192.168.{i * 16}.0/20") for i in range(16)]
    with pytest.raises(Forbidden, match="non-overlapping IPv4 address pool"):
        pick_subnet(used, [])


def test_validate_pools_normalises_and_refuses() -> None:
    out = validate_pools([IPAMPool(subnet="fd00:1::/64"), IPAMPool(subnet="10.0.0.0/24",
                                                                   gateway="10.0.0.254")])
    assert [p.subnet for p in out] == ["10.0.0.0/24", "fd00:1::/64"]  # IPv4 first
    with pytest.raises(Invalid, match=r"should be 10\.0\.0\.0/24"):
        validate_pools([IPAMPool(subnet="10.0.0.1/24")])
    with pytest.raises(Invalid, match="not in subnet"):
        validate_pools([IPAMPool(subnet="10.0.0.0/24", gateway="10.0.1.1")])
    with pytest.raises(Invalid, match="overlaps"):
        validate_pools([IPAMPool(subnet="10.0.0.0/16"), IPAMPool(subnet="10.0.3.0/24")])
    with pytest.raises(Invalid, match="invalid IPv4 address"):
        validate_pools([IPAMPool(subnet="10.0.0.0/24", gateway="10.0.0.x")])
    with pytest.raises(Invalid, match="not a CIDR"):
        validate_pools([IPAMPool(subnet="banana")])


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_lowest_free_reserved_and_persistent(tmp_path: Path, kind: str) -> None:
    """The allocator needs only the store protocol: the same results over either store."""
    store: Store = LocalStore(tmp_path / "db") if kind == "local" else MemoryStore()
    a = Allocator(store)
    n = net([IPAMPool(subnet="10.30.0.0/24", gateway="10.30.0.1", ip_range="10.30.0.0/29",
                      aux_addresses={"x": "10.30.0.3"})])
    got = [a.allocate(n, f"ep{i}")[0] for i in range(4)]
    assert got == ["10.30.0.2", "10.30.0.4", "10.30.0.5", "10.30.0.6"]
    # .7 ends the range but is not the subnet's broadcast: it is usable, then nothing is.
    assert a.allocate(n, "last")[0] == "10.30.0.7"
    with pytest.raises(Unavailable):
        a.allocate(n, "full")
    a.release(n.id, "10.30.0.4")
    assert a.allocate(n, "again")[0] == "10.30.0.4"
    # Static: inside the subnet (outside the range is fine), never twice, never reserved.
    assert a.allocate(n, "s", requested="10.30.0.100")[0] == "10.30.0.100"
    with pytest.raises(Conflict):
        a.allocate(n, "s2", requested="10.30.0.100")
    with pytest.raises(Conflict):
        a.allocate(n, "s3", requested="10.30.0.3")
    with pytest.raises(Invalid, match="no configured subnet"):
        a.allocate(n, "s4", requested="10.31.0.5")
    # A new allocator over the same store sees every allocation.
    b = Allocator(store)
    assert set(b.in_use(n.id)) == set(a.in_use(n.id))
    with pytest.raises(Conflict):
        b.allocate(n, "s5", requested="10.30.0.2")
    store.close()


def test_store_refuses_a_second_owner(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "db")
    store.ipam_claim("n", "10.0.0.2", "a")
    with pytest.raises(Conflict):
        store.ipam_claim("n", "10.0.0.2", "b")
    store.close()
