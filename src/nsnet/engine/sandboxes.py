"""Sandboxes: a container's namespace, its endpoints (address, link, resolver) and /etc files.

Ending an endpoint is two steps, kernel first and store last ("mark first, free last"): an
address is free in the store only once no stored endpoint and no link uses it, so a crash
between the steps can never hand one address to two containers (issue 8).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from nsnet.drivers.base import Driver, Sandbox, provides_gateway
from nsnet.drivers.iface_prefix import DEFAULT_PREFIX, iface_prefix
from nsnet.engine.config import EngineConfig
from nsnet.engine.crashpoints import crash_point
from nsnet.engine.etc import EtcFiles
from nsnet.engine.ports import Kernel, Store
from nsnet.engine.registry import Registry, driver_of
from nsnet.engine.resolver_hooks import ResolverHooks
from nsnet.engine.shared_netns import (
    joined_ref,
    namespace_owner,
    running_dependents,
    running_owner,
)
from nsnet.engine.undo import Undo
from nsnet.errors import Forbidden, Invalid, NotFound, Unavailable
from nsnet.ipam.allocator import Allocator
from nsnet.kernel.endpoint_sysctls import (
    OPT_SYSCTLS,
    parse_endpoint_sysctls,
    sysctl_paths,
    write_sysctls,
)
from nsnet.kernel.links import random_mac
from nsnet.model import (
    PREDEFINED_NETWORKS,
    Attachment,
    Container,
    Endpoint,
    EndpointRequest,
    Network,
    new_id,
)

if TYPE_CHECKING:
    from nsnet.engine.global_endpoints import Claim

log = logging.getLogger("nsnet.engine")

# Called with (network id, endpoint id, addresses) when a global endpoint ends.
GlobalFreed = Callable[[str, str, list[str]], None]


def user_defined(net: Network) -> bool:
    return net.name not in PREDEFINED_NETWORKS


def validate_endpoint_request(net: Network | None, net_ref: str, req: EndpointRequest) -> None:
    """Docker's checks of --ip/--alias against the kind of network (400s)."""
    predefined = net_ref in (*PREDEFINED_NETWORKS, "default") or (
        net is not None and net.predefined)
    if req.ipv4_address or req.ipv6_address:
        if predefined:
            raise Invalid("user specified IP address is supported on user defined networks only")
        if net is not None and not net.user_subnets:
            raise Invalid("user specified IP address is supported only when connecting to "
                          "networks with user configured subnets")
    if req.aliases and predefined:
        raise Invalid("network-scoped alias is supported only for containers in user defined "
                      "networks")
    for value, fam in ((req.ipv4_address, 4), (req.ipv6_address, 6)):
        if value:
            try:
                a = ipaddress.ip_address(value)
            except ValueError:
                raise Invalid(f"invalid IPv{fam} address: {value}") from None
            if a.version != fam or (isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped):
                raise Invalid(f"invalid IPv{fam} address: {value}")
            if net is not None and not any(a in ipaddress.ip_network(p.subnet)
                                           for p in net.pools):
                raise Invalid(f"no configured subnet or ip-range contain the IP address {value}")
    if req.driver_opts and OPT_SYSCTLS in req.driver_opts:
        parse_endpoint_sysctls(req.driver_opts[OPT_SYSCTLS])  # moby's 400, before anything
    for value in req.link_local_ips or []:
        # An interface without an IPv6 address has IPv6 switched off (kernel/host.py
        # prepare_interface), so an fe80:: address could not be added: refused, not dropped.
        if ":" in value and net is not None and (net.scope == "global" or not any(
                ipaddress.ip_network(p.subnet).version == 6 for p in net.pools)):
            raise Invalid(f"link-local IP address {value} needs an IPv6 address on network "
                          f"{net.name}: create it with --ipv6")


def link_local_interfaces(req: EndpointRequest) -> list[str]:
    """The request's link-local addresses with moby's prefix lengths (/16 and /64), so the
    kernel routes the whole link-local range out of that interface as Docker's does."""
    return [f"{a}/64" if ":" in a else f"{a}/16" for a in req.link_local_ips or []]


def route_order_key(net: Network, dual_stack: bool, gw_priority: int,
                    gateway_only: bool) -> tuple[bool, bool, bool, int, str]:
    """libnetwork's sandbox endpoint order (``epHeap.Less``), smallest first: the gateway
    bridge last, internal networks after the others, a network giving both an IPv4 and an
    IPv6 gateway before one that does not, then the higher priority (``GwPriority``), then
    the network's name. Docker's default route comes from the first endpoint in this order
    that has a gateway, and its ``eth0`` is the first endpoint at start (the sandbox's
    interfaces are added in its heap order once runc has made the namespace)."""
    return (gateway_only, net.internal, not dual_stack, -gw_priority, net.name)


class SandboxService:
    """Makes and ends sandboxes and their endpoints; each step pushes its undo (rule 2)."""

    def __init__(self, registry: Registry, store: Store, ipam: Allocator, kernel: Kernel,
                 drivers: Mapping[str, Driver], resolver: ResolverHooks,
                 config: EngineConfig) -> None:
        self.registry = registry
        self.store = store
        self.ipam = ipam
        self.kernel = kernel
        self.drivers = drivers
        self.resolver = resolver
        self.config = config
        self.etc = EtcFiles(config, registry, self.on_user_network)
        # Set by the wiring with a cluster: the gateway bridge (made on first use) and where
        # a global endpoint's record and address go when it ends (engine/global_endpoints.py).
        self.gateway_network: Callable[[], Network] | None = None
        self.global_freed: GlobalFreed | None = None

    def ns_path(self, c: Container) -> str:
        return str(self.kernel.netns_dir / c.id[:12])

    def etc_dir(self, c: Container) -> Path:
        return self.etc.dir_of(c)

    def files_dir(self, c: Container) -> Path:
        """Where the ``/etc`` files ``c`` mounts live: a dependent (``container:`` mode)
        mounts its owner's, as moby's ``initializeNetworkingPaths`` hands them over."""
        return self.etc.dir_of(namespace_owner(self.registry, c))

    def write_etc_files(self, c: Container, hosts_only: bool = False) -> None:
        self.etc.write(c, hosts_only)

    def dns_names(self, c: Container, net: Network, req: EndpointRequest) -> list[str]:
        if not user_defined(net):
            return []
        names: list[str] = []
        for n in [c.name, *(req.aliases or []), c.short_id, c.hostname]:
            if n and n not in names:
                names.append(n)
        return names

    def on_user_network(self, c: Container) -> bool:
        for a in c.attachments:
            if a.gateway_only:
                continue
            net = self.registry.networks.get(a.network_id)
            if net is not None and user_defined(net):
                return True
        return False

    # -- set-up and tear-down ---------------------------------------------------------------

    def resolve_attachment_network(self, a: Attachment) -> Network:
        try:
            net = self.registry.find_network(a.network_id)
        except NotFound:
            raise NotFound(f"failed to set up container networking: network {a.network_id} "
                           "not found") from None
        a.network_id = net.id
        return net

    def setup_sandbox(self, c: Container, undo: Undo,
                      claims: Mapping[str, Claim] | None = None) -> str | None:
        """Namespace, endpoints, default route and /etc files; None for host mode.
        ``claims``: the global networks' addresses, claimed beforehand (``GlobalEndpoints``)."""
        if joined_ref(c.network_mode) is not None:
            return self.join_owner(c)
        c.attachments = [a for a in c.attachments if not a.gateway_only]
        etc = self.etc_dir(c)
        etc.mkdir(parents=True, exist_ok=True)
        if c.network_mode == "host":
            self.write_etc_files(c)
            return None
        path = self.ns_path(c)
        self.kernel.ns.create(path)
        undo.push(self.kernel.ns.remove, path)
        with self.kernel.sandbox_links(path) as links:
            links.loopback_up()
        c.sandbox_key = path
        crash_point("start.namespace_made")
        if c.network_mode != "none":
            for a in self.start_order(c):
                self.join(c, a, path, undo, self._claim_for(a, claims))
                crash_point("start.endpoint_joined")
            self.join_gateway(c, undo)
            self.pick_default_route(c)
        self.write_etc_files(c)
        if self.on_user_network(c):
            self.resolver.sandbox_up(c, path)
            undo.push(self.resolver.sandbox_down, c)
        for a in c.attachments:
            if a.endpoint is not None and not a.gateway_only:
                net = self.registry.networks[a.network_id]
                self.resolver.endpoint_up(c, net, a.endpoint)
                undo.push(self.resolver.endpoint_down, c, net, a.endpoint)
        return path

    def join_owner(self, c: Container) -> str:
        """A dependent's "sandbox": nothing to make or undo, only the owner's namespace
        (through its process, so a host-mode owner or a chain works) and its names."""
        owner = running_owner(self.registry, c)
        c.hostname, c.domainname = owner.hostname, owner.domainname
        c.sandbox_key = ""
        return f"/proc/{owner.state.pid}/ns/net"

    def start_order(self, c: Container) -> list[Attachment]:
        """The attachments in libnetwork's endpoint order (``route_order_key``), so ``eth0``
        is on the network Docker would put it on: a compose service on a non-internal
        ``frontend`` and an internal ``backend`` gets ``eth0`` on ``frontend`` whichever it was
        created with. Endpoints do not exist yet, so "has both gateways" is judged from the
        network's pools (the bridge driver gives no gateway on an internal network anyway).
        An attachment whose network is gone keeps its place, for ``join`` to report."""
        def key(a: Attachment) -> tuple[bool, bool, bool, int, str]:
            try:
                net = self.registry.find_network(a.network_id)
            except (NotFound, Invalid):
                return (a.gateway_only, False, True, 0, "")
            families = {ipaddress.ip_network(p.subnet).version for p in net.pools}
            return route_order_key(net, families == {4, 6}, a.request.gw_priority,
                                   a.gateway_only)
        return sorted(c.attachments, key=key)

    def next_ifname(self, c: Container, prefix: str = DEFAULT_PREFIX) -> str:
        """The lowest free ``<prefix>N`` (``eth`` unless the network's
        ``container_iface_prefix`` says otherwise; numbered per prefix, as libnetwork does); a
        name whose link is still being deleted is not free."""
        used = {a.endpoint.ifname for a in c.attachments if a.endpoint is not None}
        if c.sandbox_key:
            used |= self.kernel.dying_names(c.sandbox_key)
        i = 0
        while f"{prefix}{i}" in used:
            i += 1
        return f"{prefix}{i}"

    def _claim_for(self, a: Attachment, claims: Mapping[str, Claim] | None) -> Claim | None:
        if not claims:
            return None
        net = self.registry.networks.get(a.network_id)
        if net is None:
            net = next((n for n in self.registry.networks.values()
                        if a.network_id in (n.name, n.id)), None)
        return claims.get(net.id) if net is not None else None

    def join(self, c: Container, a: Attachment, ns_path: str, undo: Undo,
             claim: Claim | None = None) -> Endpoint:
        if joined_ref(c.network_mode) is not None:
            # moby's ErrConflictSharedNetwork: the namespace is the owner's to configure.
            raise Forbidden("container sharing network namespace with another container or "
                            "host cannot be connected to any other network")
        net = self.resolve_attachment_network(a)
        drv = driver_of(self.drivers, net)
        if not drv.has_endpoints:
            raise Forbidden(f"container cannot be attached to network {net.name} in this mode")
        if net.scope == "global":
            return self._join_global(c, a, net, drv, ns_path, undo, claim)
        ep = Endpoint(id=new_id(), network_id=net.id, container_id=c.id,
                      ifname=self.next_ifname(c, iface_prefix(net)),
                      mac=a.request.mac_address or random_mac())
        for p in net.pools:
            fam = ipaddress.ip_network(p.subnet).version
            requested = a.request.ipv4_address if fam == 4 else a.request.ipv6_address
            if fam == 4 and ep.ipv4 is None:
                ep.ipv4, ep.ipv4_prefixlen, ep.gateway = self.ipam.allocate(
                    net, ep.id, 4, requested)
                undo.push(self.ipam.release, net.id, ep.ipv4)
            elif fam == 6 and ep.ipv6 is None:
                ep.ipv6, ep.ipv6_prefixlen, ep.ipv6_gateway = self.ipam.allocate(
                    net, ep.id, 6, requested)
                undo.push(self.ipam.release, net.id, ep.ipv6)
        ep.dns_names = [] if a.gateway_only else self.dns_names(c, net, a.request)
        ep.link_local = link_local_interfaces(a.request)
        return self._attach(a, net, drv, ep, ns_path, undo)

    def _join_global(self, c: Container, a: Attachment, net: Network, drv: Driver,
                     ns_path: str, undo: Undo, claim: Claim | None) -> Endpoint:
        """The endpoint ``claim`` describes: its address came from the cluster, and its
        record is published already (``GlobalEndpoints.prepare``)."""
        if claim is None or claim.network_id != net.id:
            raise Unavailable(f"network {net.name} is global: its address must be claimed "
                              "from the cluster first")
        ep = Endpoint(id=claim.endpoint_id, network_id=net.id, container_id=c.id,
                      ifname=self.next_ifname(c, iface_prefix(net)), mac=claim.mac,
                      ipv4=claim.ipv4,
                      ipv4_prefixlen=claim.prefixlen,
                      dns_names=self.dns_names(c, net, a.request),
                      link_local=link_local_interfaces(a.request))
        return self._attach(a, net, drv, ep, ns_path, undo)

    def _attach(self, a: Attachment, net: Network, drv: Driver, ep: Endpoint, ns_path: str,
                undo: Undo) -> Endpoint:
        if not provides_gateway(drv):
            ep.gateway = ep.ipv6_gateway = None  # no route through it (the overlay driver)
        sb = Sandbox(ep.container_id, ns_path)
        drv.join(net, ep, sb)
        undo.push(drv.leave, net, ep, sb)
        self.write_endpoint_sysctls(a, ep, ns_path)
        a.endpoint = ep
        undo.push(setattr, a, "endpoint", None)
        return ep

    def write_endpoint_sysctls(self, a: Attachment, ep: Endpoint, ns_path: str) -> None:
        """The request's ``com.docker.network.endpoint.sysctls``, in the sandbox, on the
        interface the driver made (any driver, as moby's osl does): at join, and again when
        reconcile re-makes the interface. Validated before anything was made
        (validate_endpoint_request)."""
        sysctls = (a.request.driver_opts or {}).get(OPT_SYSCTLS)
        if sysctls:
            paths = sysctl_paths(ep.ifname, sysctls)
            self.kernel.ns.call_in(ns_path, lambda: write_sysctls(paths))

    # -- the gateway bridge (Docker's docker_gwbridge) ----------------------------------------

    def needs_gateway(self, c: Container, without: Attachment | None = None) -> bool:
        """A live endpoint on a non-internal network that gives no default route (overlay),
        and none on a network that gives one: outbound traffic needs the gateway bridge.
        ``without``: as if that attachment were gone (a disconnect deciding beforehand)."""
        wants = gives = False
        for a in c.attachments:
            net = self.registry.networks.get(a.network_id)
            if a is without or a.gateway_only or a.endpoint is None or net is None or \
                    net.internal:
                continue
            drv = self.drivers.get(net.driver)
            if drv is not None and not provides_gateway(drv):
                wants = True
            elif a.endpoint.gateway or a.endpoint.ipv6_gateway:
                gives = True
        return wants and not gives

    def join_gateway(self, c: Container, undo: Undo, without: Attachment | None = None) -> None:
        """Join the gateway bridge if ``needs_gateway`` (``without``: judged as if that
        attachment were gone, so a disconnect joins before it leaves and a failure changes
        nothing); every step pushes its undo. The default route is the caller's to pick."""
        if self.gateway_network is None or not self.needs_gateway(c, without):
            return
        if any(a.gateway_only for a in c.attachments):
            return
        gw = self.gateway_network()
        a = Attachment(network_id=gw.id, gateway_only=True)
        c.attachments.append(a)
        undo.push(c.attachments.remove, a)
        self.join(c, a, c.sandbox_key, undo)

    def drop_gateway(self, c: Container) -> bool:
        """Leave the gateway bridge once no longer needed (another network gives the default
        route now, or the overlay went); True if it left, for the caller to save. Called
        after the change that made it unneeded is committed: it has no undo, and a failure
        here leaves a working (if superfluous) route, which the next start drops."""
        held = next((a for a in c.attachments if a.gateway_only), None)
        if held is None or self.needs_gateway(c):
            return False
        self.leave_endpoint(c, held, kernel=True)
        c.attachments.remove(held)
        self.free_endpoint(held)
        self.pick_default_route(c)
        return True

    def pick_default_route(self, c: Container) -> None:
        """The first endpoint with a gateway in libnetwork's order (``route_order_key``)
        gives the default route, if none has it yet (start, after the holder left). A
        connect moves an existing route with ``settle_default_route``, which has an undo."""
        if any(a.endpoint and a.endpoint.default_route for a in c.attachments):
            return
        best = self._route_candidate(c)
        if best is not None:
            self._route_via(c, best)

    def settle_default_route(self, c: Container, undo: Undo) -> None:
        """After a connect: the route goes to the endpoint libnetwork would make the
        gateway endpoint now (``getGatewayEndpoint``: the first in order with a gateway), as
        Docker moves it when a network of higher ``GwPriority`` (or earlier in order) joins;
        the undo puts it back on the previous holder."""
        best = self._route_candidate(c)
        current = next((a.endpoint for a in c.attachments
                        if a.endpoint is not None and a.endpoint.default_route), None)
        if best is None or best is current:
            return
        if current is not None:
            current.default_route = False
            undo.push(self._route_back, c, current, best)
        self._route_via(c, best)

    def _route_back(self, c: Container, old: Endpoint, new: Endpoint) -> None:
        new.default_route = False
        self._route_via(c, old)

    def _route_via(self, c: Container, ep: Endpoint) -> None:
        with self.kernel.sandbox_links(c.sandbox_key) as links:
            if ep.gateway:
                links.set_default_route(ep.ifname, ep.gateway, 4)
            if ep.ipv6_gateway:
                links.set_default_route(ep.ifname, ep.ipv6_gateway, 6)
        ep.default_route = True

    def _route_candidate(self, c: Container) -> Endpoint | None:
        best: tuple[tuple[bool, bool, bool, int, str], Endpoint] | None = None
        for a in c.attachments:
            ep = a.endpoint
            net = self.registry.networks.get(a.network_id)
            if ep is None or net is None or net.internal or not (ep.gateway or ep.ipv6_gateway):
                continue
            key = route_order_key(net, bool(ep.gateway and ep.ipv6_gateway),
                                  a.request.gw_priority, a.gateway_only)
            if best is None or key < best[0]:
                best = (key, ep)
        return best[1] if best is not None else None

    def leave_endpoint(self, c: Container, a: Attachment, kernel: bool) -> None:
        """Take an endpoint out of the resolver and the kernel; it stays stored and keeps its
        address until ``free_endpoint``. ``kernel`` False when the namespace goes anyway."""
        ep = a.endpoint
        if ep is None:
            return
        net = self.registry.networks.get(a.network_id)
        if net is not None:
            self.resolver.endpoint_down(c, net, ep)
            if kernel:
                driver_of(self.drivers, net).leave(net, ep, Sandbox(c.id, c.sandbox_key or None))
            elif ep.host_ifname:
                # The namespace's death takes the veth with it; this only makes it quicker
                # to vanish from the host's view and from leak checks.
                self.kernel.reaper.delete_later(ep.host_ifname)

    def free_endpoint(self, a: Attachment) -> None:
        """Give back the endpoint's addresses and forget it, after ``leave_endpoint``; inside
        the store transaction that saves the container without it.

        Only an address this endpoint holds is released: after a crash of an older version,
        another endpoint may hold it now, and freeing it would hand it out a second time."""
        ep = a.endpoint
        if ep is None:
            return
        net = self.registry.networks.get(a.network_id)
        if (net is None or net.scope == "global") and self.global_freed is not None:
            # Its address and record live in etcd; released off the request path.
            self.global_freed(a.network_id, ep.id, [x for x in (ep.ipv4, ep.ipv6) if x])
            if net is not None:
                a.endpoint = None
                return
        for addr in (ep.ipv4, ep.ipv6):
            if not addr:
                continue
            owner = self.store.ipam_owner(a.network_id, addr)
            if owner is None or owner == ep.id:
                self.ipam.release(a.network_id, addr)
            else:
                log.warning("%s on network %s is held by endpoint %s, not by %s: kept",
                            addr, a.network_id[:12], owner[:12], ep.id[:12])
        a.endpoint = None

    def teardown_sandbox(self, c: Container) -> None:
        """Idempotent: called on exit, on failed start, at removal and at reconcile."""
        self.teardown_kernel(c)
        self.forget_endpoints(c)

    def teardown_kernel(self, c: Container) -> None:
        """The namespace, its links and its resolver go; the store still has the endpoints.
        While a dependent (``container:`` mode) still runs in the namespace, unpinning it
        frees nothing: each endpoint leaves the kernel explicitly, as libnetwork removes a
        sandbox's interfaces, so the dependent keeps only ``lo`` and no address it holds
        goes back to IPAM while a link still carries it."""
        held = bool(c.attachments) and bool(running_dependents(self.registry, c))
        for a in c.attachments:
            try:
                self.leave_endpoint(c, a, kernel=held)
            except Exception:
                log.exception("releasing endpoint of %s", c.short_id)
        self.resolver.sandbox_down(c)
        self.kernel.ns.remove(self.ns_path(c))
        c.sandbox_key = ""

    def forget_endpoints(self, c: Container) -> None:
        """After ``teardown_kernel``: addresses freed and the container saved without its
        endpoints (and with whatever state the caller set), in one transaction."""
        with self.store.transaction():
            for a in c.attachments:
                self.free_endpoint(a)
            # The gateway bridge is joined again at the next start if still needed.
            c.attachments = [a for a in c.attachments if not a.gateway_only]
            if c.id in self.registry.containers:
                self.registry.save_container(c)
