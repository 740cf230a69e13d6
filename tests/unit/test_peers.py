"""The peer service over MemoryKV and the fake kernel: remote endpoints in, entries out.

Each test drives the store the way other hosts would (records put and deleted, nodes coming
and going, the store going down and coming back) and reads the result from the fake kernel's
VXLAN entries and from a listener standing for the embedded DNS.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from cluster_support import synced

from nsnet.cluster import keys
from nsnet.cluster.endpoints import EndpointRecord, endpoint_record
from nsnet.cluster.membership import NodeInfo
from nsnet.drivers.overlay import OPT_VNI, OverlayDriver
from nsnet.engine.peers import PeerService
from nsnet.errors import Unavailable
from nsnet.kernel.api import OverlayPeer
from nsnet.model import Endpoint, IPAMPool, Network
from nsnet.store.kv import Compacted, WatchEvent
from nsnet.testing.fake_kernel import FakeKernel
from nsnet.testing.fake_kv import MemoryKV

ME, N2, N3 = "me", "n2", "n3"
VTEPS = {ME: "192.0.2.11", N2: "192.0.2.12", N3: "192.0.2.13"}
VNI = 4096
NET_ID = "0f" * 32


def node(node_id: str, vtep: str | None = None) -> NodeInfo:
    return NodeInfo(node_id=node_id, vtep=vtep or VTEPS[node_id], vxlan_port=4789,
                    hostname=node_id, started="")


def view(*ids: str) -> dict[str, NodeInfo]:
    return {i: node(i) for i in ids}


def rec(n: int, node_id: str = N2, network_id: str = NET_ID) -> EndpointRecord:
    return EndpointRecord(network_id=network_id, endpoint_id=f"{n:064x}", node_id=node_id,
                          vtep=VTEPS[node_id], mac=f"02:42:0a:00:00:{n:02x}",
                          ipv4=f"10.0.0.{n}", container_name=f"c{n}", dns_names=(f"c{n}",))


def entry(r: EndpointRecord, vtep: str | None = None) -> OverlayPeer:
    assert r.ipv4 is not None
    return OverlayPeer(r.mac, r.ipv4, vtep or VTEPS[r.node_id])


class Names:
    """A listener standing for the embedded DNS."""

    def __init__(self) -> None:
        self.up: set[str] = set()
        self.log: list[tuple[str, str]] = []

    def remote_endpoint_up(self, r: EndpointRecord) -> None:
        self.up.add(r.container_name)
        self.log.append(("up", r.container_name))

    def remote_endpoint_down(self, r: EndpointRecord) -> None:
        self.up.discard(r.container_name)
        self.log.append(("down", r.container_name))


class Gate:
    """The service's retry sleep, held shut by the test (an outage lasts until ``open``)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.event.set()
        self.waits = 0

    async def sleep(self, _seconds: float) -> None:
        self.waits += 1
        await self.event.wait()


class Host:
    def __init__(self, kv: MemoryKV, gate: Gate | None = None) -> None:
        self.kv = kv
        self.kernel = FakeKernel()
        self.net = Network(id=NET_ID, name="ovnet", driver="overlay", created="",
                           scope="global", options={OPT_VNI: str(VNI)},
                           pools=[IPAMPool(subnet="10.0.0.0/24", gateway="10.0.0.1")])
        self.driver = OverlayDriver(self.kernel, VTEPS[ME])
        self.gate = gate or Gate()
        self.svc = PeerService(kv, self.driver, ME, {NET_ID: self.net}, sleep=self.gate.sleep)
        self.driver.on_site = self.svc.site_made
        self.names = Names()
        self.svc.subscribe(self.names)

    def entries(self) -> set[OverlayPeer]:
        return self.kernel.overlays.peers(VNI)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def put(kv: MemoryKV, *records: EndpointRecord) -> None:
    for r in records:
        await kv.put(r.key, r.encode())


@synced
async def test_remote_endpoints_become_entries_and_go_with_their_delete() -> None:
    kv = MemoryKV()
    h = Host(kv)
    h.driver.create_network(h.net)
    await put(kv, rec(2))
    await h.svc.start()
    h.svc.nodes_changed(view(ME, N2))
    await settle()
    assert h.entries() == {entry(rec(2))}
    await put(kv, rec(3), rec(9, node_id=ME))  # this host's own endpoint is never a peer
    await settle()
    assert h.entries() == {entry(rec(2)), entry(rec(3))}
    assert h.names.up == {"c2", "c3"}
    assert [r.container_name for r in h.svc.remote_endpoints(NET_ID)] == ["c2", "c3"]
    await kv.delete(rec(2).key)
    await settle()
    assert h.entries() == {entry(rec(3))} and h.names.up == {"c3"}
    await h.svc.stop()


@synced
async def test_nothing_changes_in_the_kernel_before_the_first_node_view() -> None:
    """A restarting daemon finds its entries programmed; before membership has answered every
    node looks dead, and a sync then would cut every remote container off for a while."""
    kv = MemoryKV()
    h = Host(kv)
    h.driver.create_network(h.net)
    stray = OverlayPeer("02:42:0a:00:00:63", "10.0.0.99", VTEPS[N3])
    h.kernel.overlays.add_peer(VNI, entry(rec(2)))
    h.kernel.overlays.add_peer(VNI, stray)
    await put(kv, rec(2), rec(4))
    await h.svc.start()
    await settle()
    assert h.entries() == {entry(rec(2)), stray} and h.names.up == set()
    h.svc.nodes_changed(view(ME, N2))  # reconcile: the stray goes, the missing one comes
    assert h.entries() == {entry(rec(2)), entry(rec(4))}
    await h.svc.stop()


@synced
async def test_a_dead_node_takes_its_entries_and_names_and_a_moved_one_is_repointed() -> None:
    kv = MemoryKV()
    h = Host(kv)
    h.driver.create_network(h.net)
    await put(kv, rec(2), rec(3, node_id=N3))
    await h.svc.start()
    h.svc.nodes_changed(view(ME, N2))  # n3 is not live: its record stays unprogrammed
    await settle()
    assert h.entries() == {entry(rec(2))} and h.names.up == {"c2"}
    h.svc.nodes_changed(view(ME, N2, N3))
    assert h.entries() == {entry(rec(2)), entry(rec(3, node_id=N3))}
    assert h.names.up == {"c2", "c3"}
    h.svc.nodes_changed(view(ME, N3))  # n2's lease expired
    assert h.entries() == {entry(rec(3, node_id=N3))} and h.names.up == {"c3"}
    moved = {**view(ME), N3: node(N3, "192.0.2.77")}  # n3 re-registered from another address
    h.svc.nodes_changed(moved)
    assert h.entries() == {entry(rec(3, node_id=N3), "192.0.2.77")}
    assert h.names.up == {"c3"}
    await h.svc.stop()


@synced
async def test_an_outage_keeps_every_entry_then_a_full_listing_resyncs() -> None:
    kv = MemoryKV()
    gate = Gate()
    h = Host(kv, gate)
    h.driver.create_network(h.net)
    await put(kv, rec(2), rec(3))
    await h.svc.start()
    h.svc.nodes_changed(view(ME, N2))
    await settle()
    resyncs = h.svc.resyncs
    gate.event.clear()
    kv.down()
    await settle()
    assert not h.svc.reachable
    assert h.entries() == {entry(rec(2)), entry(rec(3))}  # containers keep talking
    kv.up()
    await kv.delete(rec(2).key)  # what happened while this host could not hear it
    await put(kv, rec(5))
    kv.compact(kv.revision)  # and the history of it is gone
    await settle()
    assert h.entries() == {entry(rec(2)), entry(rec(3))}
    gate.event.set()
    await settle()
    assert h.svc.reachable and h.svc.resyncs == resyncs + 1
    assert h.entries() == {entry(rec(3)), entry(rec(5))}
    assert h.names.up == {"c3", "c5"}
    await put(kv, rec(6))  # and the watch runs again from the listing's revision
    await settle()
    assert entry(rec(6)) in h.entries()
    await h.svc.stop()


class CompactingKV(MemoryKV):
    """The first watch finds its start revision compacted away."""

    def __init__(self) -> None:
        super().__init__()
        self.compactions = 1

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        if self.compactions:
            self.compactions -= 1
            return self._compacted()
        return super().watch(prefix, start_revision)

    async def _compacted(self) -> AsyncIterator[list[WatchEvent]]:
        await put(self, rec(7))  # written between the listing and the lost watch
        raise Compacted(self.revision)
        yield []  # pragma: no cover (makes this an async generator)


@synced
async def test_a_compacted_watch_lists_again() -> None:
    kv = CompactingKV()
    h = Host(kv)
    h.driver.create_network(h.net)
    h.svc.nodes_changed(view(ME, N2))
    await h.svc.start()
    await settle()
    assert h.entries() == {entry(rec(7))}
    await h.svc.stop()


@synced
async def test_a_site_made_later_gets_every_known_peer() -> None:
    kv = MemoryKV()
    h = Host(kv)
    await put(kv, rec(2), rec(3))
    await h.svc.start()
    h.svc.nodes_changed(view(ME, N2))
    await settle()
    assert not h.kernel.overlays.exists(VNI)  # no data plane here: nothing programmed
    assert h.names.up == {"c2", "c3"}  # but the names are known
    h.driver.create_network(h.net)
    assert h.entries() == {entry(rec(2)), entry(rec(3))}
    await h.svc.stop()


@synced
async def test_unreadable_records_are_ignored_and_a_broken_one_loses_its_entry() -> None:
    kv = MemoryKV()
    h = Host(kv)
    h.driver.create_network(h.net)
    await h.svc.start()
    h.svc.nodes_changed(view(ME, N2))
    await put(kv, rec(2))
    await settle()
    good = json.loads(rec(2).encode())
    bad = [b"not json", b"[]", json.dumps({**good, "mac": "zz"}).encode(),
           json.dumps({**good, "vtep": "host.example"}).encode(),
           json.dumps({**good, "dns_names": ["a b"]}).encode()]
    for i, value in enumerate(bad):
        await kv.put(keys.endpoint(NET_ID, f"bad{i}"), value)
    await kv.put(keys.ENDPOINTS + NET_ID + "/x/y", rec(4).encode())  # deeper than a record
    await settle()
    assert h.entries() == {entry(rec(2))} and h.svc.reachable
    await kv.put(rec(2).key, bad[2])  # a record that turns unreadable takes its entry along
    await settle()
    assert h.entries() == set() and h.names.up == set()
    await h.svc.stop()


def _local_ep(n: int) -> Endpoint:
    return Endpoint(id=f"{n:064x}", network_id=NET_ID, container_id="c" * 64, ifname="eth0",
                    mac=f"02:42:0A:00:00:{n:02X}", ipv4=f"10.0.0.{n}", ipv4_prefixlen=24,
                    dns_names=[f"web{n}", "web"])


@synced
async def test_own_records_are_published_withdrawn_and_made_true_at_each_listing() -> None:
    kv = MemoryKV()
    gate = Gate()
    h = Host(kv, gate)
    mine = endpoint_record(ME, VTEPS[ME], "c" * 64, "web1", _local_ep(1))
    assert mine.mac == "02:42:0a:00:00:01" and mine.dns_names == ("web1", "web")
    stale = endpoint_record(ME, VTEPS[ME], "d" * 64, "gone", _local_ep(8))
    await put(kv, stale)  # left by a leave this host made while the store was down
    h.svc.adopt_own([mine])
    await h.svc.start()
    await settle()
    assert await kv.get(stale.key) is None
    held = await kv.get(mine.key)
    assert held is not None and EndpointRecord.decode(held) == mine
    second = endpoint_record(ME, VTEPS[ME], "e" * 64, "web2", _local_ep(2))
    await h.svc.publish_endpoint(second)
    assert await kv.get(second.key) is not None
    gate.event.clear()
    kv.down()
    await h.svc.withdraw_endpoint(NET_ID, second.endpoint_id)  # does not fail the leave
    try:
        await h.svc.publish_endpoint(endpoint_record(ME, VTEPS[ME], "f" * 64, "x",
                                                     _local_ep(3)))
    except Unavailable:
        pass
    else:
        raise AssertionError("a publish with the store down must fail (503)")
    kv.up()
    gate.event.set()
    await settle()
    assert await kv.get(second.key) is None  # the withdrawal landed once it could
    assert await kv.get(keys.endpoint(NET_ID, _local_ep(3).id)) is None  # never half-kept
    assert await kv.get(mine.key) is not None
    # A republish (rename) that fails while the store is down keeps the record it would
    # have replaced: the next listing must not delete a live endpoint's record.
    gate.event.clear()
    kv.down()
    renamed = endpoint_record(ME, VTEPS[ME], "c" * 64, "web1b", _local_ep(1))
    try:
        await h.svc.publish_endpoint(renamed)
    except Unavailable:
        pass
    kv.up()
    gate.event.set()
    await settle()
    held = await kv.get(mine.key)
    assert held is not None and EndpointRecord.decode(held) == mine
    await h.svc.stop()


@synced
async def test_a_listener_subscribing_late_hears_of_every_reachable_endpoint() -> None:
    kv = MemoryKV()
    h = Host(kv)
    await put(kv, rec(2), rec(3, node_id=N3))
    await h.svc.start()
    h.svc.nodes_changed(view(ME, N2))
    await settle()
    late = Names()
    h.svc.subscribe(late)
    assert late.up == {"c2"}
    await h.svc.stop()
