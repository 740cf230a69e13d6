"""The overlay endpoints in the engine (issue 10): the engine over the fake kernel, a
memory store and a MemoryKV cluster, driven through its use-cases; each test names the
sequence it checks and asserts what must be left in etcd, the local store and the kernel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from test_engine_usecases import FakeImages, FakeRuntime

from nsnet.api.render import networks_of
from nsnet.cluster import keys
from nsnet.cluster.membership import NodeInfo
from nsnet.engine.cluster import Cluster
from nsnet.engine.config import EngineConfig
from nsnet.engine.containers import ContainerCreate
from nsnet.engine.core import Engine
from nsnet.engine.networks import GATEWAY_NETWORK, NetworkCreate
from nsnet.engine.wiring import build_engine
from nsnet.errors import Conflict, NsnetError, Unavailable
from nsnet.model import Container, EndpointRequest, IPAMPool
from nsnet.testing.fake_kernel import FakeKernel
from nsnet.testing.fake_kv import MemoryKV
from nsnet.testing.fake_store import MemoryStore

T = TypeVar("T")
ME = "0123456789abcdef0123456789abcdef"


class SlowKV(MemoryKV):
    """MemoryKV with a round trip: etcd answers in ~1 ms, so a background task's store calls
    interleave with a request's, as they do against a real cluster."""

    latency = 0.002
    lose_txn_answers = 0  # the next n transactions commit, then answer Unavailable

    async def get(self, key: str) -> Any:
        await asyncio.sleep(self.latency)
        return await super().get(key)

    async def get_prefix(self, prefix: str) -> Any:
        await asyncio.sleep(self.latency)
        return await super().get_prefix(prefix)

    async def put(self, key: str, value: bytes, *, lease: int = 0,
                  expect_mod_revision: int | None = None) -> int:
        await asyncio.sleep(self.latency)
        return await super().put(key, value, lease=lease,
                                 expect_mod_revision=expect_mod_revision)

    async def delete(self, key: str, *, expect_mod_revision: int | None = None) -> bool:
        await asyncio.sleep(self.latency)
        return await super().delete(key, expect_mod_revision=expect_mod_revision)

    async def txn(self, compares: Any, puts: Any, deletes: Any) -> bool:
        await asyncio.sleep(self.latency)
        done = await super().txn(compares, puts, deletes)
        if self.lose_txn_answers:
            self.lose_txn_answers -= 1
            raise Unavailable("the answer was lost (the member went away after the commit)")
        return done


class World:
    """One host's engine with a cluster over a MemoryKV, and a loop to drive it."""

    def __init__(self, tmp: Path, kv: SlowKV | None = None,
                 store: MemoryStore | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        tmp.mkdir(parents=True, exist_ok=True)
        config = EngineConfig(data_root=tmp / "data", exec_root=tmp / "run",
                              host_resolv_conf=tmp / "resolv.conf")
        (tmp / "resolv.conf").write_text("nameserver 192.0.2.53\n")
        self.kv = kv if kv is not None else SlowKV()
        node = NodeInfo(node_id=ME, vtep="192.0.2.11", vxlan_port=4789, hostname="h",
                        started="2026-01-01T00:00:00+00:00")
        self.cluster = Cluster(self.kv, node, node_id=ME, ttl=3, interval=0.05, retry=0.02)
        self.kernel = FakeKernel(exec_root=config.exec_root)
        self.store = store if store is not None else MemoryStore()
        self.runtime = FakeRuntime(tmp)
        self.engine: Engine
        self.engine, _ = build_engine(config, dns=False, store=self.store, kernel=self.kernel,
                                      images=FakeImages(), runtime=self.runtime,
                                      cluster=self.cluster)
        self.run(self.engine.start())
        self.run(self._until(lambda: self.cluster.reachable))

    @property
    def glob(self) -> Any:
        return self.engine.s.global_endpoints

    def run(self, aw: Awaitable[T]) -> T:
        async def main() -> T:
            return await aw

        return self.loop.run_until_complete(main())

    async def _until(self, cond: Callable[[], bool], timeout: float = 3.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not cond():
            assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
            await asyncio.sleep(0.01)

    def settle(self) -> None:
        """The retire queue drained (as the background task does it)."""
        self.run(self._until(lambda: not self.glob._queue))

    def overlay(self, name: str, subnet: str = "10.10.0.0/24", internal: bool = False) -> str:
        return self.run(self.engine.create_network(NetworkCreate(
            name=name, driver="overlay", internal=internal,
            pools=[IPAMPool(subnet=subnet)]))).id

    def bridge(self, name: str, subnet: str, internal: bool = False) -> str:
        return self.run(self.engine.create_network(NetworkCreate(
            name=name, internal=internal, pools=[IPAMPool(subnet=subnet)]))).id

    def create(self, name: str, network: str,
               endpoints: dict[str, EndpointRequest] | None = None) -> str:
        return self.engine.create_container(ContainerCreate(
            image="busybox", name=name, cmd=["sleep", "1"], network_mode=network,
            endpoints=endpoints or {})).id

    def running(self, name: str, network: str,
                endpoints: dict[str, EndpointRequest] | None = None) -> str:
        cid = self.create(name, network, endpoints)
        self.run(self.engine.start_container(cid))
        return cid

    def etcd(self, prefix: str) -> dict[str, Any]:
        held, _ = self.run(self.kv.get_prefix(prefix))
        return {kv.key: json.loads(kv.value) for kv in held}

    def etcd_state(self, net_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(endpoint records, address claims) of one overlay network."""
        return self.etcd(keys.endpoints(net_id)), self.etcd(keys.addresses(net_id))

    def gw_users(self) -> list[str]:
        gw = next((n for n in self.engine.registry.networks.values()
                   if n.name == GATEWAY_NETWORK), None)
        if gw is None:
            return []
        return sorted(c.name for c in self.engine.registry.network_users(gw))

    def local_claims(self) -> list[tuple[str, str, str]]:
        return sorted(self.store.ipam_all())

    def close(self) -> None:
        for cid in list(self.engine.registry.containers):
            self.run(self.engine.remove_container(cid, force=True))
        self.run(self.engine.close())
        self.loop.close()

    def abandon(self) -> None:
        """After a simulated crash: the engine's background tasks cancelled without its
        close (which would withdraw from the cluster), so none is left pending at exit."""
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def _inspect(w: World, cid: str) -> dict[str, Any]:
    c = w.engine.find_container(cid)
    return networks_of(c, w.engine.registry.networks)


# ---- the happy path, as the baseline the failure tests compare with -------------------------


def test_overlay_only_run_gets_a_hidden_gateway_and_stop_gives_everything_back(
        world: World) -> None:
    ov = world.overlay("ov")
    cid = world.running("c1", "ov")
    recs, addrs = world.etcd_state(ov)
    assert len(recs) == 1 and len(addrs) == 1
    assert world.gw_users() == ["c1"]
    assert list(_inspect(world, cid)) == ["ov"]
    world.run(world.engine.stop_container(cid, timeout=0))
    world.settle()
    assert world.etcd_state(ov) == ({}, {})
    assert world.gw_users() == []
    assert world.local_claims() == []


def test_run_failing_in_runc_leaves_nothing_in_etcd_or_the_kernel(world: World) -> None:
    ov = world.overlay("ov")
    cid = world.create("c1", "ov")
    world.runtime.fail_start = 'exec: "nope": executable file not found in $PATH'
    with pytest.raises(NsnetError):
        world.run(world.engine.start_container(cid))
    world.settle()
    assert world.etcd_state(ov) == ({}, {})
    assert world.gw_users() == [] and world.local_claims() == []
    c = world.engine.find_container(cid)
    assert [a.gateway_only for a in c.attachments] == [False]


def test_restart_keeps_a_static_overlay_address(world: World) -> None:
    """``docker run --ip 10.10.0.9 --network ov`` then ``docker restart``: Docker gives the
    container its address again. The stop queues the release; the start claims first."""
    ov = world.overlay("ov")
    cid = world.running("c1", "ov", {"ov": EndpointRequest(ipv4_address="10.10.0.9")})
    world.run(world.engine.restart_container(cid, timeout=0))
    c = world.engine.find_container(cid)
    assert c.state.status == "running"
    [a] = [a for a in c.attachments if not a.gateway_only]
    assert a.endpoint is not None and a.endpoint.ipv4 == "10.10.0.9"
    world.settle()
    _, addrs = world.etcd_state(ov)
    assert [v["endpoint"] for v in addrs.values()] == [a.endpoint.id]


def test_stop_then_start_at_once_keeps_a_static_overlay_address(world: World) -> None:
    world.overlay("ov")
    cid = world.running("c1", "ov", {"ov": EndpointRequest(ipv4_address="10.10.0.9")})

    async def stop_start() -> None:
        await world.engine.stop_container(cid, timeout=0)
        await world.engine.start_container(cid)

    world.run(stop_start())
    assert world.engine.find_container(cid).state.status == "running"


def test_start_with_a_static_overlay_address_behind_other_releases(world: World) -> None:
    """Several containers stop (``docker stop a b c``), then one with ``--ip`` starts again:
    its own release waits in the queue behind the others' while the start claims."""
    world.overlay("ov")
    others = [world.running(f"o{i}", "ov") for i in range(3)]
    cid = world.running("c1", "ov", {"ov": EndpointRequest(ipv4_address="10.10.0.9")})

    async def stop_all_start_one() -> None:
        for o in others:
            await world.engine.stop_container(o, timeout=0)
        await world.engine.stop_container(cid, timeout=0)
        await world.engine.start_container(cid)

    world.run(stop_all_start_one())
    assert world.engine.find_container(cid).state.status == "running"


def _snapshot(w: World) -> tuple[Any, ...]:
    w.kernel.reaper.flush()
    return (w.kernel.objects(), sorted(str(d) for d in w.store.list("container")),
            w.local_claims())


def test_connect_to_a_bridge_failing_late_keeps_the_gateway_bridge(world: World) -> None:
    """An overlay-only container (its default route via nsnet_gwbridge) is connected to a
    bridge network and the connect fails after the gateway endpoint was dropped: the
    container must keep its gateway endpoint, its default route and its address."""
    world.overlay("ov")
    world.bridge("n1", "198.51.100.0/24")
    cid = world.running("c1", "ov")
    before = _snapshot(world)
    assert world.gw_users() == ["c1"]
    world.kernel.fail_on("set_default_route")
    with pytest.raises(NsnetError):
        world.run(world.engine.connect("n1", cid, EndpointRequest()))
    assert world.gw_users() == ["c1"]
    assert _snapshot(world) == before


def test_disconnect_of_the_overlay_drops_the_gateway_bridge(world: World) -> None:
    ov = world.overlay("ov")
    world.bridge("n1", "198.51.100.0/24", internal=True)
    cid = world.running("c1", "n1", {"ov": EndpointRequest()})
    assert world.gw_users() == ["c1"]
    world.engine.disconnect("ov", cid, False)
    world.settle()
    assert world.gw_users() == []
    assert world.etcd_state(ov) == ({}, {})
    c = world.engine.find_container(cid)
    assert [(a.network_id, a.gateway_only) for a in c.attachments] == [
        (world.engine.find_network("n1").id, False)]
    # the internal bridge gives no default route: none left pointing at a removed link
    assert not any(a.endpoint is not None and a.endpoint.default_route for a in c.attachments)


def test_bridge_and_overlay_use_the_bridge_route_and_no_gateway(world: World) -> None:
    world.overlay("ov")
    world.bridge("n1", "198.51.100.0/24")
    cid = world.running("c1", "ov", {"n1": EndpointRequest()})
    assert world.gw_users() == []
    c = world.engine.find_container(cid)
    [route] = [a for a in c.attachments if a.endpoint is not None and a.endpoint.default_route]
    assert route.network_id == world.engine.find_network("n1").id


def test_internal_overlay_gets_no_gateway_bridge(world: World) -> None:
    world.overlay("ov", internal=True)
    world.running("c1", "ov")
    assert world.gw_users() == []


def test_connect_overlay_then_bridge_drops_the_gateway(world: World) -> None:
    ov = world.overlay("ov")
    world.bridge("n1", "198.51.100.0/24")
    cid = world.running("c0", "none")
    del cid
    cid = world.running("c1", "n1")
    world.engine.disconnect("n1", cid, False)
    world.run(world.engine.connect("ov", cid, EndpointRequest()))
    assert world.gw_users() == ["c1"]
    world.run(world.engine.connect("n1", cid, EndpointRequest()))
    assert world.gw_users() == []
    world.engine.disconnect("n1", cid, False)
    assert world.gw_users() == ["c1"]
    world.engine.disconnect("ov", cid, False)
    world.settle()
    assert world.gw_users() == [] and world.etcd_state(ov) == ({}, {})


class Gate:
    """Holds ``GlobalIpam.allocate_address`` until opened: a request awaiting the cluster."""

    def __init__(self, w: World) -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()
        real = w.cluster.ipam.allocate_address

        async def allocate(*a: Any, **kw: Any) -> Any:
            self.entered.set()
            await self.open.wait()
            return await real(*a, **kw)

        setattr(w.cluster.ipam, "allocate_address", allocate)  # noqa: B010


def test_connect_raced_by_rm_f_leaves_nothing(world: World) -> None:
    ov = world.overlay("ov")
    world.bridge("n1", "198.51.100.0/24", internal=True)
    cid = world.running("c1", "n1")
    gate = Gate(world)

    async def race() -> None:
        conn = asyncio.create_task(world.engine.connect("ov", cid, EndpointRequest()))
        await gate.entered.wait()
        with pytest.raises(Conflict):
            world.engine.disconnect("n1", cid, False)  # 409 while the connect holds the lock
        rm = asyncio.create_task(world.engine.remove_container(cid, force=True))
        await asyncio.sleep(0.01)
        gate.open.set()
        await asyncio.gather(conn, rm, return_exceptions=True)

    world.run(race())
    world.settle()
    assert cid not in world.engine.registry.containers
    assert world.etcd_state(ov) == ({}, {})
    assert world.gw_users() == [] and world.local_claims() == []
    world.kernel.reaper.flush()
    assert not [ln for ln in world.kernel.objects().links if ln[1].startswith(("veth", "eth"))]


def test_a_claim_whose_answer_was_lost_is_released(world: World) -> None:
    """etcd commits the address claim and the member goes before it answers: the start is
    a 503, and the address must not stay held by an endpoint that exists nowhere."""
    ov = world.overlay("ov")
    cid = world.create("c1", "ov")
    world.kv.lose_txn_answers = 1
    with pytest.raises(Unavailable):
        world.run(world.engine.start_container(cid))
    world.settle()
    world.run(world.glob.sweep())  # what a restart would do; nothing must be left for it
    assert world.etcd_state(ov) == ({}, {})


def test_restart_between_claim_and_join_leaves_nothing(tmp_path: Path) -> None:
    """The daemon dies after ``prepare`` (address claimed, record published) and before the
    sandbox: the next start of the daemon gives both back."""
    first = World(tmp_path / "a")
    ov = first.overlay("ov")
    cid = first.create("c1", "ov")
    c = first.engine.find_container(cid)
    net = first.engine.find_network("ov")
    first.run(first.glob.prepare(c, [(c.attachments[0], net)]))
    recs, addrs = first.etcd_state(ov)
    assert len(recs) == 1 and len(addrs) == 1
    # crash: the first engine's loop never runs again
    second = World(tmp_path / "b", kv=first.kv, store=first.store)
    try:
        for _ in range(300):  # the sweep and the own-record sync run in the background
            if second.etcd_state(ov) == ({}, {}):
                break
            second.run(asyncio.sleep(0.01))
        assert second.etcd_state(ov) == ({}, {})
    finally:
        second.close()
        first.abandon()


def test_disconnect_then_connect_with_the_same_static_overlay_address(world: World) -> None:
    """``docker network disconnect ov c && docker network connect --ip 10.10.0.9 ov c``."""
    world.overlay("ov")
    world.bridge("n1", "198.51.100.0/24")
    cid = world.running("c1", "n1", {"ov": EndpointRequest(ipv4_address="10.10.0.9")})
    world.engine.disconnect("ov", cid, False)
    world.run(world.engine.connect("ov", cid, EndpointRequest(ipv4_address="10.10.0.9")))
    a = world.engine.find_container(cid).attachment(world.engine.find_network("ov").id)
    assert a is not None and a.endpoint is not None and a.endpoint.ipv4 == "10.10.0.9"


def test_gateway_bridge_in_use_cannot_be_removed(world: World) -> None:
    world.overlay("ov")
    world.running("c1", "ov")
    with pytest.raises(NsnetError) as e:
        world.run(world.engine.remove_network(GATEWAY_NETWORK))
    assert e.value.status == 403


def test_an_overlay_named_like_the_gateway_bridge(world: World) -> None:
    """``docker network create -d overlay nsnet_gwbridge`` on a host that has not made its
    gateway bridge yet: every host without a local one then refuses every overlay
    container (503), and a host with one has two networks of that name. Either the name is
    refused or the gateway bridge is still found; the start must work."""
    try:
        world.overlay(GATEWAY_NETWORK, "10.20.0.0/24")
    except (Conflict, NsnetError) as e:
        assert e.status in (400, 403, 409)
    world.overlay("ov")
    cid = world.create("c1", "ov")
    world.run(world.engine.start_container(cid))
    assert world.gw_users() == ["c1"]


def test_disconnect_whose_gateway_join_fails_keeps_store_and_memory_together(
        world: World) -> None:
    """bridge + overlay; ``docker network disconnect n1 c1`` must join nsnet_gwbridge, and
    that join fails: the stored container and the one in memory must agree, and no address
    may stay claimed by an endpoint whose link is gone."""
    world.overlay("ov")
    n1 = world.bridge("n1", "198.51.100.0/24")
    cid = world.running("c1", "n1", {"ov": EndpointRequest()})
    world.kernel.fail_on("configure_endpoint")
    with pytest.raises(NsnetError):
        world.engine.disconnect("n1", cid, False)
    mem = world.engine.find_container(cid)
    rec = world.store.get("container", cid)
    assert rec is not None
    stored = Container.from_dict(rec.data)
    assert [a.network_id for a in stored.attachments] == [a.network_id for a in mem.attachments]
    links = {name for ns, name in world.kernel.objects().links if ns == mem.sandbox_key}
    a = mem.attachment(n1)
    assert (a is not None and a.endpoint is not None) == ("eth0" in links)
    held = {owner for _, _, owner in world.local_claims()}
    live = {x.endpoint.id for x in mem.attachments if x.endpoint is not None}
    assert held <= live
