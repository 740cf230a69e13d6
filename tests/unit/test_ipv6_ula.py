"""The default IPv6 pool (Docker's rule) and IPv6-only networks in the engine, over fakes."""

from __future__ import annotations

import functools
import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_engine_usecases import World

from nsnet.engine.config import EngineConfig
from nsnet.engine.networks import DEFAULT_BRIDGE_CIDR_V6, DEFAULT_BRIDGE_IPV6, NetworkCreate
from nsnet.errors import Invalid
from nsnet.ipam.ula import first_free_64, load_or_create_engine_id, ula_base
from nsnet.model import IPAMPool
from nsnet.testing.fake_kernel import HOST
from nsnet.testing.fake_store import MemoryStore


def test_ula_base_matches_moby_vectors() -> None:
    # The two cases of moby's TestDeriveULABaseNetwork (libnetwork/ipamutils).
    assert ula_base("") == ipaddress.ip_network("fd42:98fc:1c14::/48")
    assert ula_base("499d4bc0-b0b3-416f-b1ee-cf6486315593") == \
        ipaddress.ip_network("fd62:fb69:18af::/48")


def test_first_free_64_skips_used_blocks_and_ignores_ipv4() -> None:
    base = ipaddress.IPv6Network("fd62:fb69:18af::/48")
    n = ipaddress.ip_network
    assert first_free_64(base, []) == n("fd62:fb69:18af::/64")
    assert first_free_64(base, [n("fd62:fb69:18af::/64"), n("10.0.0.0/8")]) == \
        n("fd62:fb69:18af:1::/64")
    # A user's /52 inside the pool is jumped over in one step; a hole below it is used.
    used = [n("fd62:fb69:18af::/64"), n("fd62:fb69:18af:1000::/52"), n("fd62:fb69:18af:2::/64")]
    assert first_free_64(base, used) == n("fd62:fb69:18af:1::/64")
    used = [n("fd62:fb69:18af::/52")]
    assert first_free_64(base, used) == n("fd62:fb69:18af:1000::/64")
    assert first_free_64(base, [n("fd62:fb69:18af::/48")]) is None
    assert first_free_64(base, [n("fd00::/8")]) is None


def test_engine_id_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = load_or_create_engine_id(tmp_path)
    assert first == load_or_create_engine_id(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "engine-id").st_mode) == 0o600
    (tmp_path / "engine-id").write_text("499d4bc0-b0b3-416f-b1ee-cf6486315593\n")
    assert load_or_create_engine_id(tmp_path) == "499d4bc0-b0b3-416f-b1ee-cf6486315593"
    assert not (tmp_path / "engine-id.tmp").exists()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def _v6_subnet(w: World, name: str) -> ipaddress.IPv6Network:
    net = w.engine.registry.find_network(name)
    subs = [ipaddress.ip_network(p.subnet) for p in net.pools]
    v6 = [s for s in subs if isinstance(s, ipaddress.IPv6Network)]
    assert len(v6) == 1
    return v6[0]


def test_ipv6_networks_without_subnet_take_the_engines_ula_64s(world: World,
                                                               tmp_path: Path) -> None:
    world.run(world.engine.create_network(NetworkCreate(name="a", enable_ipv6=True)))
    base = ula_base((tmp_path / "data" / "engine-id").read_text().strip())
    a = _v6_subnet(world, "a")
    assert a == next(base.subnets(new_prefix=64))
    # A user's subnet in the pool is skipped; the next default one follows it.
    world.run(world.engine.create_network(NetworkCreate(
        name="u", enable_ipv6=True,
        pools=[IPAMPool(subnet=str(list(base.subnets(new_prefix=64))[1]))])))
    world.run(world.engine.create_network(NetworkCreate(name="b", enable_ipv6=True)))
    assert _v6_subnet(world, "b") == list(base.subnets(new_prefix=64))[2]
    gw = [p.gateway for p in world.engine.registry.find_network("b").pools if ":" in p.subnet]
    assert gw == [str(list(base.subnets(new_prefix=64))[2].network_address + 1)]


def test_ipv6_only_network_gives_endpoints_no_ipv4(world: World) -> None:
    world.run(world.engine.create_network(NetworkCreate(
        name="six", enable_ipv4=False, enable_ipv6=True,
        pools=[IPAMPool(subnet="fd00:66::/64")])))
    net = world.engine.registry.find_network("six")
    assert [p.subnet for p in net.pools] == ["fd00:66::/64"]
    cid = world.running("x", "six")
    ep = world.engine.registry.containers[cid].attachments[0].endpoint
    assert ep is not None
    assert (ep.ipv4, ep.gateway, ep.ipv6, ep.ipv6_gateway) == \
        (None, None, "fd00:66::2", "fd00:66::1")


def test_ipv4_subnet_on_an_ipv6_only_network_is_refused(world: World) -> None:
    before = world.snapshot()
    with pytest.raises(Invalid, match="IPv4 is disabled"):
        world.run(world.engine.create_network(NetworkCreate(
            name="bad", enable_ipv4=False, enable_ipv6=True,
            pools=[IPAMPool(subnet="10.66.0.0/24")])))
    with pytest.raises(Invalid, match="needs IPv4 or IPv6"):
        world.run(world.engine.create_network(NetworkCreate(name="none6", enable_ipv4=False)))
    assert world.snapshot() == before


def test_the_engine_id_survives_a_restart(tmp_path: Path) -> None:
    """The default prefix is the host's: a second daemon life on the same data root derives
    the same /48 (the first network's /64 is free again once it is removed)."""
    w = World(tmp_path)
    try:
        w.run(w.engine.create_network(NetworkCreate(name="a", enable_ipv6=True)))
        first = _v6_subnet(w, "a")
    finally:
        w.close()
    w = World(tmp_path)
    try:
        w.run(w.engine.create_network(NetworkCreate(name="b", enable_ipv6=True)))
        assert _v6_subnet(w, "b").supernet(new_prefix=48) == first.supernet(new_prefix=48)
    finally:
        w.close()


def _world_with(tmp: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> World:
    """A World whose daemon was given dockerd's default-bridge flags (EngineConfig.extra)."""
    import test_engine_usecases

    monkeypatch.setattr(test_engine_usecases, "EngineConfig",
                        functools.partial(EngineConfig, extra=dict(extra)))
    return World(tmp)


def test_default_bridge_with_ipv6_and_fixed_cidr(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    w = _world_with(tmp_path, monkeypatch, **{DEFAULT_BRIDGE_IPV6: True,
                                              DEFAULT_BRIDGE_CIDR_V6: "fd00:17::/64"})
    try:
        net = w.engine.registry.find_network("bridge")
        assert net.enable_ipv6
        assert [(p.subnet, p.gateway) for p in net.pools] == \
            [("172.17.0.0/16", "172.17.0.1"), ("fd00:17::/64", "fd00:17::1")]
        cid = w.running("x", "bridge")
        ep = w.engine.registry.containers[cid].attachments[0].endpoint
        assert ep is not None and (ep.ipv4, ep.ipv6) == ("172.17.0.2", "fd00:17::2")
        # The gateway on the bridge, and the v6 subnet in what the firewall is given.
        assert (HOST, "nsnet0", "fd00:17::1/64") in w.kernel.objects().addresses
        assert "fd00:17::/64" in w.kernel.firewall.networks[net.short_id].subnets
    finally:
        w.close()


def test_default_bridge_gains_ipv6_on_a_later_start(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge network was made by a daemon without --ipv6; the next start with --ipv6
    (no --fixed-cidr-v6) gives it a /64 of the engine's ULA, kept in the store."""
    store = MemoryStore()
    import test_engine_usecases

    monkeypatch.setattr(test_engine_usecases, "MemoryStore", lambda: store)
    w = World(tmp_path)
    try:
        assert not w.engine.registry.find_network("bridge").enable_ipv6
    finally:
        w.close()
    w = _world_with(tmp_path, monkeypatch, **{DEFAULT_BRIDGE_IPV6: True})
    try:
        net = w.engine.registry.find_network("bridge")
        base = ula_base((tmp_path / "data" / "engine-id").read_text().strip())
        assert net.enable_ipv6 and net.pools[1].subnet == str(next(base.subnets(new_prefix=64)))
        # Reconcile, right after, put the gateway on the bridge.
        assert (HOST, "nsnet0", f"{base.network_address + 1}/64") in w.kernel.objects().addresses
        assert any(net.pools[1].subnet in str(d) for d in store.list("network"))
    finally:
        w.close()
