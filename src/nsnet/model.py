"""The objects nsnet keeps: networks, endpoints, containers, images.

Pure dataclasses with JSON round-trips. They hold Docker's model on purpose (see
docs/architecture.md) so the API layer can render Docker's shapes without a second vocabulary. Keys
in ``to_dict`` are our storage format, not the API format.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PREDEFINED_NETWORKS = ("bridge", "host", "none")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docker also refuses "default" as a name: it is the alias of the default network mode.
RESERVED_NETWORK_NAMES = ("bridge", "host", "none", "default")
# The local bridge that gives overlay containers their way out (Docker's docker_gwbridge).
GATEWAY_NETWORK = "nsnet_gwbridge"


def new_id() -> str:
    """64 hex characters, like Docker's object IDs."""
    return secrets.token_hex(32)


def now_rfc3339() -> str:
    """RFC3339 with nanosecond-shaped fraction; Go's time parser needs a real timestamp."""
    t = datetime.now(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


@dataclass
class IPAMPool:
    """One IPAM config entry of a network (Docker's IPAMConfig)."""

    subnet: str
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: dict[str, str] = field(default_factory=dict)


@dataclass
class Network:
    id: str
    name: str
    driver: str
    created: str
    scope: str = "local"
    internal: bool = False
    attachable: bool = False
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    ipam_driver: str = "default"
    ipam_options: dict[str, str] | None = None
    pools: list[IPAMPool] = field(default_factory=list)
    # True when the subnets came from the user: static container addresses need it.
    user_subnets: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # Driver-private state (bridge name, ...), so reconcile can rebuild without guessing.
    driver_state: dict[str, str] = field(default_factory=dict)

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED_NETWORKS

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Network:
        d = dict(d)
        d["pools"] = [IPAMPool(**p) for p in d.get("pools", [])]
        return cls(**d)


@dataclass
class EndpointRequest:
    """What the user asked for on one network (Docker's EndpointSettings, configuration part)."""

    ipv4_address: str | None = None
    ipv6_address: str | None = None
    aliases: list[str] | None = None
    links: list[str] | None = None
    driver_opts: dict[str, str] | None = None
    mac_address: str | None = None
    gw_priority: int = 0
    # IPAMConfig.LinkLocalIPs: extra addresses (169.254/16, fe80::/10) the interface carries
    # beside its IPAM ones; no IPAM owns them, so two containers may be given the same one.
    link_local_ips: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EndpointRequest:
        return cls(**d)


@dataclass
class Endpoint:
    """A live attachment of a container's sandbox to a network."""

    id: str
    network_id: str
    container_id: str
    ifname: str
    mac: str
    ipv4: str | None = None  # "a.b.c.d"
    ipv4_prefixlen: int = 0
    gateway: str | None = None
    ipv6: str | None = None
    ipv6_prefixlen: int = 0
    ipv6_gateway: str | None = None
    host_ifname: str | None = None  # the host-side veth, if the driver makes one
    dns_names: list[str] = field(default_factory=list)
    default_route: bool = False  # this endpoint's gateway is the sandbox's default route
    # The request's link-local addresses as ``addr/len`` (/16 or /64, as moby adds them).
    link_local: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Endpoint:
        return cls(**d)


@dataclass
class ContainerState:
    status: str = "created"  # created | running | exited | removing | dead
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    # Frozen by ``pause`` (Docker's State.Paused). Beside status "running", not instead of
    # it: a paused container is running to every other use-case (connect, stop, its exit
    # watch). Stored, so a daemon restart still knows; reconcile checks it against runc.
    paused: bool = False


@dataclass
class Attachment:
    """A container's membership of one network: the request, and the endpoint once running."""

    network_id: str
    request: EndpointRequest = field(default_factory=EndpointRequest)
    endpoint: Endpoint | None = None
    # The gateway-bridge endpoint an overlay-only container gets for its outbound traffic
    # (Docker's docker_gwbridge): made and removed by the engine, never asked for, and not
    # shown among the container's networks.
    gateway_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "network_id": self.network_id,
            "request": self.request.to_dict(),
            "endpoint": self.endpoint.to_dict() if self.endpoint else None,
            "gateway_only": self.gateway_only,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attachment:
        ep = d.get("endpoint")
        return cls(
            network_id=d["network_id"],
            request=EndpointRequest.from_dict(d.get("request") or {}),
            endpoint=Endpoint.from_dict(ep) if ep else None,
            gateway_only=bool(d.get("gateway_only", False)),
        )


@dataclass
class Container:
    id: str
    name: str  # without Docker's leading "/"
    image: str  # as the user named it
    image_id: str
    created: str
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    hostname: str = ""
    domainname: str = ""
    user: str = ""
    tty: bool = False
    # ``docker run -i``: the process's stdin is a pipe the daemon writes attached input to;
    # ``stdin_once``: closed when the first attached client's input ends.
    open_stdin: bool = False
    stdin_once: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    network_mode: str = "bridge"  # bridge | host | none | <network name or id>
    # Ordered: insertion order is the connect order, which gives eth0, eth1, ...
    attachments: list[Attachment] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # "name:alias" on the default bridge
    auto_remove: bool = False
    state: ContainerState = field(default_factory=ContainerState)
    sandbox_key: str = ""  # path of the network namespace while running
    restart_count: int = 0
    # Published ports (issue 12, engine/published_ports.py): the request in Docker's shapes
    # (HostConfig.PortBindings, Config.ExposedPorts, -P), and what is published while it runs
    # (protocol, container_port, host_ip, host_port, network_id, endpoint_id), which is what
    # reconcile re-publishes after a daemon restart.
    port_bindings: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    publish_all_ports: bool = False
    ports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def attachment(self, network_id: str) -> Attachment | None:
        for a in self.attachments:
            if a.network_id == network_id:
                return a
        return None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attachments"] = [a.to_dict() for a in self.attachments]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Container:
        d = dict(d)
        d["attachments"] = [Attachment.from_dict(a) for a in d.get("attachments", [])]
        d["state"] = ContainerState(**d.get("state", {}))
        return cls(**d)


@dataclass
class Image:
    id: str  # "sha256:<64 hex>"
    repo_tags: list[str]
    created: str
    size: int = 0
    cmd: list[str] = field(default_factory=lambda: ["sh"])
    env: list[str] = field(default_factory=lambda: [DEFAULT_PATH])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Image:
        return cls(**d)
