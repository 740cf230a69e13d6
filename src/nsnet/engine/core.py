"""The engine's face: one ``Engine`` that implements the API's ``Backend`` by delegating.

It holds no state of its own: the services (networks, sandboxes, connections, containers,
sessions, reconcile) do the work, each over the collaborators it was handed in
``engine/wiring.py``. What is here is the glue a use-case needs across services: Docker's
removal of an auto-remove container whose start failed, the in-use check of an image removal,
the temporary file of an image import, the counts of ``GET /info``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nsnet.drivers.base import Driver
from nsnet.engine.cluster import Cluster, NodeStatus
from nsnet.engine.config import EngineConfig
from nsnet.engine.connections import ConnectionService
from nsnet.engine.containers import ContainerCreate, ContainerService
from nsnet.engine.filter_regex import filter_budget
from nsnet.engine.filters import check_container_filters, container_matches, network_matches
from nsnet.engine.global_endpoints import GlobalEndpoints
from nsnet.engine.networks import NetworkCreate, NetworkService
from nsnet.engine.ports import Images, Kernel, Runtime, Store
from nsnet.engine.reconcile import Reconciler, Report
from nsnet.engine.registry import ContainerWaiters, Registry
from nsnet.engine.sandboxes import SandboxService
from nsnet.engine.sessions import ExecConfig, ExecRecord, ExecSession, Sessions, Sink
from nsnet.errors import Invalid, NotModified, NsnetError, Unavailable
from nsnet.exit_codes import classify_start_error
from nsnet.model import Container, EndpointRequest, Image, Network

NOT_IN_CLUSTER = "this node is not part of a cluster: start nsnetd with --cluster-store"


@dataclass(frozen=True)
class EngineInfo:
    """What ``GET /info`` reports of the engine."""

    daemon_id: str
    containers: int
    running: int
    images: int
    network_drivers: list[str]
    data_root: Path
    exec_root: Path
    cluster: dict[str, Any] | None = None  # Cluster.info(), None outside a cluster


@dataclass
class Services:
    """The engine's parts, built once by ``engine.wiring.build_engine``."""

    config: EngineConfig
    store: Store
    kernel: Kernel
    images: Images
    runtime: Runtime
    drivers: Mapping[str, Driver]
    registry: Registry
    networks: NetworkService
    sandboxes: SandboxService
    connections: ConnectionService
    containers: ContainerService
    sessions: Sessions
    reconciler: Reconciler
    cluster: Cluster | None = None  # None without --cluster-store
    global_endpoints: GlobalEndpoints | None = None  # with a cluster


class Engine:
    """The ``Backend`` of the API (nsnet.api.backend), over the engine's services."""

    def __init__(self, services: Services, metrics: Callable[[], str] | None = None) -> None:
        self.s = services
        self.config = services.config
        self.registry = services.registry
        self.runtime = services.runtime
        self._metrics = metrics

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> Report:
        """Load the store, make the predefined networks, reconcile the kernel to the store."""
        self.registry.load()
        if self.s.cluster is not None:
            await self.s.cluster.start()  # never fails on an unreachable store
        if self.s.networks.global_networks is not None:
            # Before reconcile: restored containers must find their global networks.
            await self.s.networks.global_networks.start()
        for cid in self.registry.containers:
            self.s.containers.waiters[cid] = ContainerWaiters()
        await asyncio.get_running_loop().run_in_executor(None, self.s.images.ensure_busybox)
        self.s.networks.ensure_predefined()
        report = await self.reconcile()
        if self.s.global_endpoints is not None:
            # After reconcile: the endpoints that survived are this host's records.
            await self.s.global_endpoints.start()
        return report

    async def reconcile(self) -> Report:
        return await self.s.reconciler.run()

    async def close(self) -> None:
        for t in list(self.s.containers.exit_tasks.values()):
            t.cancel()
        if self.s.global_endpoints is not None:
            await self.s.global_endpoints.flush(timeout=2.0)
            await self.s.global_endpoints.stop()
        if self.s.networks.global_networks is not None:
            await self.s.networks.global_networks.stop()
        if self.s.cluster is not None:
            await self.s.cluster.stop()
        self.s.kernel.close()
        self.s.store.close()

    # -- system -----------------------------------------------------------------------------

    def info(self) -> EngineInfo:
        cs = list(self.registry.containers.values())
        return EngineInfo(
            daemon_id=str(self.config.extra.get("daemon_id", "")), containers=len(cs),
            running=sum(1 for c in cs if c.state.status == "running"),
            images=len(self.s.images.list()),
            network_drivers=sorted({"null", *self.s.drivers.keys()}),
            data_root=self.config.data_root, exec_root=self.config.exec_root,
            cluster=self.s.cluster.info() if self.s.cluster is not None else None)

    def nodes(self) -> list[NodeStatus]:
        if self.s.cluster is None:
            # 503 as Docker answers `docker node ls` outside a swarm.
            raise Unavailable(NOT_IN_CLUSTER)
        return self.s.cluster.statuses()

    def metrics_text(self) -> str:
        return self._metrics() if self._metrics is not None else ""

    # -- networks ---------------------------------------------------------------------------

    def network_table(self) -> Mapping[str, Network]:
        return self.registry.networks

    def find_network(self, ref: str) -> Network:
        return self.registry.find_network(ref)

    def network_users(self, net: Network) -> list[Container]:
        return self.registry.network_users(net)

    def list_networks(self, filters: dict[str, list[str]]) -> list[Network]:
        out = []
        with filter_budget():
            for n in sorted(self.registry.networks.values(), key=lambda n: n.name):
                if network_matches(n, filters, bool(self.registry.network_users(n))):
                    out.append(n)
        return out

    async def create_network(self, req: NetworkCreate) -> Network:
        return await self.s.networks.create(req)

    async def remove_network(self, ref: str) -> None:
        await self.s.networks.remove(ref)

    async def prune_networks(self, filters: dict[str, list[str]]) -> list[str]:
        return await self.s.networks.prune(filters)

    async def connect(self, net_ref: str, c_ref: str, req: EndpointRequest) -> None:
        await self.s.connections.connect(net_ref, c_ref, req)

    def disconnect(self, net_ref: str, c_ref: str, force: bool) -> None:
        self.s.connections.disconnect(net_ref, c_ref, force)

    # -- images -----------------------------------------------------------------------------

    def list_images(self) -> list[Image]:
        return self.s.images.list()

    def find_image(self, ref: str) -> Image:
        return self.s.images.resolve(ref)

    async def import_image(self, chunks: AsyncIterable[bytes], repo: str | None) -> Image:
        """The upload goes to a private file under the data root, then into the image store
        off the event loop; the file goes whatever happens."""
        tmpdir = self.config.data_root / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmpdir, suffix=".tar")
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    f.write(chunk)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self.s.images.import_tar, Path(tmp), repo)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def remove_image(self, ref: str, force: bool) -> list[dict[str, str]]:
        img = self.s.images.resolve(ref)
        in_use = any(c.image_id == img.id for c in self.registry.containers.values())
        return self.s.images.remove(ref, force, in_use)

    # -- containers -------------------------------------------------------------------------

    def find_container(self, ref: str) -> Container:
        return self.registry.find_container(ref)

    def list_containers(self, show_all: bool, filters: dict[str, list[str]]) -> list[Container]:
        names = check_container_filters(filters)
        out = []
        with filter_budget():
            for c in sorted(self.registry.containers.values(), key=lambda c: c.created,
                            reverse=True):
                if not show_all and c.state.status != "running" and "status" not in filters:
                    continue
                if container_matches(c, filters, names, self.registry.networks):
                    out.append(c)
        return out

    def create_container(self, req: ContainerCreate) -> Container:
        return self.s.containers.create_container(req)

    async def start_container(self, ref: str) -> None:
        """A client's start: moby removes an auto-remove container whose start failed
        (``docker run --rm`` waits for condition=removed before it reports the error), and a
        command that cannot run is the caller's error (moby's setExitCodeFromError)."""
        c = self.registry.find_container(ref)
        try:
            await self.s.containers.start_container(c.id)
        except NotModified:
            raise
        except Exception as e:
            cur = self.registry.containers.get(c.id)
            if cur is not None and cur.auto_remove and cur.state.status != "running":
                with contextlib.suppress(NsnetError):
                    await self.s.containers.remove_container(c.id, force=True)
            if isinstance(e, NsnetError) and e.status >= 500 and \
                    classify_start_error(e.message) is not None:
                raise Invalid(e.message) from e
            raise

    async def stop_container(self, ref: str, timeout: float | None = None,
                             sig: str | None = None) -> None:
        await self.s.containers.stop_container(ref, timeout, sig)

    async def restart_container(self, ref: str, timeout: float | None = None) -> None:
        await self.s.containers.restart_container(ref, timeout)

    async def kill_container(self, ref: str, sig: str | None = None) -> None:
        await self.s.containers.kill_container(ref, sig)

    async def wait_container(self, ref: str, condition: str = "not-running") -> int:
        return await self.s.containers.wait_container(ref, condition)

    async def remove_container(self, ref: str, force: bool = False) -> None:
        await self.s.containers.remove_container(ref, force)

    # -- sessions ---------------------------------------------------------------------------

    async def stream_logs(self, ref: str, sink: Sink, stdout: bool, stderr: bool,
                          follow: bool, tail: int | None) -> None:
        c = self.registry.find_container(ref)
        await self.s.sessions.stream_logs(c, sink, stdout, stderr, follow, tail)

    async def attach(self, ref: str, sink: Sink, stdout: bool, stderr: bool, logs: bool,
                     stream: bool) -> None:
        await self.s.sessions.attach(ref, sink, stdout, stderr, logs, stream)

    def create_exec(self, ref: str, cfg: ExecConfig) -> ExecRecord:
        return self.s.sessions.create_exec(ref, cfg)

    def find_exec(self, exec_id: str) -> ExecRecord:
        return self.s.sessions.find_exec(exec_id)

    async def start_exec(self, exec_id: str, detach: bool) -> ExecSession | None:
        return await self.s.sessions.start_exec(exec_id, detach)



