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
import signal
import tempfile
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nsnet.drivers.base import Driver
from nsnet.engine.cluster import Cluster, NodeStatus
from nsnet.engine.config import EngineConfig
from nsnet.engine.connections import ConnectionService
from nsnet.engine.containers import ContainerCreate, ContainerService
from nsnet.engine.events import Event, EventBus, Subscription, container_attributes
from nsnet.engine.filter_regex import filter_budget
from nsnet.engine.filters import check_container_filters, container_matches, network_matches
from nsnet.engine.global_endpoints import GlobalEndpoints
from nsnet.engine.networks import NetworkCreate, NetworkService
from nsnet.engine.ports import Images, Kernel, Runtime, Store
from nsnet.engine.reconcile import Reconciler, Report
from nsnet.engine.registry import ContainerWaiters, Registry
from nsnet.engine.sandboxes import SandboxService
from nsnet.engine.sessions import ExecConfig, ExecRecord, ExecSession, Sessions, Sink
from nsnet.errors import Conflict, Invalid, NotModified, NsnetError, Unavailable
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
    events: EventBus = field(default_factory=EventBus)  # GET /events


class Engine:
    """The ``Backend`` of the API (nsnet.api.backend), over the engine's services."""

    def __init__(self, services: Services, metrics: Callable[[], str] | None = None) -> None:
        self.s = services
        self.config = services.config
        self.registry = services.registry
        self.runtime = services.runtime
        self._metrics = metrics
        self.events = services.events
        # Signals sent by a stop/rm -f whose ``kill`` event must come before the ``die``.
        self._pending_kill: dict[str, str] = {}
        # ``destroy`` reporters by container, each called once (rm or the removed waiter).
        self._destroy: dict[str, Callable[[], None]] = {}
        services.containers.on_exit = self._container_died
        services.containers.on_escalate = self._stop_escalated

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
            self._watch_removal(self.registry.containers[cid])
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
        net = await self.s.networks.create(req)
        self._network_event(net, "create")
        return net

    async def remove_network(self, ref: str) -> None:
        net = self.registry.find_network(ref)
        await self.s.networks.remove(ref)
        self._network_event(net, "destroy")

    async def prune_networks(self, filters: dict[str, list[str]]) -> list[str]:
        before = {n.name: n for n in self.registry.networks.values()}
        pruned = await self.s.networks.prune(filters)
        for name in pruned:
            if name in before:
                self._network_event(before[name], "destroy")
        return pruned

    async def connect(self, net_ref: str, c_ref: str, req: EndpointRequest) -> None:
        net, c = self.registry.find_network(net_ref), self.registry.find_container(c_ref)
        await self.s.connections.connect(net_ref, c_ref, req)
        self._network_event(net, "connect", container=c.id)

    def disconnect(self, net_ref: str, c_ref: str, force: bool) -> None:
        net, c = self.registry.find_network(net_ref), self.registry.find_container(c_ref)
        self.s.connections.disconnect(net_ref, c_ref, force)
        self._network_event(net, "disconnect", container=c.id)

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
            img = await loop.run_in_executor(None, self.s.images.import_tar, Path(tmp), repo)
            self.events.emit("image", "import", img.id, {"name": repo or img.id})
            return img
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def remove_image(self, ref: str, force: bool) -> list[dict[str, str]]:
        img = self.s.images.resolve(ref)
        in_use = any(c.image_id == img.id for c in self.registry.containers.values())
        out = self.s.images.remove(ref, force, in_use)
        for entry in out:
            for key, action in (("Untagged", "untag"), ("Deleted", "delete")):
                if key in entry:
                    self.events.emit("image", action, img.id, {"name": entry[key]})
        return out

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
        c = self.s.containers.create_container(req)
        self._container_event(c, "create")
        self._watch_removal(c)
        return c

    async def start_container(self, ref: str) -> None:
        """A client's start: moby removes an auto-remove container whose start failed
        (``docker run --rm`` waits for condition=removed before it reports the error), and a
        command that cannot run is the caller's error (moby's setExitCodeFromError)."""
        c = self.registry.find_container(ref)
        try:
            await self.s.containers.start_container(c.id)
            self._endpoint_events(c, "connect")  # Docker: the joins, then the start
            self._container_event(c, "start")
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
        c = self.registry.find_container(ref)
        self._expect_kill(c, sig, signal.SIGTERM)
        try:
            await self.s.containers.stop_container(ref, timeout, sig)
        finally:
            pending = self._pending_kill.pop(c.id, None)
        if pending is not None:  # the signal did not end it: still Docker's kill event
            self._container_event(c, "kill", signal=pending)
        self._container_event(c, "stop")

    async def restart_container(self, ref: str, timeout: float | None = None) -> None:
        c = self.registry.find_container(ref)
        was_running = c.state.status == "running"
        self._expect_kill(c, None, signal.SIGTERM)
        try:
            await self.s.containers.restart_container(ref, timeout)
        finally:
            self._pending_kill.pop(c.id, None)
        for action in (("stop", "start", "restart") if was_running else ("start", "restart")):
            self._container_event(c, action)

    async def kill_container(self, ref: str, sig: str | None = None) -> None:
        await self.s.containers.kill_container(ref, sig)
        c = self.registry.find_container(ref)
        self._container_event(c, "kill", signal=_signal_number(sig, signal.SIGKILL))

    async def wait_container(self, ref: str, condition: str = "not-running") -> int:
        return await self.s.containers.wait_container(ref, condition)

    async def remove_container(self, ref: str, force: bool = False) -> None:
        """``destroy`` comes from the removal itself (``_watch_removal``), so an auto-remove
        container reports it too."""
        c = self.registry.find_container(ref)
        if force:
            self._expect_kill(c, None, signal.SIGKILL)
        try:
            await self.s.containers.remove_container(ref, force)
        finally:
            self._pending_kill.pop(c.id, None)
        if c.id not in self.registry.containers:
            self._destroyed(c.id)  # now, not a loop turn later when the waiter fires

    # -- rename, pause/unpause, top, resize (issue 11) ----------------------------------------

    async def rename_container(self, ref: str, new_name: str) -> None:
        c = self.registry.find_container(ref)
        old = c.name
        await self.s.containers.rename_container(ref, new_name)
        self._container_event(c, "rename", oldName="/" + old)  # moby's "/" form

    async def pause_container(self, ref: str) -> None:
        await self.s.containers.pause_container(ref)
        self._container_event(self.registry.find_container(ref), "pause")

    async def unpause_container(self, ref: str) -> None:
        await self.s.containers.unpause_container(ref)
        self._container_event(self.registry.find_container(ref), "unpause")

    def container_paused(self, c: Container) -> bool:
        return self.s.containers.is_paused(c)

    async def top_container(self, ref: str,
                            ps_args: str) -> tuple[list[str], list[list[str]]]:
        return await self.s.containers.top_container(ref, ps_args)

    def resize_container(self, ref: str, height: int, width: int) -> None:
        self.s.containers.resize_container(ref, height, width)

    def resize_exec(self, exec_id: str, height: int, width: int) -> None:
        """A running TTY exec's terminal follows the client's window; any other exec that
        exists answers 200 with nothing to size, as moby does."""
        self.s.sessions.resize_exec(exec_id, height, width)

    # -- sessions ---------------------------------------------------------------------------

    async def stream_logs(self, ref: str, sink: Sink, stdout: bool, stderr: bool,
                          follow: bool, tail: int | None) -> None:
        c = self.registry.find_container(ref)
        await self.s.sessions.stream_logs(c, sink, stdout, stderr, follow, tail)

    async def attach(self, ref: str, sink: Sink, stdout: bool, stderr: bool, logs: bool,
                     stream: bool) -> None:
        """moby reports every attach (``docker run`` without -d, ``docker attach``) as a
        container ``attach`` event, before the stream follows."""
        self._container_event(self.registry.find_container(ref), "attach")
        await self.s.sessions.attach(ref, sink, stdout, stderr, logs, stream)

    def create_exec(self, ref: str, cfg: ExecConfig) -> ExecRecord:
        c = self.registry.find_container(ref)
        if self.s.containers.is_paused(c):
            # moby refuses at create; runc would fail at start with a 255 and its own words.
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        e = self.s.sessions.create_exec(ref, cfg)
        self._exec_event(e, "exec_create: " + " ".join(e.cmd))
        return e

    def find_exec(self, exec_id: str) -> ExecRecord:
        return self.s.sessions.find_exec(exec_id)

    async def start_exec(self, exec_id: str, detach: bool) -> ExecSession | None:
        reapers = set(self.s.sessions.reapers)
        session = await self.s.sessions.start_exec(exec_id, detach)
        e = self.s.sessions.find_exec(exec_id)
        self._exec_event(e, "exec_start: " + " ".join(e.cmd))
        if session is not None:
            return _ReportedExecSession(session.record, session.proc, self._exec_died)
        for reaper in self.s.sessions.reapers - reapers:  # the detached command's
            reaper.add_done_callback(lambda _f, e=e: self._exec_died(e))  # type: ignore[misc]
        return None

    # -- events (GET /events) ---------------------------------------------------------------

    def subscribe_events(self, filters: dict[str, list[str]], since: int | None,
                         until: int | None) -> tuple[list[Event], Subscription]:
        return self.events.subscribe(filters, since, until)

    def unsubscribe_events(self, sub: Subscription) -> None:
        self.events.unsubscribe(sub)

    def _container_event(self, c: Container, action: str, **extra: str) -> None:
        self.events.emit("container", action, c.id,
                         container_attributes(c.name, c.image, c.labels, **extra))

    def _network_event(self, net: Network, action: str, **extra: str) -> None:
        self.events.emit("network", action, net.id,
                         {"name": net.name, "type": net.driver, **extra})

    def _exec_event(self, e: ExecRecord, action: str, **extra: str) -> None:
        c = self.registry.containers.get(e.container_id)
        if c is not None:
            self._container_event(c, action, execID=e.id, **extra)

    def _exec_died(self, e: ExecRecord) -> None:
        code = e.exit_code if e.exit_code is not None else -1
        self._exec_event(e, "exec_die", exitCode=str(code))

    def _expect_kill(self, c: Container, sig: str | None, default: int) -> None:
        if c.state.status == "running":
            self._pending_kill[c.id] = _signal_number(sig, default)

    def _stop_escalated(self, c: Container, sig: int) -> None:
        """A stop's signal did not end the container in time: its ``kill`` is reported now
        and the SIGKILL's waits for the ``die``, as moby's stop logs one kill per signal."""
        pending = self._pending_kill.pop(c.id, None)
        if pending is not None:
            self._container_event(c, "kill", signal=pending)
        self._pending_kill[c.id] = str(int(sig))

    def _container_died(self, c: Container, code: int) -> None:
        """Called by the container service when a process ended (``die``); a stop's signal
        is reported first, as Docker orders them."""
        pending = self._pending_kill.pop(c.id, None)
        if pending is not None:
            self._container_event(c, "kill", signal=pending)
        self._container_event(c, "die", exitCode=str(code))
        self._endpoint_events(c, "disconnect")

    def _endpoint_events(self, c: Container, action: str) -> None:
        """Docker reports a running container's endpoints joining and leaving its networks
        as network connect/disconnect (hidden gateway attachments excepted)."""
        for a in c.attachments:
            net = self.registry.networks.get(a.network_id)
            if net is not None and not a.gateway_only:
                self._network_event(net, action, container=c.id)

    def _watch_removal(self, c: Container) -> None:
        """``destroy`` once the container is gone, however it went (rm, rm -f, --rm): the
        service resolves its ``removed`` waiters exactly once."""
        w = self.s.containers.waiters.get(c.id)
        try:
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        except RuntimeError:  # no loop: a synchronous unit test of the engine
            return
        if w is None:
            return
        self._destroy[c.id] = lambda: self._container_event(c, "destroy")
        fut.add_done_callback(lambda _f: self._destroyed(c.id))
        w.removed.append(fut)

    def _destroyed(self, cid: str) -> None:
        report = self._destroy.pop(cid, None)
        if report is not None:
            report()


def _signal_number(sig: str | None, default: int) -> str:
    """The ``signal`` attribute as Docker writes it: the number."""
    if not sig:
        return str(int(default))
    name = sig.upper()
    if name.isdigit():
        return name
    try:
        return str(int(signal.Signals[name if name.startswith("SIG") else "SIG" + name]))
    except KeyError:
        return sig


class _ReportedExecSession(ExecSession):
    """An attached exec whose end is reported as ``exec_die``."""

    def __init__(self, record: ExecRecord, proc: asyncio.subprocess.Process,
                 died: Callable[[ExecRecord], None]) -> None:
        super().__init__(record, proc)
        self._died = died

    async def pump(self, sink: Sink) -> None:
        try:
            await super().pump(sink)
        finally:
            self._died(self.record)



