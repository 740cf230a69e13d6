"""Sandboxes: a container's namespace, its endpoints and its /etc files; connect/disconnect."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from nsnet.drivers.base import Sandbox
from nsnet.engine.base import EngineBase, log
from nsnet.engine.crashpoints import crash_point
from nsnet.engine.undo import Undo
from nsnet.errors import Conflict, Forbidden, Invalid, NotFound
from nsnet.kernel import netns
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

HOSTS_HEADER = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::\tip6-localnet
ff00::\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


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


class SandboxesMixin(EngineBase):
    def ns_path(self, c: Container) -> str:
        return str(self.host.netns_dir / c.id[:12])

    def etc_dir(self, c: Container) -> Path:
        return self.config.exec_root / "sandboxes" / c.id

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
            net = self.networks.get(a.network_id)
            if net is not None and user_defined(net):
                return True
        return False

    # -- set-up and tear-down ---------------------------------------------------------------

    def resolve_attachment_network(self, a: Attachment) -> Network:
        try:
            net = self.find_network(a.network_id)
        except NotFound:
            raise NotFound(f"failed to set up container networking: network {a.network_id} "
                           "not found") from None
        a.network_id = net.id
        return net

    def setup_sandbox(self, c: Container, undo: Undo) -> str | None:
        """Namespace, endpoints, default route and /etc files; None for host mode."""
        etc = self.etc_dir(c)
        etc.mkdir(parents=True, exist_ok=True)
        if c.network_mode == "host":
            self.write_etc_files(c)
            return None
        path = self.ns_path(c)
        self.host.ns.create(path)
        undo.push(netns.remove, path)
        with self.host.sandbox_links(path) as links:
            links.loopback_up()
        c.sandbox_key = path
        crash_point("start.namespace_made")
        if c.network_mode != "none":
            for a in c.attachments:
                self.join(c, a, path, undo)
                crash_point("start.endpoint_joined")
            self.pick_default_route(c)
        self.write_etc_files(c)
        if self.on_user_network(c):
            self.resolver.sandbox_up(c, path)
            undo.push(self.resolver.sandbox_down, c)
        for a in c.attachments:
            if a.endpoint is not None:
                net = self.networks[a.network_id]
                self.resolver.endpoint_up(c, net, a.endpoint)
                undo.push(self.resolver.endpoint_down, c, net, a.endpoint)
        return path

    def next_ifname(self, c: Container) -> str:
        """The lowest free ``ethN``; a name whose link is still being deleted is not free."""
        used = {a.endpoint.ifname for a in c.attachments if a.endpoint is not None}
        if c.sandbox_key:
            used |= self.host.dying_names(c.sandbox_key)
        i = 0
        while f"eth{i}" in used:
            i += 1
        return f"eth{i}"

    def join(self, c: Container, a: Attachment, ns_path: str, undo: Undo) -> Endpoint:
        net = self.resolve_attachment_network(a)
        drv = self.driver_of(net)
        if not drv.has_endpoints:
            raise Forbidden(f"container cannot be attached to network {net.name} in this mode")
        ep = Endpoint(id=new_id(), network_id=net.id, container_id=c.id,
                      ifname=self.next_ifname(c), mac=a.request.mac_address or random_mac())
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
        ep.dns_names = self.dns_names(c, net, a.request)
        sb = Sandbox(c.id, ns_path)
        drv.join(net, ep, sb)
        undo.push(drv.leave, net, ep, sb)
        a.endpoint = ep
        undo.push(setattr, a, "endpoint", None)
        return ep

    def pick_default_route(self, c: Container) -> None:
        """The first network (in connect order) with a gateway gives the default route."""
        if any(a.endpoint and a.endpoint.default_route for a in c.attachments):
            return
        for a in c.attachments:
            ep = a.endpoint
            if ep is None:
                continue
            net = self.networks.get(a.network_id)
            if net is None or net.internal or not (ep.gateway or ep.ipv6_gateway):
                continue
            with self.host.sandbox_links(c.sandbox_key) as links:
                if ep.gateway:
                    links.set_default_route(ep.ifname, ep.gateway, 4)
                if ep.ipv6_gateway:
                    links.set_default_route(ep.ifname, ep.ipv6_gateway, 6)
            ep.default_route = True
            return

    # Ending an endpoint is two steps, kernel first and store last ("mark first, free last"):
    # an address is free in the store only once no stored endpoint and no link uses it, so a
    # crash between the steps can never hand one address to two containers (issue 8).

    def leave_endpoint(self, c: Container, a: Attachment, kernel: bool) -> None:
        """Take an endpoint out of the resolver and the kernel; it stays stored and keeps its
        address until ``free_endpoint``. ``kernel`` False when the namespace goes anyway."""
        ep = a.endpoint
        if ep is None:
            return
        net = self.networks.get(a.network_id)
        if net is not None:
            self.resolver.endpoint_down(c, net, ep)
            if kernel:
                self.driver_of(net).leave(net, ep, Sandbox(c.id, c.sandbox_key or None))
            elif ep.host_ifname:
                # The namespace's death takes the veth with it; this only makes it quicker
                # to vanish from the host's view and from leak checks.
                self.host.reaper.delete_later(ep.host_ifname)

    def free_endpoint(self, a: Attachment) -> None:
        """Give back the endpoint's addresses and forget it, after ``leave_endpoint``; inside
        the store transaction that saves the container without it.

        Only an address this endpoint holds is released: after a crash of an older version,
        another endpoint may hold it now, and freeing it would hand it out a second time."""
        ep = a.endpoint
        if ep is None:
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
        """The namespace, its links and its resolver go; the store still has the endpoints."""
        for a in c.attachments:
            try:
                self.leave_endpoint(c, a, kernel=False)
            except Exception:  # noqa: BLE001
                log.exception("releasing endpoint of %s", c.short_id)
        self.resolver.sandbox_down(c)
        netns.remove(self.ns_path(c))
        c.sandbox_key = ""

    def forget_endpoints(self, c: Container) -> None:
        """After ``teardown_kernel``: addresses freed and the container saved without its
        endpoints (and with whatever state the caller set), in one transaction."""
        with self.store.transaction():
            for a in c.attachments:
                self.free_endpoint(a)
            if c.id in self.containers:
                self.save_container(c)

    # -- /etc files -------------------------------------------------------------------------

    def write_etc_files(self, c: Container, hosts_only: bool = False) -> None:
        etc = self.etc_dir(c)
        if not hosts_only:
            etc.mkdir(parents=True, exist_ok=True)
            _write_in_place(etc / "hostname", (c.hostname or c.short_id) + "\n")
            _write_in_place(etc / "resolv.conf", self.resolv_content(c))
        _write_in_place(etc / "hosts", self.hosts_content(c))

    def hosts_content(self, c: Container) -> str:
        if c.network_mode == "host":
            try:
                return self.config.host_hosts.read_text()
            except OSError:
                return HOSTS_HEADER
        lines = [HOSTS_HEADER.rstrip("\n")]
        for link in c.links:
            name, _, alias = link.partition(":")
            try:
                other = self.find_container(name)
            except NotFound:
                continue
            for a in other.attachments:
                if a.endpoint and a.endpoint.ipv4:
                    names = " ".join(dict.fromkeys(x for x in (alias or name, other.name) if x))
                    lines.append(f"{a.endpoint.ipv4}\t{names}")
                    break
        for h in c.extra_hosts:
            host, _, ip = h.partition(":")
            if host and ip:
                lines.append(f"{ip}\t{host}")
        host = c.hostname or c.short_id
        for a in c.attachments:
            ep = a.endpoint
            if ep is None:
                continue
            if ep.ipv4:
                lines.append(f"{ep.ipv4}\t{host}")
            if ep.ipv6:
                lines.append(f"{ep.ipv6}\t{host}")
        return "\n".join(lines) + "\n"

    def host_resolv(self) -> tuple[list[str], list[str], list[str]]:
        servers: list[str] = []
        search: list[str] = []
        options: list[str] = []
        try:
            text = self.config.host_resolv_conf.read_text()
        except OSError:
            text = ""
        for line in text.splitlines():
            parts = line.split()
            if not parts or parts[0].startswith(("#", ";")):
                continue
            if parts[0] == "nameserver" and len(parts) > 1:
                servers.append(parts[1])
            elif parts[0] == "search":
                search = parts[1:]
            elif parts[0] == "options":
                options.extend(parts[1:])
        return servers, search, options

    def resolv_content(self, c: Container) -> str:
        servers, search, options = self.host_resolv()
        if c.dns_search:
            search = [s for s in c.dns_search if s != "."]
        lines: list[str] = []
        if c.network_mode != "host" and self.on_user_network(c):
            lines.append("nameserver 127.0.0.11")
            if search:
                lines.append("search " + " ".join(search))
            opts = list(c.dns_options or [o for o in options if not o.startswith("ndots:")])
            if not any(o.startswith("ndots:") for o in opts):
                opts.insert(0, "ndots:0")  # Docker's default; an explicit --dns-opt wins
            lines.append("options " + " ".join(opts))
            lines.append(f"# ExtServers: {c.dns or servers}")
            return "\n".join(lines) + "\n"
        if c.dns:
            chosen = list(c.dns)
        elif c.network_mode == "host":
            chosen = servers
        else:
            # Loopback resolvers of the host are unreachable from a sandbox (Docker drops them).
            chosen = [s for s in servers if not _is_loopback(s)]
            if not chosen:
                chosen = ["8.8.8.8", "8.8.4.4"]
        lines = [f"nameserver {s}" for s in chosen]
        if search:
            lines.append("search " + " ".join(search))
        opts = c.dns_options or options
        if opts:
            lines.append("options " + " ".join(opts))
        return "\n".join(lines) + "\n"

    # -- connect / disconnect ---------------------------------------------------------------

    def _not_busy(self, c: Container) -> None:
        """Connect/disconnect run without awaiting; a start, stop or removal of the same
        container in flight (it holds the container's lock across runc) must finish first, or
        both would edit the same endpoints and addresses."""
        lock = self.locks.get(c.id)
        if lock is not None and lock.locked():
            raise Conflict(f"container {c.name} is being started, stopped or removed: "
                           "try again")

    def connect(self, net_ref: str, c_ref: str, req: EndpointRequest) -> None:
        net = self.find_network(net_ref)
        c = self.find_container(c_ref)
        if net.name == "host" and c.network_mode != "host":
            raise Forbidden("cannot connect container to host network - container must be "
                            "created in host network mode")
        if c.network_mode == "host":
            raise Forbidden("container sharing network namespace with another container or host "
                            "cannot be connected to any other network")
        if c.network_mode == "none" or net.name == "none":
            raise Forbidden("container cannot be connected to multiple networks with one of the "
                            "networks in private (none) mode")
        validate_endpoint_request(net, net.name, req)
        self._not_busy(c)
        existing = c.attachment(net.id)
        running = c.state.status == "running"
        if not running:
            if existing is None:
                c.attachments.append(Attachment(network_id=net.id, request=req))
                self.save_container(c)
            return
        if existing is not None and existing.endpoint is not None:
            raise Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")
        a = existing or Attachment(network_id=net.id, request=req)
        a.request = req
        was_user = self.on_user_network(c)
        # One transaction from the address claim (in join) to the save: a crash anywhere in
        # between stores neither, and reconcile removes the links it left.
        with Undo() as undo, self.store.transaction():
            if existing is None:
                c.attachments.append(a)
                undo.push(c.attachments.remove, a)
            ep = self.join(c, a, c.sandbox_key, undo)
            crash_point("connect.endpoint_joined")
            self.pick_default_route(c)
            self.resolver.endpoint_up(c, net, ep)
            undo.push(self.resolver.endpoint_down, c, net, ep)
            if user_defined(net) and self.on_user_network(c):
                self.resolver.sandbox_up(c, c.sandbox_key)
            self.write_etc_files(c, hosts_only=was_user == self.on_user_network(c))
            crash_point("connect.sandbox_updated")
            self.save_container(c)
        crash_point("connect.saved")

    def disconnect(self, net_ref: str, c_ref: str, force: bool) -> None:
        c = self.find_container(c_ref)
        try:
            net = self.find_network(net_ref)
        except NotFound:
            if force:
                # Docker lets -f drop an attachment to a network that no longer exists.
                before = len(c.attachments)
                c.attachments = [a for a in c.attachments if a.network_id != net_ref]
                if len(c.attachments) != before:
                    self.save_container(c)
                    return
            raise
        if net.name == "host" and c.network_mode == "host":
            raise Forbidden("cannot disconnect container from host network - container was "
                            "created in host network mode")
        self._not_busy(c)
        a = c.attachment(net.id)
        if a is None:
            raise Forbidden(f"container {c.id} is not connected to network {net.name}")
        if a.endpoint is not None:
            was_gateway = a.endpoint.default_route
            was_user = self.on_user_network(c)
            self.leave_endpoint(c, a, kernel=True)
            crash_point("disconnect.kernel_left")
            c.attachments.remove(a)
            if was_gateway:
                self.pick_default_route(c)
            # Only now, with the kernel done: the address is free exactly when the stored
            # container stops using it.
            with self.store.transaction():
                self.free_endpoint(a)
                self.save_container(c)
            crash_point("disconnect.saved")
            if not self.on_user_network(c):
                self.resolver.sandbox_down(c)
            self.write_etc_files(c, hosts_only=was_user == self.on_user_network(c))
            return
        c.attachments.remove(a)
        self.save_container(c)
        crash_point("disconnect.saved")


def _is_loopback(addr: str) -> bool:
    """Also for nsnet's ``ip:port`` upstream form (and ``[v6]:port``)."""
    host = addr.split("%")[0]
    if host.startswith("["):
        host = host[1:].split("]")[0]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_in_place(path: Path, content: str) -> None:
    """Rewrite keeping the inode: the file is bind-mounted into a running container."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        data = content.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)
