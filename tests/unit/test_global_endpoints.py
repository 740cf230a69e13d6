"""engine/global_endpoints.py over MemoryKV and the fake kernel: what a start or connect
claims and publishes in the cluster before its sandbox work, what an ended endpoint gives back
(off the request path, retried while the store is down), and what the restart sweep frees."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest
from cluster_support import synced

from nsnet.cluster import keys
from nsnet.cluster.ipam import NetworkClaim
from nsnet.cluster.membership import NodeInfo
from nsnet.drivers.overlay import OPT_VNI, OverlayDriver
from nsnet.engine.cluster import Cluster
from nsnet.engine.global_endpoints import GlobalEndpoints, mac_from_ip
from nsnet.engine.peers import PeerService
from nsnet.engine.registry import Registry
from nsnet.errors import Conflict, Unavailable
from nsnet.model import Attachment, Container, Endpoint, EndpointRequest, Network
from nsnet.testing.fake_kernel import FakeKernel
from nsnet.testing.fake_kv import MemoryKV
from nsnet.testing.fake_store import MemoryStore

ME = "0123456789abcdef0123456789abcdef"
OTHER = "f" * 32
NET_ID = "0e" * 32


async def _until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class World:
    """One host's GlobalEndpoints over a shared MemoryKV, with one overlay network."""

    def __init__(self, kv: MemoryKV) -> None:
        self.kv = kv
        node = NodeInfo(node_id=ME, vtep="192.0.2.11", vxlan_port=4789, hostname="h",
                        started="2026-01-01T00:00:00+00:00")
        self.cluster = Cluster(kv, node, node_id=ME, ttl=3, interval=0.05, retry=0.02)
        self.registry = Registry(MemoryStore())
        self.net = Network(id=NET_ID, name="ov", driver="overlay", created="", scope="global")
        self.registry.networks[NET_ID] = self.net
        self.peers = PeerService(kv, OverlayDriver(FakeKernel(), node.vtep), ME,
                                 self.registry.networks, retry=0.02)
        self.glob = GlobalEndpoints(self.cluster, self.peers, self.registry,
                                    lambda c, net, a: [c.name, *(a.request.aliases or [])],
                                    retry=0.02)

    async def start(self) -> None:
        await self.cluster.start()

        def record(claim: NetworkClaim) -> bytes:
            self.net.pools = list(claim.pools)
            self.net.options[OPT_VNI] = str(claim.vni)
            return b"{}"

        await self.cluster.ipam.create_network(NET_ID, "ov", [], record)
        await self.glob.start()

    async def stop(self) -> None:
        await self.glob.stop()
        await self.cluster.stop()

    def container(self, name: str, req: EndpointRequest | None = None) -> Container:
        c = Container(id=(name * 64)[:64], name=name, image="busybox", image_id="x",
                      created="", attachments=[Attachment(NET_ID, req or EndpointRequest())])
        self.registry.containers[c.id] = c
        return c

    def attach(self, c: Container, ep_id: str, ipv4: str) -> None:
        """What the sandbox service does with a claim (joined, stored)."""
        c.attachments[0].endpoint = Endpoint(id=ep_id, network_id=NET_ID, container_id=c.id,
                                             ifname="eth0", mac=mac_from_ip(ipv4), ipv4=ipv4,
                                             ipv4_prefixlen=24)

    async def values(self, prefix: str) -> dict[str, dict[str, object]]:
        held, _ = await self.kv.get_prefix(prefix)
        return {kv.key: json.loads(kv.value) for kv in held}


@contextlib.asynccontextmanager
async def _world(kv: MemoryKV) -> AsyncIterator[World]:
    w = World(kv)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


def test_mac_follows_the_address() -> None:
    assert mac_from_ip("10.0.0.2") == "02:42:0a:00:00:02"
    assert mac_from_ip("192.168.255.254") == "02:42:c0:a8:ff:fe"


@synced
async def test_prepare_claims_and_publishes_then_retire_gives_both_back() -> None:
    kv = MemoryKV()
    async with _world(kv) as w:
        c = w.container("web", EndpointRequest(aliases=["www"]))
        claims = await w.glob.prepare(c, [(c.attachments[0], w.net)])
        claim = claims[NET_ID]
        assert (claim.ipv4, claim.prefixlen) == ("10.0.0.2", 24)
        assert claim.mac == "02:42:0a:00:00:02"
        recs = await w.values(keys.endpoints(NET_ID))
        assert recs == {keys.endpoint(NET_ID, claim.endpoint_id): {
            "node": ME, "vtep": "192.0.2.11", "mac": claim.mac, "ipv4": "10.0.0.2",
            "ipv6": None, "container": c.id, "container_name": "web",
            "dns_names": ["web", "www"]}}
        held = await w.values(keys.addresses(NET_ID))
        assert held == {keys.address(NET_ID, "10.0.0.2"): {"endpoint": claim.endpoint_id,
                                                          "node": ME}}
        w.glob.done(claims.values())
        w.glob.retire(NET_ID, claim.endpoint_id, [claim.ipv4])
        await w.glob.flush()
        assert await w.values(keys.endpoints(NET_ID)) == {}
        assert await w.values(keys.addresses(NET_ID)) == {}


@synced
async def test_a_static_address_taken_elsewhere_is_a_conflict_leaving_nothing() -> None:
    kv = MemoryKV()
    async with _world(kv) as w:
        await w.cluster.ipam.allocate_address(NET_ID, "e" * 64, requested="10.0.0.9")
        c = w.container("web", EndpointRequest(ipv4_address="10.0.0.9"))
        with pytest.raises(Conflict):
            await w.glob.prepare(c, [(c.attachments[0], w.net)])
        await w.glob.flush()
        assert await w.values(keys.endpoints(NET_ID)) == {}
        assert list(await w.values(keys.addresses(NET_ID))) == [
            keys.address(NET_ID, "10.0.0.9")]


@synced
async def test_an_unreachable_store_is_a_503_before_anything_is_claimed() -> None:
    kv = MemoryKV()
    async with _world(kv) as w:
        kv.down()
        await _until(lambda: not w.cluster.reachable)
        c = w.container("web")
        with pytest.raises(Unavailable):
            await w.glob.prepare(c, [(c.attachments[0], w.net)])
        kv.up()
        await _until(lambda: w.cluster.reachable)
        assert await w.values(keys.addresses(NET_ID)) == {}


@synced
async def test_a_release_while_the_store_is_down_lands_when_it_returns() -> None:
    kv = MemoryKV()
    async with _world(kv) as w:
        c = w.container("web")
        claims = await w.glob.prepare(c, [(c.attachments[0], w.net)])
        w.glob.done(claims.values())
        kv.down()
        w.glob.retire(NET_ID, claims[NET_ID].endpoint_id, [claims[NET_ID].ipv4])
        await asyncio.sleep(0.1)  # retried meanwhile, nothing lost
        kv.up()
        await _until(lambda: not w.glob._queue)
        assert await w.values(keys.addresses(NET_ID)) == {}
        assert await w.values(keys.endpoints(NET_ID)) == {}


@synced
async def test_sweep_frees_only_this_hosts_orphans() -> None:
    kv = MemoryKV()
    async with _world(kv) as w:
        ipam = w.cluster.ipam
        live = w.container("live")
        await ipam.allocate_address(NET_ID, "a" * 64, requested="10.0.0.2")
        w.attach(live, "a" * 64, "10.0.0.2")
        await ipam.allocate_address(NET_ID, "b" * 64, requested="10.0.0.3")  # orphan
        starting = w.container("starting")
        claims = await w.glob.prepare(starting, [(starting.attachments[0], w.net)])  # .4
        other = Cluster(kv, NodeInfo(node_id=OTHER, vtep="192.0.2.12", vxlan_port=4789,
                                     hostname="h2", started=""), node_id=OTHER)
        await other.ipam.allocate_address(NET_ID, "c" * 64, requested="10.0.0.5")
        assert await w.glob.sweep() == 1
        left = {k.rsplit("/", 1)[1] for k in await w.values(keys.addresses(NET_ID))}
        assert left == {"10.0.0.2", "10.0.0.4", "10.0.0.5"}
        w.glob.done(claims.values())
        assert await w.glob.sweep() == 1  # no longer in flight, never attached
