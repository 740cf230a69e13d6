"""Connect and disconnect: an endpoint added to or taken from a running sandbox.

Both do their kernel and store work without awaiting, so on the one event loop they are atomic
with respect to each other; a start, stop or removal of the same container in flight makes them
a 409 (``Registry.not_busy``). A connect claims the address and saves the endpoint in one store
transaction; a disconnect leaves the kernel first and frees the address last. A connect to a
global (overlay) network first awaits the cluster for its address (``GlobalEndpoints``), holding
the container's lock so no start or stop interleaves, then does the same synchronous work.
"""

from __future__ import annotations

import logging

from nsnet.engine.crashpoints import crash_point
from nsnet.engine.global_endpoints import Claim, GlobalEndpoints
from nsnet.engine.ports import Store
from nsnet.engine.published_ports import PublishedPorts
from nsnet.engine.registry import Registry
from nsnet.engine.resolver_hooks import ResolverHooks
from nsnet.engine.sandboxes import SandboxService, user_defined, validate_endpoint_request
from nsnet.engine.undo import Undo
from nsnet.errors import Forbidden, NotFound, Unavailable
from nsnet.model import Attachment, Container, EndpointRequest, Network

log = logging.getLogger("nsnet.engine")


class ConnectionService:
    """``docker network connect/disconnect`` over the sandbox service."""

    def __init__(self, registry: Registry, store: Store, sandboxes: SandboxService,
                 resolver: ResolverHooks) -> None:
        self.registry = registry
        self.store = store
        self.sandboxes = sandboxes
        self.resolver = resolver
        self.global_endpoints: GlobalEndpoints | None = None  # set with a cluster
        self.published_ports: PublishedPorts | None = None  # set by the wiring

    async def connect(self, net_ref: str, c_ref: str, req: EndpointRequest) -> None:
        net = self.registry.find_network(net_ref)
        c = self.registry.find_container(c_ref)
        self._check_connect(net, c, req)
        if net.scope != "global" or c.state.status != "running":
            self._connect(net, c, req, None)
            return
        glob = self.global_endpoints
        if glob is None:
            raise Unavailable(f"network {net.name} is global and this daemon has no cluster "
                              "store")
        async with self.registry.lock_for(c.id):
            # Checked again: the container may have stopped or been connected meanwhile.
            c = self.registry.find_container(c.id)
            net = self.registry.find_network(net.id)
            self._check_connect(net, c, req, locked=True)
            if c.state.status != "running":
                self._connect(net, c, req, None)
                return
            a = c.attachment(net.id) or Attachment(network_id=net.id, request=req)
            claims = await glob.prepare(c, [(a, net)])
            try:
                c = self.registry.find_container(c.id)
                self._check_connect(net, c, req, locked=True)
                self._connect(net, c, req, claims.get(net.id))
            except BaseException:
                glob.retire_claims(claims.values())
                raise
            finally:
                glob.done(claims.values())

    def _check_connect(self, net: Network, c: Container, req: EndpointRequest,
                       locked: bool = False) -> None:
        _refuse_connect(net, c)
        validate_endpoint_request(net, net.name, req)
        if not locked:
            self.registry.not_busy(c)
        a = c.attachment(net.id)
        if c.state.status == "running" and a is not None and a.endpoint is not None:
            raise Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")

    def _connect(self, net: Network, c: Container, req: EndpointRequest,
                 claim: Claim | None) -> None:
        existing = c.attachment(net.id)
        running = c.state.status == "running"
        if not running:
            if existing is None:
                c.attachments.append(Attachment(network_id=net.id, request=req))
                self.registry.save_container(c)
            return
        if existing is not None and existing.endpoint is not None:
            raise Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")
        a = existing or Attachment(network_id=net.id, request=req)
        a.request = req
        was_user = self.sandboxes.on_user_network(c)
        # One transaction from the address claim (in join) to the save: a crash anywhere in
        # between stores neither, and reconcile removes the links it left.
        with Undo() as undo, self.store.transaction():
            if existing is None:
                c.attachments.append(a)
                undo.push(c.attachments.remove, a)
            ep = self.sandboxes.join(c, a, c.sandbox_key, undo, claim)
            crash_point("connect.endpoint_joined")
            self.sandboxes.join_gateway(c, undo)
            # The route follows libnetwork's order: off the gateway bridge when a network
            # that gives one joins, to a network of higher GwPriority; undone on failure.
            self.sandboxes.settle_default_route(c, undo)
            self.resolver.endpoint_up(c, net, ep)
            undo.push(self.resolver.endpoint_down, c, net, ep)
            if user_defined(net) and self.sandboxes.on_user_network(c):
                self.resolver.sandbox_up(c, c.sandbox_key)
            self.sandboxes.write_etc_files(
                c, hosts_only=was_user == self.sandboxes.on_user_network(c))
            crash_point("connect.sandbox_updated")
            self.registry.save_container(c)
        crash_point("connect.saved")
        self._drop_gateway(c)

    def _drop_gateway(self, c: Container) -> None:
        """After a committed connect or disconnect: the gateway bridge goes if another
        network gives the default route now or the overlay went (best effort, logged)."""
        try:
            with self.store.transaction():
                if self.sandboxes.drop_gateway(c):
                    self.registry.save_container(c)
        except Exception:
            log.exception("leaving the gateway bridge of %s (it goes at its next start)",
                          c.short_id)

    def disconnect(self, net_ref: str, c_ref: str, force: bool) -> None:
        c = self.registry.find_container(c_ref)
        try:
            net = self.registry.find_network(net_ref)
        except NotFound:
            if force:
                # Docker lets -f drop an attachment to a network that no longer exists.
                before = len(c.attachments)
                c.attachments = [a for a in c.attachments if a.network_id != net_ref]
                if len(c.attachments) != before:
                    self.registry.save_container(c)
                    return
            raise
        if net.name == "host" and c.network_mode == "host":
            raise Forbidden("cannot disconnect container from host network - container was "
                            "created in host network mode")
        self.registry.not_busy(c)
        a = c.attachment(net.id)
        if a is None or a.gateway_only:
            raise Forbidden(f"container {c.id} is not connected to network {net.name}")
        if a.endpoint is not None:
            was_gateway = a.endpoint.default_route
            was_user = self.sandboxes.on_user_network(c)
            # The gateway bridge first, if leaving ``a`` makes it needed: a failure here
            # changes nothing; once joined it is saved with the disconnect below.
            with Undo() as undo:
                self.sandboxes.join_gateway(c, undo, without=a)
            if self.published_ports is not None:
                # Its ports go with it: the maps must not keep sending them to an address
                # IPAM may give to another container.
                self.published_ports.endpoint_leaving(c, a)
            self.sandboxes.leave_endpoint(c, a, kernel=True)
            crash_point("disconnect.kernel_left")
            c.attachments.remove(a)
            if was_gateway:
                self.sandboxes.pick_default_route(c)
            # Only now, with the kernel done: the address is free exactly when the stored
            # container stops using it.
            with self.store.transaction():
                self.sandboxes.free_endpoint(a)
                self.registry.save_container(c)
            crash_point("disconnect.saved")
            self._drop_gateway(c)
            if not self.sandboxes.on_user_network(c):
                self.resolver.sandbox_down(c)
            self.sandboxes.write_etc_files(
                c, hosts_only=was_user == self.sandboxes.on_user_network(c))
            return
        c.attachments.remove(a)
        self.registry.save_container(c)
        crash_point("disconnect.saved")


def _refuse_connect(net: Network, c: Container) -> None:
    """Docker's refusals for the network modes that cannot take another network."""
    if net.name == "host" and c.network_mode != "host":
        raise Forbidden("cannot connect container to host network - container must be "
                        "created in host network mode")
    if c.network_mode == "host" or c.network_mode.startswith("container:"):
        raise Forbidden("container sharing network namespace with another container or host "
                        "cannot be connected to any other network")
    if c.network_mode == "none" or net.name == "none":
        raise Forbidden("container cannot be connected to multiple networks with one of the "
                        "networks in private (none) mode")
