"""This host's endpoints on global (overlay) networks: their addresses and their records.

A local endpoint's address comes from the local store in the same transaction that saves the
container; a global endpoint's comes from etcd (``GlobalIpam``), which cannot join that
transaction and must be awaited. So a start or a connect does its cluster work *before* the
synchronous kernel work: ``prepare`` claims each address and publishes the endpoint's record
(``endpoints/<net>/<ep>``, with the MAC chosen now), then the sandbox service joins with that
``Claim``. Publishing before the veth exists costs nothing (a peer entry towards an interface
not up yet drops packets for a few ms) and starts the other hosts' programming ~70 ms earlier,
during runc's start: convergence is bounded by the slower of the two, not their sum.

Ending an endpoint never waits for etcd: ``retire`` is synchronous (the exit path, a
disconnect and an undo call it), queues the record's withdrawal and the address's release, and
a background task does them, retrying while etcd is away. A rename goes the same way
(``republish``): the records of a renamed container's endpoints are written again with its
new names, so the other hosts' resolvers follow, retried until they land. After a restart the
queue is gone; ``sweep`` finds what it held (addresses this node holds that no live endpoint
owns) and the peer service's own-record sync finds stale records, so nothing stays claimed for
good.

Every etcd failure in ``prepare`` is ``Unavailable`` (503): the start or connect fails cleanly,
with what was claimed retired again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from nsnet.cluster.endpoints import EndpointRecord, endpoint_record
from nsnet.engine.cluster import Cluster
from nsnet.engine.peers import PeerService
from nsnet.engine.registry import Registry
from nsnet.errors import NsnetError, Unavailable
from nsnet.model import Attachment, Container, Endpoint, Network, new_id

log = logging.getLogger("nsnet.engine.global_endpoints")

RETRY = 1.0


def mac_from_ip(ipv4: str) -> str:
    """``02:42`` and the address's four bytes, as Docker's overlay driver makes them.

    Derived, not random, because remote containers cannot be told of a new MAC: nothing is
    flooded across hosts, so a gratuitous ARP from a new endpoint never leaves its host, and
    a container elsewhere that talked to the address's previous holder would keep sending to
    the old MAC until its neighbour entry went stale (~30 s). The same address always has
    the same MAC, so a reused address is reached at once."""
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ipv4.split("."))


@dataclass(frozen=True)
class Claim:
    """What ``prepare`` got for one attachment: the endpoint's identity and address."""

    network_id: str
    endpoint_id: str
    mac: str
    ipv4: str
    prefixlen: int


@dataclass(frozen=True)
class _Retired:
    network_id: str
    endpoint_id: str
    addresses: tuple[str, ...]
    # The claim's answer never came (etcd failed mid-request): whatever address the
    # endpoint holds is looked up and released.
    any_address: bool = False


DnsNames = Callable[[Container, Network, Attachment], list[str]]


class GlobalEndpoints:
    """See the module docstring. ``dns_names`` gives the names an endpoint answers to (the
    sandbox service's rule), so the record carries them to the other hosts' resolvers."""

    def __init__(self, cluster: Cluster, peers: PeerService, registry: Registry,
                 dns_names: DnsNames, *, retry: float = RETRY) -> None:
        self.cluster = cluster
        self.peers = peers
        self.registry = registry
        self.dns_names = dns_names
        self._retry = retry
        self._queue: list[_Retired] = []
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()  # endpoint ids claimed, not yet attached
        self._republish: set[str] = set()  # containers whose records carry an old name
        self._task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None

    # ---- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """After reconcile: tell the peer service which records are this host's, start it,
        and release (in the background, once etcd answers) what a previous run left."""
        self.peers.adopt_own(self.live_records())
        await self.peers.start()
        self._task = asyncio.create_task(self._retire_loop(), name="nsnet-retire")
        self._sweep_task = asyncio.create_task(self._sweep_loop(), name="nsnet-sweep")

    async def stop(self) -> None:
        for t in (self._task, self._sweep_task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        self._task = self._sweep_task = None
        await self.peers.stop()

    def live_records(self) -> list[EndpointRecord]:
        """The records of every endpoint this host holds on a global network now."""
        return [rec for c in self.registry.containers.values() for rec in self._records_of(c)]

    def _records_of(self, c: Container) -> list[EndpointRecord]:
        out = []
        for a in c.attachments:
            ep = a.endpoint
            net = self.registry.networks.get(a.network_id)
            if ep is not None and self._is_global_endpoint(a, net):
                out.append(self._record(c, ep))
        return out

    @staticmethod
    def _is_global_endpoint(a: Attachment, net: Network | None) -> bool:
        # A network missing from the registry is a global one whose listing has not arrived
        # (etcd was down at start): local networks are loaded from the local store first.
        return net is None or net.scope == "global"

    def _record(self, c: Container, ep: Endpoint) -> EndpointRecord:
        return endpoint_record(self.cluster.node_id, self.cluster.vtep, c.id, c.name, ep)

    # ---- start / connect --------------------------------------------------------------------

    async def prepare(self, c: Container,
                      wanted: Sequence[tuple[Attachment, Network]]) -> dict[str, Claim]:
        """Claim an address and publish a record for each global network in ``wanted``;
        by network id. ``Unavailable`` (503) when etcd cannot be reached, with every claim
        made so far retired again."""
        claims: dict[str, Claim] = {}
        if not wanted:
            return claims
        # No gate on this node's registration: a store that answers late at start must not
        # refuse joins once it answers; the claim itself is the 503 while it does not.
        ep_id = ""
        try:
            for a, net in wanted:
                requested = a.request.ipv4_address or None
                if requested:
                    await self._settle(net.id, requested)
                ep_id = new_id()
                self._inflight.add(ep_id)
                got = await self.cluster.ipam.allocate_address(
                    net.id, ep_id, requested=requested, network_name=net.name)
                mac = a.request.mac_address or mac_from_ip(got.address)
                claim = Claim(net.id, ep_id, mac.lower(), got.address, got.prefixlen)
                claims[net.id] = claim
                ep = Endpoint(id=ep_id, network_id=net.id, container_id=c.id, ifname="",
                              mac=claim.mac, ipv4=claim.ipv4, ipv4_prefixlen=claim.prefixlen,
                              dns_names=self.dns_names(c, net, a))
                await self.peers.publish_endpoint(self._record(c, ep))
                ep_id = ""
        except BaseException as e:
            self.retire_claims(claims.values())
            self.done(claims.values())
            if ep_id:
                self._inflight.discard(ep_id)
                if not isinstance(e, NsnetError) or isinstance(e, Unavailable):
                    # Sent and unanswered: the claim may have landed.
                    self._queue.append(_Retired(wanted[len(claims)][1].id, ep_id, (), True))
                    self._wake.set()
            raise
        return claims

    async def _settle(self, network_id: str, address: str, timeout: float = 5.0) -> None:
        """Wait for this host's own queued release of ``address`` (``stop a; start b --ip``
        of a's address must not meet a's claim); past ``timeout`` the claim says 409."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(r.network_id == network_id and address in r.addresses for r in self._queue):
            if loop.time() > deadline:
                return
            await asyncio.sleep(0.005)

    def done(self, claims: Iterable[Claim]) -> None:
        """The claims are attached (or retired): ``sweep`` may judge them by the registry."""
        for cl in claims:
            self._inflight.discard(cl.endpoint_id)

    def retire_claims(self, claims: Iterable[Claim]) -> None:
        for cl in claims:
            self.retire(cl.network_id, cl.endpoint_id, [cl.ipv4])

    # ---- ending -------------------------------------------------------------------------------

    def retire(self, network_id: str, endpoint_id: str, addresses: Iterable[str]) -> None:
        """Withdraw the record and release the addresses, off the request path; idempotent."""
        self._queue.append(_Retired(network_id, endpoint_id, tuple(a for a in addresses if a)))
        self._wake.set()

    async def _retire_loop(self) -> None:
        """Withdrawals first, then republications, one at a time in one task: a record
        republished after a rename can never land after the withdrawal of its endpoint."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue or self._republish:
                done = await self._retire_one() if self._queue else await self._republish_one()
                if not done:
                    await asyncio.sleep(self._retry)

    async def _retire_one(self) -> bool:
        """The first queued withdrawal; False to retry it (etcd away)."""
        item = self._queue[0]
        try:
            await self.peers.withdraw_endpoint(item.network_id, item.endpoint_id)
            addresses = list(item.addresses)
            if item.any_address:
                addresses += [h.address for h in
                              await self.cluster.ipam.holders(item.network_id)
                              if h.endpoint_id == item.endpoint_id]
            for addr in addresses:
                await self.cluster.ipam.release_address(item.network_id, addr,
                                                        item.endpoint_id)
        except Unavailable as e:
            log.warning("releasing endpoint %s: %s (retrying)", item.endpoint_id[:12],
                        e.message)
            return False
        except Exception:  # a bug must not stop every later release
            log.exception("releasing endpoint %s", item.endpoint_id[:12])
        self._queue.pop(0)
        return True

    # ---- rename -------------------------------------------------------------------------------

    def republish(self, c: Container) -> None:
        """``c`` was renamed: its endpoints' records (``container_name``, ``dns_names``) are
        written again so every other host's resolver answers the new name and forgets the
        old. Off the request path like ``retire``: a rename never waits for etcd."""
        self._republish.add(c.id)
        self._wake.set()

    async def _republish_one(self) -> bool:
        """One renamed container's records, as the registry holds them now (an endpoint that
        ended meanwhile has nothing left to publish); False to retry (etcd away)."""
        cid = min(self._republish)
        c = self.registry.containers.get(cid)
        try:
            for rec in self._records_of(c) if c is not None else []:
                await self.peers.publish_endpoint(rec)
        except Unavailable as e:
            log.warning("republishing the records of renamed %s: %s (retrying)", cid[:12],
                        e.message)
            return False
        except Exception:
            log.exception("republishing the records of renamed %s", cid[:12])
        self._republish.discard(cid)
        return True

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the retire queue is empty (tests, shutdown); best effort."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._queue or self._republish) and \
                asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    # ---- after a restart ------------------------------------------------------------------

    async def sweep(self) -> int:
        """Release addresses this node holds that no live or in-flight endpoint owns (a
        release queued before a restart); the number released."""
        holders = await self.cluster.ipam.holders()
        live = {a.endpoint.id for c in self.registry.containers.values()
                for a in c.attachments if a.endpoint is not None}
        live |= self._inflight
        live |= {r.endpoint_id for r in self._queue}
        released = 0
        for h in holders:
            mine = h.node_id == self.cluster.node_id and h.endpoint_id not in live
            if mine and await self.cluster.ipam.release_address(h.network_id, h.address,
                                                                h.endpoint_id):
                released += 1
        if released:
            log.info("released %d overlay addresses no endpoint here holds", released)
        return released

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
                return
            except Unavailable:
                await asyncio.sleep(self._retry)
            except Exception:
                log.exception("sweeping overlay addresses")
                return
