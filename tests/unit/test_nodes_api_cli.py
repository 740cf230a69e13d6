"""``GET /nsnet/nodes``, ``nsnet node ls`` and the cluster lines of ``nsnet info``: the route
against a stub backend (no engine), the CLI against the fake daemon (no root)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.test_utils import RawTestServer, TestClient

from nsnet.api.backend import Backend
from nsnet.api.routes import build
from nsnet.cluster.membership import NodeInfo
from nsnet.engine.cluster import NodeStatus
from nsnet.engine.core import NOT_IN_CLUSTER, EngineInfo
from nsnet.errors import Unavailable
from nsnet.testing.fake_daemon import FakeDaemon, nsnet, running_fake, send_error, send_json

A = "a" * 32
B = "b" * 32


def _status(node_id: str, vtep: str, status: str, me: bool, containers: int) -> NodeStatus:
    return NodeStatus(NodeInfo(node_id=node_id, vtep=vtep, vxlan_port=4789, hostname="h",
                               started="2026-11-29T10:00:00+00:00", containers=containers),
                      status, me)


class StubBackend:
    """Only what these routes reach; anything else is an AttributeError (a 500)."""

    def __init__(self, nodes: list[NodeStatus] | None,
                 cluster: dict[str, Any] | None = None) -> None:
        self._nodes = nodes
        self._cluster = cluster

    def nodes(self) -> list[NodeStatus]:
        if self._nodes is None:
            raise Unavailable(NOT_IN_CLUSTER)
        return self._nodes

    def info(self) -> EngineInfo:
        return EngineInfo("id", 0, 0, 0, ["bridge"], Path("/d"), Path("/r"),
                          cluster=self._cluster)


def _get(backend: StubBackend, path: str) -> tuple[int, Any]:
    async def main() -> tuple[int, Any]:
        api = build(cast(Backend, backend))
        client: TestClient[Any, Any] = TestClient(RawTestServer(api.dispatch))
        async with client:
            r = await client.get(path)
            return r.status, await r.json()

    return asyncio.run(main())


def test_nodes_route_lists_every_node_with_liveness() -> None:
    backend = StubBackend([_status(A, "192.0.2.11", "ready", True, 2),
                           _status(B, "192.0.2.12", "ready", False, 0)])
    status, body = _get(backend, "/v1.45/nsnet/nodes")
    assert status == 200
    assert body == [
        {"ID": A, "Hostname": "h", "VTEP": "192.0.2.11", "VXLANPort": 4789, "Status": "ready",
         "Self": True, "Containers": 2, "Started": "2026-11-29T10:00:00+00:00"},
        {"ID": B, "Hostname": "h", "VTEP": "192.0.2.12", "VXLANPort": 4789, "Status": "ready",
         "Self": False, "Containers": 0, "Started": "2026-11-29T10:00:00+00:00"},
    ]


def test_nodes_route_outside_a_cluster_is_503_with_the_reason() -> None:
    assert _get(StubBackend(None), "/nsnet/nodes") == (503, {"message": NOT_IN_CLUSTER})


def test_info_carries_the_cluster_only_in_one() -> None:
    _, alone = _get(StubBackend(None), "/info")
    assert (alone["ClusterStore"], alone["ClusterAdvertise"], alone["ClusterNode"]) == (
        "", "", None)
    cluster = {"ClusterStore": "etcd://192.0.2.2:2379", "ClusterAdvertise": "192.0.2.11:4789",
               "NodeID": A, "StoreReachable": True, "Nodes": 3}
    _, joined = _get(StubBackend(None, cluster), "/info")
    assert joined["ClusterStore"] == "etcd://192.0.2.2:2379"
    assert joined["ClusterAdvertise"] == "192.0.2.11:4789"
    assert joined["ClusterNode"] == {"ID": A, "StoreReachable": True, "Nodes": 3}


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    with running_fake() as daemon:
        yield daemon


NODES = [
    {"ID": A, "Hostname": "h1", "VTEP": "192.0.2.11", "VXLANPort": 4789, "Status": "ready",
     "Self": True, "Containers": 2, "Started": "2026-11-29T10:00:00+00:00"},
    {"ID": B, "Hostname": "h2", "VTEP": "192.0.2.12", "VXLANPort": 4789, "Status": "unknown",
     "Self": False, "Containers": 0, "Started": "2026-11-29T10:00:01+00:00"},
]


def test_node_ls_table_marks_this_node(fake: FakeDaemon) -> None:
    fake.on("GET", "/nsnet/nodes", send_json(200, NODES))
    result = nsnet(fake, "node", "ls")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "ID               HOSTNAME   VTEP              STATUS    CONTAINERS",
        "aaaaaaaaaaaa *   h1         192.0.2.11:4789   ready     2",
        "bbbbbbbbbbbb     h2         192.0.2.12:4789   unknown   0",
    ]
    assert [r.path for r in fake.requests] == ["/nsnet/nodes"]


def test_node_ls_quiet_and_json(fake: FakeDaemon) -> None:
    fake.on("GET", "/nsnet/nodes", send_json(200, NODES))
    assert nsnet(fake, "node", "ls", "-q").stdout == f"{A}\n{B}\n"
    rows = [json.loads(line) for line in
            nsnet(fake, "node", "list", "--format", "json").stdout.splitlines()]
    assert [(r["ID"], r["VTEP"], r["Status"], r["Containers"], r["Self"]) for r in rows] == [
        (A, "192.0.2.11:4789", "ready", "2", "true"),
        (B, "192.0.2.12:4789", "unknown", "0", "false")]


def test_node_ls_outside_a_cluster_says_why(fake: FakeDaemon) -> None:
    fake.on("GET", "/nsnet/nodes", send_error(503, NOT_IN_CLUSTER))
    result = nsnet(fake, "node", "ls")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"Error response from daemon: {NOT_IN_CLUSTER}" in result.stderr


def test_info_prints_the_cluster_lines(fake: FakeDaemon) -> None:
    fake.on("GET", "/info", send_json(200, {
        "ServerVersion": "0.1.0", "ClusterStore": "etcd://192.0.2.2:2379",
        "ClusterAdvertise": "192.0.2.11:4789",
        "ClusterNode": {"ID": A, "StoreReachable": False, "Nodes": 3}}))
    out = nsnet(fake, "info").stdout
    assert (" Cluster Store: etcd://192.0.2.2:2379\n Cluster Advertise: 192.0.2.11:4789\n"
            f" Cluster Node: {A} (store UNREACHABLE, 3 live nodes)\n") in out
    fake.on("GET", "/info", send_json(200, {"ServerVersion": "0.1.0", "ClusterStore": "",
                                            "ClusterAdvertise": "", "ClusterNode": None}))
    assert "Cluster" not in nsnet(fake, "info").stdout
