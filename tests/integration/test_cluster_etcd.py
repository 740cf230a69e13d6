"""Global IPAM and node membership on a real etcd: several EtcdKV clients (as several hosts'
daemons would hold) racing for names, subnets, VNIs and addresses, and a node that stops
keeping alive leaving the others' views once its lease runs out.

etcd runs on 127.0.0.1 in the root namespace with free ports (``nsnet.testing.etcd``); no
kernel object is made, and the fixture checks that no etcd process or data dir is left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator

import pytest

from nsnet.cluster import keys
from nsnet.cluster.ipam import AddressClaim, GlobalIpam, NetworkClaim
from nsnet.cluster.membership import Membership, NodeInfo
from nsnet.errors import Conflict, Forbidden
from nsnet.model import IPAMPool
from nsnet.store.etcd import EtcdKV
from nsnet.testing.etcd import EtcdCluster, etcd_cluster

pytestmark = pytest.mark.root  # runs etcd; kept with the integration tier


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with etcd_cluster(1) as c:
        yield c


def record(claim: NetworkClaim) -> bytes:
    return f'{{"name": "{claim.name}", "vni": {claim.vni}}}'.encode()


async def wipe(kv: EtcdKV) -> None:
    held, _ = await kv.get_prefix(keys.ROOT)
    for item in held:
        await kv.delete(item.key)


def test_racing_hosts_never_share_a_name_subnet_vni_or_address(etcd: EtcdCluster) -> None:
    async def body() -> None:
        clients = [EtcdKV(etcd.endpoints) for _ in range(4)]
        try:
            await wipe(clients[0])
            ipams = [GlobalIpam(kv, f"node-{i}") for i, kv in enumerate(clients)]
            wanted = ["", "", "", "", "10.0.0.0/16", "10.0.1.0/24", "", "10.0.2.0/23"]
            results = await asyncio.gather(*(
                ipams[i % 4].create_network(f"{i:064x}", f"ov{i % 5}",
                                            [IPAMPool(subnet=s)] if s else [], record)
                for i, s in enumerate(wanted)), return_exceptions=True)
            won = [r for r in results if isinstance(r, NetworkClaim)]
            lost = [r for r in results if not isinstance(r, NetworkClaim)]
            assert all(isinstance(r, (Conflict, Forbidden)) for r in lost), lost
            assert len(won) >= 4
            assert len({c.name for c in won}) == len({c.vni for c in won}) == len(won)
            nets = [ipaddress.ip_network(p.subnet) for c in won for p in c.pools]
            assert not [(a, b) for i, a in enumerate(nets) for b in nets[i + 1:]
                        if a.overlaps(b)]

            target = won[0]
            claims = await asyncio.gather(*(
                ipams[i % 4].allocate_address(target.network_id, f"ep{i}") for i in range(24)),
                return_exceptions=True)
            addresses = [c.address for c in claims if isinstance(c, AddressClaim)]
            assert len(addresses) == 24 == len(set(addresses)), claims
            held, _ = await clients[0].get_prefix(keys.addresses(target.network_id))
            assert sorted(keys.last(h.key) for h in held) == sorted(addresses)

            with pytest.raises(Forbidden, match="has active endpoints on nodes node-0"):
                await ipams[3].remove_network(target.network_id)
            await asyncio.gather(*(ipams[0].release_address(target.network_id, a)
                                   for a in addresses))
            for c in won:
                assert await ipams[1].remove_network(c.network_id)
            left, _ = await clients[0].get_prefix(keys.ROOT)
            assert [k.key for k in left] == [keys.SUBNET_EPOCH]
        finally:
            for kv in clients:
                await kv.close()

    asyncio.run(body())


def test_a_node_that_stops_keeping_alive_leaves_the_others_views(etcd: EtcdCluster) -> None:
    async def body() -> None:
        kv_a, kv_b = EtcdKV(etcd.endpoints), EtcdKV(etcd.endpoints)
        me = {name: NodeInfo(node_id=f"id-{name}", vtep=vtep, vxlan_port=4789, hostname=name,
                             started="2026-01-01T00:00:00Z")
              for name, vtep in (("a", "192.0.2.1"), ("b", "192.0.2.2"))}
        views: list[dict[str, NodeInfo]] = []
        a = Membership(kv_a, me["a"], ttl=3, interval=1.0, retry=0.2, on_change=views.append)
        b = Membership(kv_b, me["b"], ttl=3, interval=1.0, retry=0.2)
        try:
            await a.start()
            await b.start()
            end = time.monotonic() + 5
            while sorted(a.nodes()) != ["id-a", "id-b"]:
                assert time.monotonic() < end, a.nodes()
                await asyncio.sleep(0.02)
            await b.set_containers(4)
            await asyncio.sleep(0.2)
            assert a.nodes()["id-b"].containers == 4
            await asyncio.sleep(3.5)  # longer than the TTL: keepalives must hold b
            assert sorted(a.nodes()) == ["id-a", "id-b"]
            await b.stop()  # b's host dies: no revoke
            gone = time.monotonic()
            while "id-b" in a.nodes():
                assert time.monotonic() - gone < 3 + 2, "b outlived its lease in a's view"
                await asyncio.sleep(0.05)
            assert all("id-a" in v for v in views[1:])
        finally:
            await a.stop(leave=True)
            await b.stop()
            await kv_a.close()
            await kv_b.close()

    asyncio.run(body())
