"""A renamed container's overlay records follow its name (issue 11): republished off the
request path, retried while etcd is away, and never written back for an endpoint that ended.
Over the one-host world of test_global_endpoints and a second host's peer service, which is
what another host's embedded DNS hears; and the container service asking for it on a rename."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cluster_support import synced
from test_container_control import ControlWorld
from test_global_endpoints import ME, NET_ID, _until, _world

from nsnet.cluster import keys
from nsnet.cluster.endpoints import EndpointRecord
from nsnet.cluster.membership import NodeInfo
from nsnet.drivers.overlay import OverlayDriver
from nsnet.engine.containers import ContainerCreate
from nsnet.engine.peers import PeerService
from nsnet.model import Container, EndpointRequest, Network
from nsnet.testing.fake_kernel import FakeKernel
from nsnet.testing.fake_kv import MemoryKV

OTHER = "f" * 32


class Names:
    """What the other host's resolver is told: the names each remote endpoint answers to."""

    def __init__(self) -> None:
        self.by_endpoint: dict[str, tuple[str, ...]] = {}

    def remote_endpoint_up(self, rec: EndpointRecord) -> None:
        self.by_endpoint[rec.endpoint_id] = rec.dns_names

    def remote_endpoint_down(self, rec: EndpointRecord) -> None:
        if self.by_endpoint.get(rec.endpoint_id) == rec.dns_names:
            del self.by_endpoint[rec.endpoint_id]


def _node(node_id: str, vtep: str) -> NodeInfo:
    return NodeInfo(node_id=node_id, vtep=vtep, vxlan_port=4789, hostname=node_id[:4],
                    started="2026-01-01T00:00:00+00:00")


def _rename(c: Container, name: str) -> None:
    """What the container service does before it asks for the republication."""
    c.name = name
    ep = c.attachments[0].endpoint
    assert ep is not None
    ep.dns_names = [name, "www"]


async def _record(kv: MemoryKV, endpoint_id: str) -> dict[str, object] | None:
    got = await kv.get(keys.endpoint(NET_ID, endpoint_id))
    return json.loads(got.value) if got is not None else None


@synced
async def test_a_rename_reaches_the_other_hosts_resolver() -> None:
    kv = MemoryKV()
    async with _world(kv) as w:
        net = Network(id=NET_ID, name="ov", driver="overlay", created="", scope="global")
        other = PeerService(kv, OverlayDriver(FakeKernel(), "192.0.2.12"), OTHER,
                            {NET_ID: net}, retry=0.02)
        names = Names()
        other.subscribe(names)
        other.nodes_changed({ME: _node(ME, "192.0.2.11"), OTHER: _node(OTHER, "192.0.2.12")})
        await other.start()
        try:
            c = w.container("web", EndpointRequest(aliases=["www"]))
            claims = await w.glob.prepare(c, [(c.attachments[0], w.net)])
            ep_id = claims[NET_ID].endpoint_id
            w.attach(c, ep_id, claims[NET_ID].ipv4)
            w.glob.done(claims.values())
            await _until(lambda: names.by_endpoint.get(ep_id) == ("web", "www"))
            _rename(c, "web2")
            w.glob.republish(c)
            await _until(lambda: names.by_endpoint.get(ep_id) == ("web2", "www"))
            rec = await _record(kv, ep_id)
            assert rec is not None and rec["container_name"] == "web2"
        finally:
            await other.stop()


@synced
async def test_a_rename_while_the_store_is_down_lands_when_it_returns() -> None:
    kv = MemoryKV()
    async with _world(kv) as w:
        c = w.container("web", EndpointRequest(aliases=["www"]))
        claims = await w.glob.prepare(c, [(c.attachments[0], w.net)])
        ep_id = claims[NET_ID].endpoint_id
        w.attach(c, ep_id, claims[NET_ID].ipv4)
        w.glob.done(claims.values())
        kv.down()
        _rename(c, "db")
        w.glob.republish(c)
        await asyncio.sleep(0.1)  # tried and retried meanwhile
        assert w.glob._republish == {c.id}
        kv.up()
        await _until(lambda: not w.glob._republish)
        rec = await _record(kv, ep_id)
        assert rec is not None and (rec["container_name"], rec["dns_names"]) == (
            "db", ["db", "www"])


@synced
async def test_an_endpoint_that_ended_is_not_written_back() -> None:
    kv = MemoryKV()
    async with _world(kv) as w:
        c = w.container("web")
        claims = await w.glob.prepare(c, [(c.attachments[0], w.net)])
        claim = claims[NET_ID]
        w.attach(c, claim.endpoint_id, claim.ipv4)
        w.glob.done(claims.values())
        kv.down()
        _rename(c, "gone")
        w.glob.republish(c)
        # The container stops before the store answers: its endpoint ends, retired.
        c.attachments[0].endpoint = None
        w.glob.retire(NET_ID, claim.endpoint_id, [claim.ipv4])
        kv.up()
        await w.glob.flush()
        assert not w.glob._republish and not w.glob._queue
        assert await _record(kv, claim.endpoint_id) is None


# -- the container service asks for it -------------------------------------------------------


class Republished:
    """The container service's view of GlobalEndpoints, for a rename: who was republished."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def republish(self, c: Container) -> None:
        self.names.append(c.name)

    def done(self, claims: object) -> None:
        pass


def test_a_running_containers_rename_asks_for_republication(tmp_path: Path) -> None:
    cw = ControlWorld(tmp_path)
    try:
        cw.running("web", "bridge")
        stopped = cw.engine.create_container(ContainerCreate(image="busybox", name="idle",
                                                             cmd=["true"]))
        rec = Republished()
        cw.engine.s.containers.global_endpoints = rec  # type: ignore[assignment]
        cw.run(cw.engine.rename_container("web", "web2"))
        cw.run(cw.engine.rename_container(stopped.id, "idle2"))  # no endpoint to publish
        assert rec.names == ["web2"]
    finally:
        cw.engine.s.containers.global_endpoints = None
        cw.close()
