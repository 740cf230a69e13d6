"""Node membership on MemoryKV with a fake clock: join, a dead node leaving within the TTL, no
flapping while keepalives succeed, store outages (re-registration, resync) and compaction."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cluster_support import FakeTime, InterleavingKV, synced

from nsnet.cluster import keys
from nsnet.cluster.membership import Membership as _Membership
from nsnet.cluster.membership import NodeInfo
from nsnet.store.kv import KV, KeyValue
from nsnet.testing.fake_kv import MemoryKV


def info(name: str, vtep: str) -> NodeInfo:
    return NodeInfo(node_id=f"id-{name}", vtep=vtep, vxlan_port=4789, hostname=name,
                    started="2026-01-01T00:00:00Z")


class Membership(_Membership):
    """Records every view it is given, for the flap checks."""

    def __init__(self, kv: KV, me: NodeInfo, time: FakeTime) -> None:
        self.views: list[dict[str, NodeInfo]] = []
        super().__init__(kv, me, sleep=time.sleep, on_change=self.views.append)


@asynccontextmanager
async def cluster(n: int) -> AsyncIterator[tuple[MemoryKV, FakeTime, list[Membership]]]:
    kv = MemoryKV()
    time = FakeTime(kv)
    rng = random.Random(n)
    members = [Membership(InterleavingKV(kv, rng), info(f"h{i}", f"192.0.2.{i + 1}"), time)
               for i in range(n)]
    for m in members:
        await m.start()
    await time.settle()
    try:
        yield kv, time, members
    finally:
        for m in members:
            await m.stop()


def ids(m: Membership) -> list[str]:
    return sorted(m.nodes())


@synced
async def test_nodes_see_each_other_with_their_details() -> None:
    async with cluster(3) as (kv, _, (a, b, c)):
        assert ids(a) == ids(b) == ids(c) == ["id-h0", "id-h1", "id-h2"]
        assert a.nodes()["id-h2"] == info("h2", "192.0.2.3")
        await c.set_containers(7)
        await FakeTime.settle()
        assert a.nodes()["id-h2"].containers == 7
        assert c.registrations == 1  # a record update is not a re-registration
        held = await kv.get(keys.node("id-h2"))
        assert held is not None and held.lease != 0


@synced
async def test_a_dead_node_vanishes_within_the_ttl_and_a_live_one_never_flaps() -> None:
    async with cluster(3) as (kv, time, (a, b, c)):
        await c.stop()  # c's host dies: no revoke, no more keepalives
        seen_at: list[float] = []

        def check() -> None:
            if "id-h2" not in a.nodes() and not seen_at:
                seen_at.append(kv.now)

        start = kv.now
        await time.advance(120, each=check)
        assert seen_at and seen_at[0] - start <= 10.0, seen_at
        assert ids(a) == ids(b) == ["id-h0", "id-h1"]
        # Over two minutes of keepalives a and b never dropped out of each other's view.
        for m in (a, b):
            assert all({"id-h0", "id-h1"} <= set(v) for v in m.views)
        assert a.registrations == b.registrations == 1


class SlowKeepalives:
    """A store whose keepalives take ``delay`` fake seconds (a loaded host or store)."""

    def __init__(self, kv: KV, time: FakeTime, delay: float) -> None:
        self.kv, self.time, self.delay = kv, time, delay

    def __getattr__(self, name: str) -> object:
        return getattr(self.kv, name)

    async def keepalive_once(self, lease: int) -> int:
        await self.time.sleep(self.delay)
        return await self.kv.keepalive_once(lease)


@synced
async def test_keepalives_slowed_by_load_do_not_flap() -> None:
    kv = MemoryKV()
    time = FakeTime(kv)
    a = Membership(kv, info("h0", "192.0.2.1"), time)
    b = Membership(SlowKeepalives(kv, time, 3.5), info("h1", "192.0.2.2"), time)  # type: ignore[arg-type]
    await a.start()
    await b.start()
    await time.advance(90)
    assert all("id-h1" in v for v in a.views[1:]) and "id-h1" in a.nodes()
    assert b.registrations == 1
    await a.stop()
    await b.stop()


@synced
async def test_store_outage_keeps_the_view_then_reregisters_and_resyncs() -> None:
    async with cluster(2) as (kv, time, (a, b)):
        kv.down()
        await time.advance(5)
        assert not a.reachable and ids(a) == ["id-h0", "id-h1"]  # nothing torn down
        kv.advance(30)  # etcd lost the leases while it was away
        kv.up()
        await time.advance(5)
        assert a.reachable and b.reachable
        assert a.registrations == b.registrations == 2
        assert ids(a) == ids(b) == ["id-h0", "id-h1"]
        # The watches resumed: a change after the outage is seen.
        await b.set_containers(3)
        await FakeTime.settle()
        assert a.nodes()["id-h1"].containers == 3


class CompactAfterList:
    """A client whose next listing is followed by a write and a compaction, so the watch from
    the listing's revision finds its history gone."""

    def __init__(self, kv: MemoryKV) -> None:
        self.kv = kv
        self.armed = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.kv, name)

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        got = await self.kv.get_prefix(prefix)
        if self.armed:
            self.armed = False
            await self.kv.put(keys.node("id-late"), info("late", "192.0.2.9").encode())
            self.kv.compact(self.kv.revision)
        return got


@synced
async def test_compacted_history_means_list_again() -> None:
    kv = MemoryKV()
    time = FakeTime(kv)
    client = CompactAfterList(kv)
    a = Membership(client, info("h0", "192.0.2.1"), time)  # type: ignore[arg-type]
    await a.start()
    await time.settle()
    kv.down()  # break the watch; the next listing is raced by a write and a compaction
    kv.up()
    client.armed = True
    await time.advance(2)
    assert ids(a) == ["id-h0", "id-late"]
    await a.stop()


@synced
async def test_leave_revokes_at_once() -> None:
    async with cluster(2) as (_, _time, (a, b)):
        await b.stop(leave=True)
        await FakeTime.settle()
        assert ids(a) == ["id-h0"]


def test_unreadable_records_are_skipped() -> None:
    def kv(value: bytes) -> KeyValue:
        return KeyValue(keys.node("x"), value, 2, 2, 0)

    good = info("x", "192.0.2.1")
    assert NodeInfo.decode(kv(good.encode())) == NodeInfo(**{**good.__dict__, "node_id": "x"})
    for bad in (b"{", b"[]", b'{"vtep": "192.0.2.1"}', b'{"vtep":1,"vxlan_port":"x",'
                b'"hostname":"h","started":"s"}'):
        assert NodeInfo.decode(kv(bad)) is None

