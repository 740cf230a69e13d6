"""engine/cluster.py: the node id file, the test-only TTL, and Cluster over MemoryKV (a store
down at start, registration once it answers, the container count, statuses and info)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_support import synced

from nsnet.cluster.membership import TTL, NodeInfo
from nsnet.engine.cluster import Cluster, load_node_id, node_ttl
from nsnet.errors import Invalid
from nsnet.testing.fake_kv import MemoryKV

NODE = "0123456789abcdef0123456789abcdef"


def test_node_id_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = load_node_id(tmp_path)
    assert len(first) == 32 and int(first, 16) >= 0
    st = (tmp_path / "node-id").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert load_node_id(tmp_path) == first


def test_node_id_link_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text(NODE + "\n")
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(target, data / "node-id")
    with pytest.raises(Invalid, match="symbolic link"):
        load_node_id(data)
    assert target.read_text() == NODE + "\n"


def test_damaged_node_id_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "node-id").write_text("not an id\n")
    with pytest.raises(Invalid, match="damaged"):
        load_node_id(tmp_path)
    assert (tmp_path / "node-id").read_text() == "not an id\n"


def test_test_ttl_needs_the_testing_switch() -> None:
    assert node_ttl({}) == TTL
    assert node_ttl({"NSNET_TEST_NODE_TTL": "3"}) == TTL
    assert node_ttl({"NSNET_TESTING": "1", "NSNET_TEST_NODE_TTL": "3"}) == 3
    for bad in ("1", "0", "x", "61"):
        with pytest.raises(ValueError, match="NSNET_TEST_NODE_TTL"):
            node_ttl({"NSNET_TESTING": "1", "NSNET_TEST_NODE_TTL": bad})


def _node(node_id: str = NODE, vtep: str = "192.0.2.11") -> NodeInfo:
    return NodeInfo(node_id=node_id, vtep=vtep, vxlan_port=4789, hostname="h",
                    started="2026-01-01T00:00:00+00:00")


async def _until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@synced
async def test_store_down_at_start_does_not_fail_and_registers_when_back() -> None:
    kv = MemoryKV()
    kv.down()
    cluster = Cluster(kv, _node(), node_id=NODE, store_url="etcd://192.0.2.2:2379", ttl=3,
                      interval=0.05, retry=0.02)
    await cluster.start()  # returns although the store is down
    try:
        assert not cluster.reachable
        [me] = cluster.statuses()
        assert (me.status, me.is_self, me.node.node_id) == ("down", True, NODE)
        assert cluster.info()["StoreReachable"] is False
        kv.up()
        await _until(lambda: any(s.status == "ready" and s.is_self
                                 for s in cluster.statuses()))
        assert await kv.get(f"/nsnet/v1/nodes/{NODE}") is not None
        assert cluster.info() == {"ClusterStore": "etcd://192.0.2.2:2379",
                                  "ClusterAdvertise": "192.0.2.11:4789", "NodeID": NODE,
                                  "StoreReachable": True, "Nodes": 1}
    finally:
        await cluster.stop()


@synced
async def test_peers_listed_and_container_count_published() -> None:
    kv = MemoryKV()
    other = "f" * 32
    a = Cluster(kv, _node(), node_id=NODE, ttl=3, interval=0.05, retry=0.02)
    b = Cluster(kv, _node(other, "192.0.2.12"), node_id=other, ttl=3, interval=0.05,
                retry=0.02)
    seen: list[set[str]] = []
    a.on_nodes_change(lambda view: seen.append(set(view)))
    running = 0
    b.count_containers = lambda: running
    await a.start()
    await b.start()
    try:
        await _until(lambda: len(a.nodes()) == 2)
        assert {n.vtep for n in a.nodes()} == {"192.0.2.11", "192.0.2.12"}
        assert {NODE, other} in seen
        running = 4
        await _until(lambda: any(s.node.containers == 4 for s in a.statuses()))
        [peer] = [s for s in a.statuses() if not s.is_self]
        assert (peer.node.node_id, peer.status) == (other, "ready")
        kv.down()
        await _until(lambda: not a.reachable)
        assert {s.status for s in a.statuses()} == {"unknown"}  # last view, marked stale
        kv.up()
    finally:
        await a.stop()
        await b.stop()


def test_mismatched_node_id_is_a_bug() -> None:
    with pytest.raises(ValueError):
        Cluster(MemoryKV(), _node(), node_id="e" * 32)
