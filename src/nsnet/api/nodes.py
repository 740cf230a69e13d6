"""``GET /nsnet/nodes``: the hosts of this daemon's cluster (``nsnet node ls``).

nsnet's own path on purpose: Docker's ``/nodes`` is Swarm's (managers, availability, TLS
roots), and a docker client reading nsnet's nodes under that schema would show nonsense. Outside
a cluster the answer is 503 with the reason, as Docker answers ``docker node ls`` outside a
swarm.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nsnet.api.app import Router, json_response
from nsnet.api.backend import Backend
from nsnet.engine.cluster import NodeStatus

Params = dict[str, str]


def node_json(s: NodeStatus) -> dict[str, Any]:
    n = s.node
    return {
        "ID": n.node_id, "Hostname": n.hostname, "VTEP": n.vtep, "VXLANPort": n.vxlan_port,
        "Status": s.status, "Self": s.is_self, "Containers": n.containers,
        "Started": n.started,
    }


def register(router: Router, backend: Backend) -> None:
    async def list_nodes(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return json_response([node_json(s) for s in backend.nodes()])

    router.add("GET", "/nsnet/nodes", list_nodes)
