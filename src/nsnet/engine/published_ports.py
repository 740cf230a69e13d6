"""Published ports (issue 12): which host ports a container gets, held by bound sockets.

A container asks in Docker's shapes, kept on the ``Container`` as given: ``port_bindings``
(``HostConfig.PortBindings``: ``"80/tcp" -> [{"HostIp": "", "HostPort": "8080"}]``, a
``HostPort`` of "" meaning any free port and ``"8000-8010"`` the first free one of a range),
``exposed_ports`` and ``publish_all_ports`` (``-P``: every exposed port on a free host port).

At start, after the sandbox and before runc, each wanted port is reserved by binding a socket
on the host (a TCP socket also listens, so a program using ``SO_REUSEADDR`` cannot bind the
port either): nothing else on the host can take it, and a second container asking gets
Docker's ``port is already allocated``. A free port comes from the kernel (a bind to port 0
picks from ``ip_local_port_range``). Then the driver publishes them all in one firewall change.
The sockets never carry traffic: DNAT turns packets away before they reach them.

Each step pushes its undo; exit and removal unpublish and close the sockets; reconcile binds
them again and re-publishes for containers that outlived the daemon, and has the driver drop
map elements no live endpoint owns.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from nsnet.drivers.base import Driver, PortMapping, PublishesPorts
from nsnet.engine.registry import Registry
from nsnet.engine.undo import Undo
from nsnet.errors import Conflict, Forbidden, Invalid, NsnetError
from nsnet.model import Attachment, Container, Network

log = logging.getLogger("nsnet.engine")

PROTOCOLS = ("tcp", "udp", "sctp")
# The network's default host address for a binding without one (Docker's option).
OPT_HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"


@dataclass(frozen=True)
class PortRequest:
    """One wanted binding: ``host_low``..``host_high`` (0..0: any free port)."""

    protocol: str
    container_port: int
    host_ip: str
    host_low: int
    host_high: int
    # 0: no host address given, every family the endpoint has (Docker's dual stack);
    # 4 or 6: that family only (``0.0.0.0``, ``::`` or one address).
    family: int = 0


def split_port_key(key: str) -> tuple[int, str]:
    """``"80/tcp"`` (or ``"80"``, tcp) as (80, "tcp")."""
    port_s, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise Invalid(f"invalid proto: {proto}")
    if not port_s.isascii() or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise Invalid(f"invalid containerPort: {port_s}")
    return int(port_s), proto


def host_port_range(value: str) -> tuple[int, int]:
    """``""`` (0, 0), ``"8080"`` or ``"8000-8010"``; Docker's message on a bad one."""
    if value == "":
        return 0, 0
    lo_s, dash, hi_s = value.partition("-")
    try:
        lo = int(lo_s) if lo_s.isascii() and lo_s.isdigit() else -1
        hi = (int(hi_s) if hi_s.isascii() and hi_s.isdigit() else -1) if dash else lo
    except ValueError:
        lo = hi = -1
    if not (0 <= lo <= 65535 and 0 <= hi <= 65535) or lo > hi or (lo == 0 and hi != 0):
        raise Invalid(f"invalid hostPort: {value}")
    return lo, hi


def requests_of(c: Container) -> list[PortRequest]:
    """What ``c`` asks for, in a stable order; ``-P`` adds every exposed port not bound."""
    out: list[PortRequest] = []
    bound: set[str] = set()
    for key in sorted(c.port_bindings, key=_key_order):
        port, proto = split_port_key(key)
        bound.add(f"{port}/{proto}")
        for b in c.port_bindings[key] or [{}]:
            lo, hi = host_port_range(b.get("HostPort", ""))
            host_ip, family = _host_ip(b.get("HostIp", ""))
            out.append(PortRequest(proto, port, host_ip, lo, hi, family))
    if c.publish_all_ports:
        for key in sorted(c.exposed_ports, key=_key_order):
            port, proto = split_port_key(key)
            if f"{port}/{proto}" not in bound:
                out.append(PortRequest(proto, port, "", 0, 0))
    return out


def _key_order(key: str) -> tuple[int, str]:
    try:
        return split_port_key(key)
    except Invalid:
        return 0, key


def _host_ip(value: str) -> tuple[str, int]:
    """(host address as stored, family): ``""`` is every address of every family (0),
    ``0.0.0.0`` every IPv4 address (stored as "", as before IPv6), ``::`` every IPv6 one.
    ``::1`` is refused: the kernel will not route a packet from ::1 out of the host's loopback
    (IPv6 has no ``route_localnet``), so only a proxy could serve it, and nsnet runs none."""
    if value == "":
        return "", 0
    try:
        ip = ipaddress.ip_address(value.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise Invalid(f"invalid IP address: {value}") from None
    if ip.version == 4:
        return ("" if ip.is_unspecified else str(ip)), 4
    if ip.is_loopback:
        raise Invalid("publishing on ::1 is not supported: the kernel cannot DNAT from the "
                      "IPv6 loopback address without a proxy process (use [::] or 127.0.0.1)")
    if ip.is_link_local:  # the DNATed packet would leave with a link-local source: dropped
        raise Invalid(f"publishing on the link-local address {ip} is not supported: the "
                      "kernel cannot DNAT it to a container without a proxy process")
    return str(ip), 6


def _ip_family(host_ip: str) -> int:
    """The family of a stored host address ("" is IPv4's every address)."""
    return 4 if host_ip == "" else ipaddress.ip_address(host_ip).version


def _wildcard(family: int) -> str:
    return "" if family == 4 else "::"


def wants_ports(c: Container) -> bool:
    return bool(c.port_bindings) or (c.publish_all_ports and bool(c.exposed_ports))


def check_request(c: Container, networks: Iterable[Network | None]) -> None:
    """Refusals before anything is made: a bad spec, a network mode with nowhere to publish,
    and an internal network (it has no way in from the host by design). ``networks`` are the
    container's in connect order: the first is its NetworkMode's (None: not made yet)."""
    if not wants_ports(c):
        return
    requests_of(c)
    if c.network_mode in ("host", "none"):
        raise Invalid(f"published ports cannot be used with network mode {c.network_mode}")
    if c.network_mode.startswith("container:"):
        raise Invalid("conflicting options: port publishing and the container type network "
                      "mode")
    first = next(iter(networks), None)
    if first is not None and first.internal:
        raise Forbidden(f"cannot publish ports on internal network {first.name}: it has no "
                        "access from outside by design")


# -- reservation ------------------------------------------------------------------------------


SocketKey = tuple[str, str, int]  # (protocol, host_ip or "", host port)


def _bind(proto: str, host_ip: str, port: int) -> socket.socket:
    """A socket holding ``host_ip:port`` (0: the kernel picks from ip_local_port_range)."""
    v6 = _ip_family(host_ip) == 6
    af = socket.AF_INET6 if v6 else socket.AF_INET
    if proto == "tcp":
        s = socket.socket(af, socket.SOCK_STREAM)
    elif proto == "udp":
        s = socket.socket(af, socket.SOCK_DGRAM)
    else:
        s = socket.socket(af, socket.SOCK_SEQPACKET, socket.IPPROTO_SCTP)
    try:
        if v6:  # [::] holds the IPv6 port only: the IPv4 one is held by its own socket
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host_ip or "0.0.0.0", port))
        if proto != "udp":
            s.listen(1)
    except BaseException:
        s.close()
        raise
    return s


def already_allocated(host_ip: str, port: int) -> Conflict:
    return Conflict(f"Bind for {_shown(host_ip)}:{port} failed: port is already allocated")


def _shown(host_ip: str) -> str:
    """An address as Docker prints it before ``:port``."""
    if host_ip == "":
        return "0.0.0.0"
    return f"[{host_ip}]" if ":" in host_ip else host_ip


class Reservations:
    """The sockets that hold published host ports, by (protocol, host address, port)."""

    def __init__(self) -> None:
        self.held: dict[SocketKey, socket.socket] = {}

    def taken(self, proto: str, host_ip: str, port: int) -> bool:
        """Ours already, on that address or on every address (a wildcard covers all)."""
        fam = _ip_family(host_ip)
        wild = _wildcard(fam)
        for p, ip, n in self.held:
            if p == proto and n == port and _ip_family(ip) == fam and (
                    ip in (host_ip, wild) or host_ip == wild):
                return True
        return False

    def reserve(self, r: PortRequest) -> int:
        """The host port now held for ``r``; Conflict when none of its range is free."""
        if r.host_low == 0:
            for _ in range(16):  # the kernel's pick may be one we hold on another address
                s = self._bind_or_none(r.protocol, r.host_ip, 0)
                if s is None:
                    break
                port = int(s.getsockname()[1])
                if not self.taken(r.protocol, r.host_ip, port):
                    self.held[(r.protocol, r.host_ip, port)] = s
                    return port
                s.close()
            raise Conflict("no free host port for "
                           f"{_shown(r.host_ip)}::{r.container_port}/{r.protocol}")
        for port in range(r.host_low, r.host_high + 1):
            if self.taken(r.protocol, r.host_ip, port):
                continue
            s = self._bind_or_none(r.protocol, r.host_ip, port)
            if s is not None:
                self.held[(r.protocol, r.host_ip, port)] = s
                return port
        if r.host_low == r.host_high:
            raise already_allocated(r.host_ip, r.host_low)
        raise Conflict(f"Bind for {_shown(r.host_ip)}:{r.host_low}-{r.host_high} "
                       "failed: port is already allocated")

    def reserve_same(self, rs: Sequence[PortRequest]) -> int:
        """One host port held for every one of ``rs`` (one binding's families): Docker gives
        ``0.0.0.0:P`` and ``[::]:P`` the same ``P``. Conflict when no port of the range is
        free in them all; nothing is left held then."""
        first, rest = rs[0], list(rs[1:])
        if not rest:
            return self.reserve(first)
        if first.host_low == 0:
            candidates: Iterable[int] = (0 for _ in range(16))
        else:
            candidates = range(first.host_low, first.host_high + 1)
        for want in candidates:
            try:
                port = self.reserve(dataclasses.replace(first, host_low=want, host_high=want))
            except Conflict:
                continue
            got: list[PortRequest] = []
            try:
                for r in rest:
                    self.reserve(dataclasses.replace(r, host_low=port, host_high=port))
                    got.append(r)
                return port
            except Conflict:
                for r in [first, *got]:
                    self.release(r.protocol, r.host_ip, port)
        if first.host_low == 0:
            raise Conflict(f"no free host port for [::]::{first.container_port}/"
                           f"{first.protocol} on IPv4 and IPv6 alike")
        if first.host_low == first.host_high:
            raise already_allocated(first.host_ip, first.host_low)
        raise Conflict(f"Bind for {_shown(first.host_ip)}:{first.host_low}-{first.host_high} "
                       "failed: port is already allocated")

    @staticmethod
    def _bind_or_none(proto: str, host_ip: str, port: int) -> socket.socket | None:
        try:
            return _bind(proto, host_ip, port)
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return None
            if e.errno == errno.EADDRNOTAVAIL:
                raise Invalid(f"cannot publish on {host_ip}: not an address of this host") \
                    from None
            raise

    def hold_again(self, proto: str, host_ip: str, port: int) -> bool:
        """Re-bind a port published before a daemon restart; False when someone took it."""
        if (proto, host_ip, port) in self.held:
            return True
        s = self._bind_or_none(proto, host_ip, port)
        if s is None:
            return False
        self.held[(proto, host_ip, port)] = s
        return True

    def release(self, proto: str, host_ip: str, port: int) -> None:
        s = self.held.pop((proto, host_ip, port), None)
        if s is not None:
            s.close()

    def close(self) -> None:
        for s in self.held.values():
            s.close()
        self.held.clear()


# -- the use-case -----------------------------------------------------------------------------


@runtime_checkable
class SweepsPorts(Protocol):
    """A port-publishing driver that can drop published ports no live endpoint owns."""

    def remove_unowned_ports(self, owned: set[str]) -> list[str]:
        """Remove firewall elements whose endpoint is not in ``owned`` (ids); their owners."""
        ...


def mapping_of(p: dict[str, Any]) -> PortMapping:
    return PortMapping(protocol=str(p["protocol"]), container_port=int(p["container_port"]),
                       host_port=int(p["host_port"]), host_ip=str(p.get("host_ip", "")))


def for_families(r: PortRequest, families: Sequence[int], network: str) -> list[PortRequest]:
    """``r`` once per address family it publishes on: a request without a host address on
    every family the endpoint has (IPv4 as "", IPv6 as "::"), one with an address on its own
    family, refused when the endpoint has no address of that family."""
    if r.family == 0:
        return [dataclasses.replace(r, host_ip=_wildcard(f), family=f) for f in families]
    if r.family not in families:
        raise Invalid(f"cannot publish on {_shown(r.host_ip or '0.0.0.0')}: the container has "
                      f"no IPv{r.family} address on network {network}")
    return [r]


class PublishedPorts:
    """Publishes a running container's ports on its gateway endpoint's network."""

    def __init__(self, registry: Registry, drivers: Mapping[str, Driver],
                 reservations: Reservations | None = None) -> None:
        self.registry = registry
        self.drivers = drivers
        self.reservations = reservations if reservations is not None else Reservations()

    def _target(self, c: Container) -> tuple[Attachment, Network, PublishesPorts]:
        """The endpoint that gets the ports: the one holding the default route when it can
        publish (moby publishes on the gateway endpoint), else the first one that can."""
        candidates: list[tuple[bool, Attachment, Network, PublishesPorts]] = []
        for a in c.attachments:
            net = self.registry.networks.get(a.network_id)
            if a.endpoint is None or net is None or a.gateway_only:
                continue
            can = self.drivers.get(net.driver)
            if isinstance(can, PublishesPorts):
                candidates.append((not a.endpoint.default_route, a, net, can))
        if not candidates:
            raise Invalid(f"container {c.name}: none of its networks can publish ports "
                          "(bridge networks can)")
        candidates.sort(key=lambda t: t[0])
        _, a, net, drv = candidates[0]
        if net.internal:
            raise Forbidden(f"cannot publish ports on internal network {net.name}: it has no "
                            "access from outside by design")
        return a, net, drv

    def publish(self, c: Container, undo: Undo) -> None:
        """Reserve every wanted port, then one driver call; each step undone on failure."""
        self.unpublish(c)  # what a previous run's failed teardown may have left
        if not wants_ports(c):
            return
        a, net, drv = self._target(c)
        assert a.endpoint is not None
        families = [f for f, addr in ((4, a.endpoint.ipv4), (6, a.endpoint.ipv6)) if addr]
        default_ip, default_family = _host_ip(net.options.get(OPT_HOST_BINDING) or "")
        mappings: list[PortMapping] = []
        for r in requests_of(c):
            if r.family == 0 and default_ip:  # 0.0.0.0 there is no default: dual stack
                r = dataclasses.replace(r, host_ip=default_ip, family=default_family)
            group = for_families(r, families, net.name)
            port = self.reservations.reserve_same(group)
            for g in group:
                undo.push(self.reservations.release, g.protocol, g.host_ip, port)
                mappings.append(PortMapping(g.protocol, g.container_port, port, g.host_ip))
        drv.publish(net, a.endpoint, mappings)
        undo.push(drv.unpublish, net, a.endpoint, mappings)
        c.ports = [{"protocol": m.protocol, "container_port": m.container_port,
                    "host_ip": m.host_ip, "host_port": m.host_port, "network_id": net.id,
                    "endpoint_id": a.endpoint.id} for m in mappings]

    def unpublish(self, c: Container) -> None:
        """Idempotent: the rules go (while the endpoint is still known), then the sockets."""
        if not c.ports:
            return
        by_ep: dict[str, list[PortMapping]] = {}
        for p in c.ports:
            by_ep.setdefault(str(p["endpoint_id"]), []).append(mapping_of(p))
        for a in c.attachments:
            net = self.registry.networks.get(a.network_id)
            if a.endpoint is None or net is None or a.endpoint.id not in by_ep:
                continue
            drv = self.drivers.get(net.driver)
            if isinstance(drv, PublishesPorts):
                try:
                    drv.unpublish(net, a.endpoint, by_ep[a.endpoint.id])
                except (OSError, NsnetError):
                    log.exception("unpublishing the ports of %s (reconcile will retry)",
                                  c.short_id)
        for p in c.ports:
            self.reservations.release(str(p["protocol"]), str(p.get("host_ip", "")),
                                      int(p["host_port"]))
        c.ports = []

    def endpoint_leaving(self, c: Container, a: Attachment) -> None:
        """Before a disconnect takes ``a``'s endpoint away: its ports go with it (rules and
        sockets), or the maps would send them to an address IPAM may give to another
        container. For ConnectionService.disconnect to call before ``leave_endpoint``."""
        if a.endpoint is None or not any(p["endpoint_id"] == a.endpoint.id for p in c.ports):
            return
        mine = [p for p in c.ports if p["endpoint_id"] == a.endpoint.id]
        net = self.registry.networks.get(a.network_id)
        drv = self.drivers.get(net.driver) if net is not None else None
        if net is not None and isinstance(drv, PublishesPorts):
            drv.unpublish(net, a.endpoint, [mapping_of(p) for p in mine])
        for p in mine:
            self.reservations.release(str(p["protocol"]), str(p.get("host_ip", "")),
                                      int(p["host_port"]))
        c.ports = [p for p in c.ports if p["endpoint_id"] != a.endpoint.id]

    def reconcile(self, report: dict[str, Any]) -> None:
        """After a restart: running containers' ports held and published again (the same
        host ports), and firewall elements no running container owns removed."""
        # Every stored endpoint counts as an owner: a start in progress (reconcile runs on
        # demand too) has its endpoints but not yet its ports recorded.
        owned = {a.endpoint.id for c in self.registry.containers.values()
                 for a in c.attachments if a.endpoint is not None}
        for c in list(self.registry.containers.values()):
            if c.state.status != "running" or not c.ports:
                continue
            lost = [p for p in c.ports if not self.reservations.hold_again(
                str(p["protocol"]), str(p.get("host_ip", "")), int(p["host_port"]))]
            for p in lost:
                log.error("%s: host port %s/%s was taken while the daemon was down",
                          c.short_id, p["host_port"], p["protocol"])
                report.setdefault("ports_lost", []).append(
                    f"{c.name}:{p['host_port']}/{p['protocol']}")
            for a in c.attachments:
                net = self.registry.networks.get(a.network_id)
                ep = a.endpoint
                if ep is None or net is None:
                    continue
                mine = [mapping_of(p) for p in c.ports if p["endpoint_id"] == ep.id]
                drv = self.drivers.get(net.driver)
                if mine and isinstance(drv, PublishesPorts):
                    try:
                        drv.publish(net, ep, mine)
                    except (OSError, NsnetError):
                        log.exception("publishing the ports of %s again", c.short_id)
        removed: list[str] = []
        for drv in {id(d): d for d in self.drivers.values()}.values():
            if isinstance(drv, SweepsPorts):
                removed += drv.remove_unowned_ports(owned)
        report["ports_removed"] = sorted(set(removed))
