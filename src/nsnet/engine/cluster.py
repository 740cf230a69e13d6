"""``Cluster``: this daemon's membership of a cluster (``--cluster-store``), for the services.

One object holds what every global-state user needs: the shared ``KV``, the global IPAM, the
membership (this node registered under a lease, the live view of all nodes) and this node's
identity. ``build_engine`` hands it to the services that need it; without the cluster flags
there is no ``Cluster`` at all and nsnetd behaves exactly as it did before issue 10.

Start never fails on an unreachable store: a daemon restarted during an etcd outage must still
bring back its local networks and containers. It registers in the background as soon as etcd
answers, and until then ``reachable`` is False (overlay changes answer 503, ``nsnet node ls``
says the view is stale).

The node id is persisted in ``<data-root>/node-id`` (0600, made once): the same host keeps the
same id across restarts, so its endpoints in etcd stay its own. A VM cloned with its data root
carries the id along; two hosts with one id would overwrite each other's registration, so a
clone must delete ``node-id`` before its first start (README, "Two machines").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import logging
import os
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nsnet.cluster.config import ClusterConfig
from nsnet.cluster.ipam import GlobalIpam
from nsnet.cluster.membership import INTERVAL, RETRY, TTL, Membership, NodeInfo
from nsnet.errors import Invalid, Unavailable
from nsnet.store.kv import KV

log = logging.getLogger("nsnet.cluster")

NODE_ID_FILE = "node-id"
_NODE_ID = re.compile(r"[0-9a-f]{32}")

# Test-only (with NSNET_TESTING=1): a shorter membership lease, so the multi-host tests see a
# killed host leave in seconds rather than the production 10 s. Never read otherwise.
ENV_TESTING = "NSNET_TESTING"
ENV_NODE_TTL = "NSNET_TEST_NODE_TTL"


def load_node_id(data_root: Path) -> str:
    """This host's node id: read from ``<data-root>/node-id`` or made there once (0600).

    The file is opened without following a link and made with O_EXCL, so a link planted in
    the data root is refused and two starts racing cannot both make one. A damaged file is an
    error rather than a new id: a silent new identity would orphan this host's endpoints."""
    path = data_root / NODE_ID_FILE
    new = secrets.token_hex(16)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(new + "\n")
            f.flush()
            os.fsync(f.fileno())
        return new
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        why = "it is a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise Invalid(f"cannot read {path}: {why}") from None
    with os.fdopen(fd) as f:
        text = f.read(100).strip()
    if not _NODE_ID.fullmatch(text):
        raise Invalid(f"{path} is damaged (expected 32 hex digits); remove it to give this "
                      "host a new node id")
    return text


def node_ttl(environ: Mapping[str, str]) -> int:
    """The membership lease TTL: ``TTL``, or the test-only override (2..60 s)."""
    raw = environ.get(ENV_NODE_TTL)
    if raw is None or environ.get(ENV_TESTING) != "1":
        return TTL
    if not raw.isdigit() or not 2 <= int(raw) <= 60:
        raise ValueError(f"{ENV_NODE_TTL} must be a whole number of seconds from 2 to 60")
    return int(raw)


@dataclass(frozen=True)
class NodeStatus:
    """One row of ``nsnet node ls``: a node of the view and whether it is known live."""

    node: NodeInfo
    # "ready": its key is in the store now; "unknown": the store cannot be reached, so this
    # is the last view; "down": this node itself, not (yet) registered.
    status: str
    is_self: bool


class Cluster:
    """The daemon's membership of one cluster; see the module docstring."""

    def __init__(self, kv: KV, node: NodeInfo, *, node_id: str, store_url: str = "",
                 ttl: int = TTL, interval: float = INTERVAL, retry: float = RETRY) -> None:
        if node.node_id != node_id:
            raise ValueError("node.node_id and node_id differ")
        self.kv = kv
        self.node_id = node_id
        self.vtep = node.vtep
        self.vxlan_port = node.vxlan_port
        self.store_url = store_url
        self.ipam = GlobalIpam(kv, node_id)
        # ``keepalive`` must not be longer than a third of the lease, or a live node could
        # miss its renewal under load and flap.
        self.membership = Membership(kv, node, ttl=ttl, interval=min(interval, ttl / 3),
                                     retry=retry, on_change=self._nodes_changed)
        self._listeners: list[Callable[[dict[str, NodeInfo]], None]] = []
        self._retry = retry
        self._interval = min(interval, ttl / 3)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        # Set by the wiring once the registry exists: how many containers run here.
        self.count_containers: Callable[[], int] = lambda: 0

    @classmethod
    def from_config(cls, kv: KV, config: ClusterConfig, node_id: str, *,
                    ttl: int = TTL) -> Cluster:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        node = NodeInfo(node_id=node_id, vtep=config.advertise, vxlan_port=config.vxlan_port,
                        hostname=socket.gethostname(), started=now)
        return cls(kv, node, node_id=node_id, store_url=config.store_url, ttl=ttl)

    @property
    def reachable(self) -> bool:
        return self._started and self.membership.reachable

    async def start(self) -> None:
        """Register now if the store answers, else keep trying in the background."""
        try:
            await self._start_membership()
        except Unavailable as e:
            log.warning("cluster store %s unreachable at start (%s): local networks and "
                        "containers work; this node registers when it answers",
                        self.store_url, e.message)
            self._tasks.append(asyncio.create_task(self._start_later(), name="nsnet-join"))
        self._tasks.append(asyncio.create_task(self._publish_loop(), name="nsnet-node-count"))

    async def _start_membership(self) -> None:
        await self.membership.start()
        self._started = True

    async def _start_later(self) -> None:
        while not self._started:
            await asyncio.sleep(self._retry)
            with contextlib.suppress(Unavailable):
                await self._start_membership()

    async def _publish_loop(self) -> None:
        """Publish the container count when it changes, at keepalive cadence: a count is
        information for operators, not worth a write per container start."""
        while True:
            await asyncio.sleep(self._interval)
            count = self.count_containers()
            if self._started and count != self.membership.me.containers:
                with contextlib.suppress(Unavailable):
                    await self.membership.set_containers(count)

    async def stop(self) -> None:
        """Stop the loops and close the store. The lease is kept, not revoked: a restart
        within the TTL is never seen as this host leaving (cluster/membership.py)."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        await self.membership.stop()
        await self.kv.close()

    def on_nodes_change(self, listener: Callable[[dict[str, NodeInfo]], None]) -> None:
        """Call ``listener`` with the new view (node id -> NodeInfo) after every change: a
        node joined, left (its lease expired) or changed its record. It must not block."""
        self._listeners.append(listener)

    def _nodes_changed(self, view: dict[str, NodeInfo]) -> None:
        for listener in self._listeners:
            try:
                listener(dict(view))
            except Exception:  # one listener's bug must not stop membership
                log.exception("node change listener failed")

    def nodes(self) -> list[NodeInfo]:
        """The live nodes (their key is in the store; the last view while it is unreachable,
        see ``reachable``), this one included once its registration shows."""
        view = self.membership.nodes()
        return sorted(view.values(), key=lambda n: (n.hostname, n.vtep, n.node_id))

    def statuses(self) -> list[NodeStatus]:
        """``nodes()`` with liveness, and this node even before its registration shows."""
        view = self.membership.nodes()
        status = "ready" if self.reachable else "unknown"
        out = [NodeStatus(n, status, n.node_id == self.node_id) for n in view.values()]
        if self.node_id not in view:
            out.append(NodeStatus(self.membership.me, "down", True))
        return sorted(out, key=lambda s: (s.node.hostname, s.node.vtep, s.node.node_id))

    def info(self) -> dict[str, Any]:
        """The cluster lines of ``GET /info`` (Docker's names where Docker had them)."""
        return {
            "ClusterStore": self.store_url,
            "ClusterAdvertise": f"{self.vtep}:{self.vxlan_port}",
            "NodeID": self.node_id,
            "StoreReachable": self.reachable,
            "Nodes": len(self.membership.nodes()),
        }
