"""Global (overlay) networks in the engine, on MemoryKV: several "hosts" (a registry and a
mirror each) over one store. Made on one, seen on all with one ID; names, subnets and VNIs
never twice when hosts race; removal refused while any host uses the network, then gone
everywhere; the mirror resynchronises after an outage and a compaction; a restart finds its
networks before anything else runs; without a cluster an overlay is refused."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cluster_support import InterleavingKV, synced

from nsnet.cluster import keys
from nsnet.cluster.ipam import GlobalIpam
from nsnet.engine.config import EngineConfig
from nsnet.engine.global_networks import (
    NO_CLUSTER,
    OPT_MTU,
    OPT_VNI,
    GlobalNetworks,
    decode,
    encode,
)
from nsnet.engine.networks import NetworkCreate, NetworkService
from nsnet.engine.registry import Registry
from nsnet.engine.resolver_hooks import NoResolver
from nsnet.engine.wiring import default_drivers
from nsnet.errors import Conflict, Forbidden, Invalid, Unavailable
from nsnet.ipam.allocator import Allocator
from nsnet.model import IPAMPool, Network
from nsnet.store.kv import KV, KeyValue
from nsnet.testing.fake_kernel import FakeKernel
from nsnet.testing.fake_kv import MemoryKV
from nsnet.testing.fake_store import MemoryStore


class RecordingDriver:
    """The overlay driver's place: records which networks this host made and removed."""

    has_endpoints = True

    def __init__(self) -> None:
        self.made: list[str] = []
        self.deleted: list[str] = []

    def validate(self, net: Network) -> None:
        if net.options.get(OPT_MTU) == "9999":
            raise Invalid("MTU too large for the underlay")

    def create_network(self, net: Network) -> None:
        self.made.append(net.name)

    def delete_network(self, net: Network) -> None:
        self.deleted.append(net.name)

    def join(self, net: Network, ep: object, sb: object) -> None:
        raise NotImplementedError

    def leave(self, net: Network, ep: object, sb: object) -> None:
        raise NotImplementedError


class Host:
    def __init__(self, kv: KV, node: str, names: dict[str, str]) -> None:
        self.store = MemoryStore()
        self.registry = Registry(self.store)
        self.driver = RecordingDriver()
        self.ipam = GlobalIpam(kv, node)
        self.glob = GlobalNetworks(kv, self.ipam, self.registry,
                                   {"overlay": self.driver},  # type: ignore[dict-item]
                                   NoResolver(), node_names=lambda: names, retry=0.01)

    def names(self) -> dict[str, str]:
        return {n.name: n.id for n in self.registry.networks.values()}


def overlay(name: str, **kw: object) -> Network:
    """A create request as NetworkService.create builds it (scope as the client sent it)."""
    kw.setdefault("scope", "")
    return Network(id="", name=name, driver="overlay", created="", **kw)  # type: ignore[arg-type]


async def until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


async def hosts(kv: KV, n: int) -> list[Host]:
    names = {f"node-{i}": f"h{i + 1} (192.0.2.{11 + i})" for i in range(n)}
    out = [Host(kv, f"node-{i}", names) for i in range(n)]
    for h in out:
        await h.glob.start()
    return out


async def stop(hs: list[Host]) -> None:
    for h in hs:
        await h.glob.stop()


@synced
async def test_made_on_one_host_seen_on_every_host_with_one_id() -> None:
    kv = MemoryKV()
    a, b, c = hs = await hosts(kv, 3)
    net = await a.glob.create(overlay("ovnet", labels={"k": "v"}, options={OPT_MTU: "1400"}),
                              [])
    await until(lambda: "ovnet" in b.names() and "ovnet" in c.names(), "the mirrors")
    for h in hs:
        seen = h.registry.networks[net.id]
        assert (seen.scope, seen.driver, seen.labels) == ("global", "overlay", {"k": "v"})
        assert [(p.subnet, p.gateway) for p in seen.pools] == [("10.0.0.0/24", "10.0.0.1")]
        assert seen.options == {OPT_MTU: "1400", OPT_VNI: "4096"}
        assert h.driver.made == ["ovnet"]  # each host's driver once, from the create or watch
        assert h.store.list("network") == []  # etcd is the truth, never the local store
    stored = await kv.get(keys.network(net.id))
    assert stored is not None and decode(stored) == net
    await stop(hs)


@synced
async def test_racing_hosts_never_share_a_name_subnet_or_vni() -> None:
    backend = MemoryKV()
    rng = random.Random(7)
    hs = [Host(InterleavingKV(backend, rng), f"node-{i}", {})  # type: ignore[arg-type]
          for i in range(4)]
    same = await asyncio.gather(*(h.glob.create(overlay("same"), []) for h in hs),
                                return_exceptions=True)
    assert sum(isinstance(r, Network) for r in same) == 1
    assert all(isinstance(r, Conflict) for r in same if not isinstance(r, Network))
    made = await asyncio.gather(*(h.glob.create(overlay(f"ov{i}"), [])
                                  for i, h in enumerate(hs)))
    nets = [n for n in [*same, *made] if isinstance(n, Network)]
    assert len({n.pools[0].subnet for n in nets}) == len({n.options[OPT_VNI] for n in nets}) \
        == len(nets) == 5


@synced
async def test_removal_refused_while_any_host_uses_it_then_gone_everywhere() -> None:
    kv = MemoryKV()
    a, b, c = hs = await hosts(kv, 3)
    net = await a.glob.create(overlay("ovnet"), [])
    await until(lambda: all("ovnet" in h.names() for h in hs), "the mirrors")
    claim = await b.ipam.allocate_address(net.id, "ep1")
    with pytest.raises(Forbidden, match=r"on hosts h2 \(192\.0\.2\.12\)"):
        await c.glob.remove(c.registry.networks[net.id])
    # An endpoint record alone (its address not yet claimed) also counts.
    await b.ipam.release_address(net.id, claim.address)
    await kv.put(keys.endpoint(net.id, "ep2"), b'{"node": "node-0"}')
    with pytest.raises(Forbidden, match=r"on hosts h1 \(192\.0\.2\.11\)"):
        await c.glob.remove(c.registry.networks[net.id])
    await kv.delete(keys.endpoint(net.id, "ep2"))
    await c.glob.remove(c.registry.networks[net.id])
    await until(lambda: not any("ovnet" in h.names() for h in hs), "the removal everywhere")
    assert [h.driver.deleted for h in hs] == [["ovnet"]] * 3
    held, _ = await kv.get_prefix(keys.ROOT)
    assert [k.key for k in held] == [keys.SUBNET_EPOCH]
    # The name is free again, cluster-wide.
    await b.glob.create(overlay("ovnet"), [])
    await stop(hs)


@synced
async def test_store_outage_answers_unavailable_and_the_mirror_resyncs() -> None:
    kv = MemoryKV()
    a, b = hs = await hosts(kv, 2)
    first = await a.glob.create(overlay("ov1"), [])
    await until(lambda: "ov1" in b.names(), "the first network")
    kv.down()
    with pytest.raises(Unavailable):
        await a.glob.create(overlay("ov2"), [])
    await until(lambda: not b.glob.synced, "the broken watch")
    assert "ov1" in b.names()  # an outage tears nothing down
    kv.up()
    other = Host(kv, "node-9", {})
    await other.glob.start()
    await other.glob.remove(other.registry.networks[first.id])
    third = await other.glob.create(overlay("ov3"), [])
    await until(lambda: b.glob.synced and "ov1" not in b.names() and
                b.names().get("ov3") == third.id, "the resync")
    assert b.driver.deleted == ["ov1"] and a.driver.deleted == ["ov1"]
    await stop([*hs, other])


@synced
async def test_watch_relists_after_compaction_and_after_unavailable() -> None:
    kv = MemoryKV()
    (a,) = await hosts(kv, 1)
    watcher = Host(kv, "node-w", {})
    await watcher.glob.start()
    kv.down()
    await until(lambda: not watcher.glob.synced, "the broken watch")
    kv.up()
    one = await a.glob.create(overlay("ov1"), [])
    await until(lambda: watcher.glob.synced and "ov1" in watcher.names(), "the resync")
    # History compacted past the revision the watch would resume from: list again.
    kv.down()
    kv.up()
    await a.glob.remove(a.registry.networks[one.id])
    two = await a.glob.create(overlay("ov2"), [])
    kv.compact(kv.revision)
    await until(lambda: watcher.names().get("ov2") == two.id and "ov1" not in watcher.names(),
                "the re-list after compaction")
    await stop([a, watcher])


@synced
async def test_restart_lists_global_networks_before_returning() -> None:
    kv = MemoryKV()
    (a,) = await hosts(kv, 1)
    net = await a.glob.create(overlay("ovnet"), [IPAMPool(subnet="10.9.0.0/24")])
    await a.glob.stop()
    again = Host(kv, "node-0", {})
    await again.glob.start()  # no waiting: the first listing is part of start
    assert again.registry.networks[net.id].pools[0].subnet == "10.9.0.0/24"
    assert again.registry.networks[net.id].user_subnets
    await again.glob.stop()


@synced
async def test_bad_requests_are_refused_before_anything_is_claimed() -> None:
    kv = MemoryKV()
    (a,) = await hosts(kv, 1)
    local = Network(id="f" * 64, name="br", driver="bridge", created="",
                    pools=[IPAMPool(subnet="10.0.0.0/24", gateway="10.0.0.1")])
    a.registry.save_network(local)
    cases: list[tuple[Awaitable[Network], type[Exception], str]] = [
        (a.glob.create(overlay("x", options={"com.docker.network.bridge.name": "b"}), []),
         Invalid, "does not support option"),
        (a.glob.create(overlay("x", options={OPT_MTU: "big"}), []), Invalid, "invalid MTU"),
        (a.glob.create(overlay("x", options={OPT_MTU: "9999"}), []), Invalid, "underlay"),
        (a.glob.create(overlay("x", options={OPT_VNI: "12"}), []), Invalid, "VXLAN id"),
        (a.glob.create(overlay("x", scope="local"), []), Invalid, "scope"),
        (a.glob.create(overlay("x", enable_ipv6=True), []), Invalid, "IPv6"),
        (a.glob.create(overlay("bad/name"), []), Invalid, "invalid network name"),
        (a.glob.create(overlay("host"), []), Forbidden, "predefined"),
        (a.glob.create(overlay("br"), []), Conflict, "already exists"),
    ]
    for call, kind, match in cases:
        with pytest.raises(kind, match=match):
            await call
    held, _ = await kv.get_prefix(keys.ROOT)
    assert held == []
    # A local network's subnet is avoided by the automatic pick.
    net = await a.glob.create(overlay("ov", scope="swarm"), [])
    assert net.pools[0].subnet == "10.0.1.0/24" and net.scope == "global"
    await a.glob.stop()


def test_unreadable_records_are_skipped() -> None:
    good = Network(id="a" * 64, name="ok", driver="overlay", created="", scope="global")

    assert decode(KeyValue(keys.network(good.id), encode(good), 2, 2, 0)) is not None
    newer = encode(good).replace(b'"name":"ok"', b'"name":"ok","future":1')
    assert decode(KeyValue(keys.network(good.id), newer, 2, 2, 0)) == good  # field ignored
    for value in (b"[]", b"{", b'{"id": "' + b"b" * 64 + b'"}', encode(good)):
        kv = KeyValue(keys.network("b" * 64), value, 2, 2, 0)
        assert decode(kv) is None  # not an object, broken, missing fields, id not its key


def test_overlay_without_a_cluster_is_refused_and_makes_nothing(tmp_path: Path) -> None:
    store = MemoryStore()
    registry = Registry(store)
    kernel = FakeKernel(exec_root=tmp_path)
    config = EngineConfig(data_root=tmp_path / "d", exec_root=tmp_path / "r",
                          host_resolv_conf=tmp_path / "resolv.conf")
    svc = NetworkService(registry, store, Allocator(store), kernel,
                         default_drivers(kernel, list), NoResolver(), config)
    before = kernel.objects()
    for call in (lambda: svc.create_network(NetworkCreate(name="ov", driver="overlay")),
                 lambda: asyncio.run(svc.create(NetworkCreate(name="ov", driver="overlay")))):
        with pytest.raises(Forbidden) as e:
            call()
        assert e.value.message == NO_CLUSTER
    assert kernel.objects() == before and store.list("network") == []
