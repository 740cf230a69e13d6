"""What the API asks of the engine: the ``Backend`` protocol, and nothing else.

The route modules (system, networks, containers, execs, images) parse a request, call one of
these methods and render the answer; they never reach the runtime, the kernel, the store or
the data root. The engine (``nsnet.engine.core.Engine``) implements it; API unit tests hand in
a fake. Output streams (logs, attach, exec) go through a ``Sink`` the route builds: an async
function that frames and writes one chunk of one stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from typing import Any, Protocol

from nsnet.engine.cluster import NodeStatus
from nsnet.engine.containers import ContainerCreate
from nsnet.engine.core import EngineInfo
from nsnet.engine.events import Event, Subscription
from nsnet.engine.networks import NetworkCreate
from nsnet.engine.sessions import ExecConfig, ExecRecord, ExecSession, Sink
from nsnet.model import Container, EndpointRequest, Image, Network

__all__ = ["Backend", "Sink"]


class Backend(Protocol):
    # -- system -----------------------------------------------------------------------------

    def info(self) -> EngineInfo: ...

    def metrics_text(self) -> str: ...

    def nodes(self) -> list[NodeStatus]:
        """The cluster's hosts; ``Unavailable`` outside a cluster."""
        ...

    async def reconcile(self) -> dict[str, Any]: ...

    def subscribe_events(self, filters: dict[str, list[str]], since: int | None,
                         until: int | None) -> tuple[list[Event], Subscription]:
        """Recent events in [since, until] (unix ns) and a subscription to what follows."""
        ...

    def unsubscribe_events(self, sub: Subscription) -> None: ...

    # -- networks ---------------------------------------------------------------------------

    def network_table(self) -> Mapping[str, Network]:
        """Every network by ID, for rendering a container's attachments."""

    def find_network(self, ref: str) -> Network: ...

    def network_users(self, net: Network) -> list[Container]: ...

    def list_networks(self, filters: dict[str, list[str]]) -> list[Network]: ...

    async def create_network(self, req: NetworkCreate) -> Network:
        """Async: an overlay network is claimed in the cluster store."""

    async def remove_network(self, ref: str) -> None: ...

    async def prune_networks(self, filters: dict[str, list[str]]) -> list[str]: ...

    async def connect(self, net_ref: str, c_ref: str, req: EndpointRequest) -> None:
        """Async: an overlay endpoint's address is claimed in the cluster store."""

    def disconnect(self, net_ref: str, c_ref: str, force: bool) -> None: ...

    # -- images -----------------------------------------------------------------------------

    def list_images(self) -> list[Image]: ...

    def find_image(self, ref: str) -> Image: ...

    async def import_image(self, chunks: AsyncIterable[bytes], repo: str | None) -> Image:
        """A root filesystem tarball, read from the request as it arrives."""

    def remove_image(self, ref: str, force: bool) -> list[dict[str, str]]: ...

    # -- containers -------------------------------------------------------------------------

    def find_container(self, ref: str) -> Container: ...

    def list_containers(self, show_all: bool,
                        filters: dict[str, list[str]]) -> list[Container]: ...

    def create_container(self, req: ContainerCreate) -> Container: ...

    async def start_container(self, ref: str) -> None: ...

    async def stop_container(self, ref: str, timeout: float | None = None,
                             sig: str | None = None) -> None: ...

    async def restart_container(self, ref: str, timeout: float | None = None) -> None: ...

    async def kill_container(self, ref: str, sig: str | None = None) -> None: ...

    async def wait_container(self, ref: str, condition: str = "not-running") -> int: ...

    async def remove_container(self, ref: str, force: bool = False) -> None: ...

    # rename, pause/unpause, top, resize (issue 11)

    async def rename_container(self, ref: str, new_name: str) -> None: ...

    async def pause_container(self, ref: str) -> None: ...

    async def unpause_container(self, ref: str) -> None: ...

    def container_paused(self, c: Container) -> bool:
        """Docker's State.Paused; the container's status stays "running" meanwhile."""

    async def top_container(self, ref: str,
                            ps_args: str) -> tuple[list[str], list[list[str]]]:
        """Docker's Titles and Processes; 409 when the container is not running."""

    def resize_container(self, ref: str, height: int, width: int) -> None: ...

    def resize_exec(self, exec_id: str, height: int, width: int) -> None: ...

    # -- output and exec sessions -----------------------------------------------------------

    async def stream_logs(self, ref: str, sink: Sink, stdout: bool, stderr: bool,
                          follow: bool, tail: int | None) -> None: ...

    async def attach(self, ref: str, sink: Sink, stdout: bool, stderr: bool, logs: bool,
                     stream: bool) -> None: ...

    def create_exec(self, ref: str, cfg: ExecConfig) -> ExecRecord: ...

    def find_exec(self, exec_id: str) -> ExecRecord: ...

    async def start_exec(self, exec_id: str, detach: bool) -> ExecSession | None:
        """Detached: started and reaped by the engine, None. Attached: a session to pump."""
