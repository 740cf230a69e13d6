"""The embedded DNS wired to sandboxes: Docker's 127.0.0.11, done with our own primitives.

For each sandbox on a user-defined network, two sockets are opened *inside* its namespace on
127.0.0.11 at kernel-chosen ports, handed to the one ``DNSServer`` of the daemon, and a small
``ip nsnet-dns`` table in the sandbox (``kernel.firewall.sandbox_dns_plan``) DNATs
127.0.0.11:53 to them, so port 53 stays free for the container's own use.

It is handed what it needs and nothing more: a function that looks a network up by ID (to know
whether a container is internal-only), the kernel's namespaces (to open sockets inside one)
and its nft runner for a sandbox.

It is also the peer service's ``RemoteListener`` (``nsnet.engine.peers``): containers of an
overlay network on other hosts answer here like local ones, for the sandboxes attached to that
network. What it was told stays in ``_remote`` (the truth); ``Records`` holds the records of
the networks this host knows as global (``_shown``): another host's record naming a network
this host does not have (yet), or a local network's id, answers for nobody. A network that
arrives later (the global network mirror, a first local join) shows what it already has. A
down removes only the record that was announced, so a late down cannot take a newer record
with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from nsnet.cluster.endpoints import EndpointRecord
from nsnet.dns.records import Records
from nsnet.dns.server import DNSServer
from nsnet.errors import Invalid
from nsnet.fds import raise_socket
from nsnet.kernel.api import Namespaces
from nsnet.kernel.firewall import RESOLVER_IP, sandbox_dns_plan
from nsnet.model import PREDEFINED_NETWORKS, Container, Endpoint, Network
from nsnet.resolvconf import read_upstreams

log = logging.getLogger("nsnet.dns")

SO_RCVBUFFORCE = 33  # not exported by the socket module
NftInNamespace = Callable[[str, str], None]


def _open_sockets() -> tuple[socket.socket, socket.socket]:
    """Run inside the sandbox: the resolver's UDP and TCP sockets on 127.0.0.11."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Bursts from one busy container must not overflow the default ~200 KiB queue;
        # the memory is only used while queries wait.
        with contextlib.suppress(OSError):
            udp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 20)
        udp.bind((RESOLVER_IP, 0))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((RESOLVER_IP, 0))
        tcp.listen(128)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


class EmbeddedDNS:
    """The engine's ``ResolverHooks`` over one ``DNSServer`` and its record table."""

    def __init__(self, resolv_conf: Path, network: Callable[[str], Network | None],
                 namespaces: Namespaces, nft_in: NftInNamespace) -> None:
        self.resolv_conf = resolv_conf
        self.network = network
        self.namespaces = namespaces
        self.nft_in = nft_in
        self.records = Records()
        self.server: DNSServer | None = None
        # Sandbox id -> the task registering its sockets; updates wait for it.
        self._served: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        # Remote endpoints as announced: network id -> endpoint id -> record.
        self._remote: dict[str, dict[str, EndpointRecord]] = {}
        # Networks whose remote endpoints are in the records (known here, global scope).
        self._shown: set[str] = set()

    def _server(self) -> DNSServer:
        if self.server is None:
            self.server = DNSServer(self.records,
                                    lambda: read_upstreams(self.resolv_conf))
        return self.server

    def metrics_text(self) -> str:
        return self._server().metrics_text()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _update(self, c: Container) -> None:
        added = self._served.get(c.id)
        if added is None:
            return
        async def later() -> None:
            await asyncio.shield(added)
            # Evaluated now, after the engine's change (e.g. a disconnect) is complete.
            if c.id in self._served:
                self._server().update_sandbox(c.id, dns_servers=list(c.dns) or None,
                                              forward=self._forward(c))

        self._spawn(later())

    def _done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dns task failed: %s", task.exception())

    def _forward(self, c: Container) -> bool:
        """Internal-only containers get names but no upstream (Docker's behaviour)."""
        nets = [self.network(a.network_id) for a in c.attachments]
        live = [n for n in nets if n is not None]
        return not live or any(not n.internal for n in live)

    # -- hooks ------------------------------------------------------------------------------

    def sandbox_up(self, c: Container, ns_path: str) -> None:
        server = self._server()
        if c.id in self._served:
            self._update(c)
            return
        udp, tcp = self.namespaces.call_in(ns_path, _open_sockets)
        try:
            # In the nftables thread, whose descriptor numbers stay low (libnftables select()s).
            self.nft_in(ns_path, sandbox_dns_plan(udp.getsockname()[1],
                                                       tcp.getsockname()[1]))
        except BaseException:
            udp.close()
            tcp.close()
            raise
        udp, tcp = raise_socket(udp), raise_socket(tcp)
        udp.setblocking(False)
        tcp.setblocking(False)
        self._served[c.id] = self._spawn(server.add_sandbox(
            c.id, udp, tcp, dns_servers=list(c.dns) or None, forward=self._forward(c)))

    def sandbox_down(self, c: Container) -> None:
        self.records.set_links(c.id, {})
        added = self._served.pop(c.id, None)
        if added is not None:
            async def later() -> None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(added)
                await self._server().remove_sandbox(c.id)

            self._spawn(later())

    @staticmethod
    def _link_map(c: Container) -> dict[str, str]:
        out: dict[str, str] = {}
        for spec in [*c.links, *(ln for a in c.attachments for ln in (a.request.links or []))]:
            name, _, alias = spec.partition(":")
            out[alias or name] = name.lstrip("/")
        return out

    def endpoint_up(self, c: Container, net: Network, ep: Endpoint) -> None:
        if net.name in PREDEFINED_NETWORKS:
            return
        self.records.set_network_name(net.id, net.name)
        if net.id not in self._shown and net.scope == "global":
            self._show(net)
        self.records.set_endpoint(ep.id, net.id, c.id, list(ep.dns_names), ep.ipv4, ep.ipv6)
        self.records.set_links(c.id, self._link_map(c))
        self._update(c)

    def endpoint_down(self, c: Container, net: Network, ep: Endpoint) -> None:
        self.records.remove_endpoint(ep.id)
        self._update(c)

    def network_removed(self, net: Network) -> None:
        self.records.remove_network(net.id)
        self._remote.pop(net.id, None)
        self._shown.discard(net.id)

    # -- remote endpoints (RemoteListener) ----------------------------------------------------

    def remote_endpoint_up(self, rec: EndpointRecord) -> None:
        by_ep = self._remote.setdefault(rec.network_id, {})
        if by_ep.get(rec.endpoint_id) == rec:
            return
        by_ep[rec.endpoint_id] = rec
        if rec.network_id in self._shown:
            self._set_remote(rec)
            return
        net = self.network(rec.network_id)
        if net is not None and net.scope == "global":
            self._show(net)

    def remote_endpoint_down(self, rec: EndpointRecord) -> None:
        by_ep = self._remote.get(rec.network_id)
        if by_ep is None or by_ep.get(rec.endpoint_id) != rec:
            return  # never announced, or replaced since: the newer record stays
        del by_ep[rec.endpoint_id]
        if not by_ep:
            del self._remote[rec.network_id]
        self.records.remove_remote_endpoint(rec.network_id, rec.endpoint_id)

    def _show(self, net: Network) -> None:
        """From now on ``net``'s remote endpoints answer: those already told go in at once."""
        self._shown.add(net.id)
        self.records.set_network_name(net.id, net.name)
        for rec in self._remote.get(net.id, {}).values():
            self._set_remote(rec)

    def _set_remote(self, rec: EndpointRecord) -> None:
        try:
            self.records.set_remote_endpoint(rec.network_id, rec.endpoint_id,
                                             rec.dns_names, rec.ipv4, rec.ipv6)
        except Invalid as e:  # decode checked the addresses; a bug must not stop the others
            log.warning("remote endpoint %s on %s not answered: %s", rec.endpoint_id[:12],
                        rec.network_id[:12], e.message)

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
