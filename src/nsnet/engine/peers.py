"""The peer service: this host's overlay data planes kept in step with every host's endpoints.

Each endpoint on an overlay network is a record under ``endpoints/<network id>/<endpoint id>``
(``EndpointRecord``), written by the host that runs it (``publish_endpoint`` on join,
``withdraw_endpoint`` on leave). Every host lists that prefix, then watches it from the
listing's revision + 1, and programs each *remote* endpoint whose node is *live* as a peer of
the overlay driver (a permanent neighbour and FDB entry towards the node's VTEP). So:

- a removed endpoint takes its entries with it (its delete event);
- a host that dies takes all of its endpoints' entries with it when its ``nodes/`` key expires
  (``nodes_changed``, fed by membership), while its records stay in the store: endpoint
  records are not leased (cluster/keys.py), and a host that comes back is live again at once;
- a lost watch (``Unavailable``) keeps every entry as it is, so running containers keep their
  connectivity through an etcd outage; when etcd answers again the prefix is listed afresh and
  each network's entries are made exactly what the listing says (``sync_peers``: strays
  removed, missing added), then watched from that listing's revision. ``Compacted`` lists
  again at once.

Nothing touches the kernel until membership's first view has arrived: before it every node
would look dead, and a restarting daemon would wipe every peer only to add them back.

Own records: the service also keeps this host's records true. ``adopt_own`` (at start, after
reconcile) tells it which endpoints live here; from then on each full listing rewrites missing
own records and deletes own records of endpoints that are gone (a leave while etcd was down).
A withdraw that cannot reach etcd is retried in the background rather than failing the leave.

Remote endpoints appear and vanish for the embedded DNS through ``RemoteListener``s, with the
same rule as the kernel (a dead host's names stop answering).

Kernel changes run on the event loop, one at a time (rule 7's one queue per network: the loop
is that queue); a peer is two netlink requests (~0.5 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from nsnet.cluster import keys
from nsnet.cluster.endpoints import EndpointRecord, endpoint_record, ids_of, node_of
from nsnet.cluster.membership import NodeInfo
from nsnet.drivers.base import Peer, ProgramsPeers
from nsnet.errors import NsnetError, Unavailable
from nsnet.model import Network
from nsnet.store.kv import KV, Compacted, KeyValue, WatchEvent

__all__ = ["EndpointRecord", "PeerService", "RemoteListener", "endpoint_record"]

log = logging.getLogger("nsnet.engine.peers")

RETRY = 1.0

Sleep = Callable[[float], Awaitable[None]]


class RemoteListener(Protocol):
    """Told when a remote endpoint becomes reachable from this host or stops being so."""

    def remote_endpoint_up(self, rec: EndpointRecord) -> None: ...

    def remote_endpoint_down(self, rec: EndpointRecord) -> None: ...


@dataclass(frozen=True)
class _Active:
    rec: EndpointRecord
    peer: Peer


class PeerService:
    """See the module docstring. ``networks`` is the engine's view of every network (the
    registry's mapping); only those of ``driver``'s kind are programmed."""

    def __init__(self, kv: KV, driver: ProgramsPeers, node_id: str,
                 networks: Mapping[str, Network], *, driver_name: str = "overlay",
                 retry: float = RETRY, sleep: Sleep = asyncio.sleep) -> None:
        self.kv = kv
        self.driver = driver
        self.node_id = node_id
        self.networks = networks
        self.driver_name = driver_name
        self._retry = retry
        self._sleep = sleep
        self._listeners: list[RemoteListener] = []
        # Remote records by network id, then endpoint id; which records each node holds.
        self._records: dict[str, dict[str, EndpointRecord]] = {}
        self._by_node: dict[str, set[tuple[str, str]]] = {}
        self._active: dict[str, dict[str, _Active]] = {}
        self._view: dict[str, NodeInfo] | None = None
        self._listed = False
        self._dirty: set[str] = set()  # networks whose last kernel change failed
        # This host's records: what the store should hold, once adopt_own has said so.
        self._own: dict[str, EndpointRecord] | None = None
        self._pending_deletes: set[str] = set()
        self._pending = asyncio.Event()
        self._own_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.reachable = False
        self.kernel_errors = 0
        self.resyncs = 0

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch_loop(), name="nsnet-peer-watch"),
                       asyncio.create_task(self._withdraw_loop(), name="nsnet-peer-withdraw")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    def subscribe(self, listener: RemoteListener) -> None:
        """``listener`` hears of every remote endpoint from now on, starting with those
        already reachable."""
        self._listeners.append(listener)
        for by_ep in self._active.values():
            for a in by_ep.values():
                self._tell(listener.remote_endpoint_up, a.rec)

    def remote_endpoints(self, network_id: str) -> list[EndpointRecord]:
        """Reachable remote endpoints of a network (live node, IPv4), by endpoint id."""
        return [a.rec for _, a in sorted(self._active.get(network_id, {}).items())]

    # ---- this host's records --------------------------------------------------------------

    async def publish_endpoint(self, rec: EndpointRecord) -> None:
        """Write a local endpoint's record (join, connect); ``Unavailable`` when etcd cannot
        be reached, so the join fails with 503 and its undo runs."""
        if rec.node_id != self.node_id:
            raise ValueError("publish_endpoint: not this node's endpoint")
        previous = self._own.get(rec.key) if self._own is not None else None
        if self._own is not None:
            self._own[rec.key] = rec
        self._pending_deletes.discard(rec.key)
        try:
            async with self._own_lock:
                await self.kv.put(rec.key, rec.encode())
        except BaseException:
            if self._own is not None:
                # A republish (rename) that failed keeps the record it replaced: the next
                # full listing must not delete a live endpoint's record meanwhile.
                if previous is not None:
                    self._own[rec.key] = previous
                else:
                    self._own.pop(rec.key, None)
            raise

    async def withdraw_endpoint(self, network_id: str, endpoint_id: str) -> None:
        """Delete a local endpoint's record (leave, stop). Never fails for an unreachable
        etcd: the container is going whether or not etcd hears of it now, and the delete is
        retried in the background until it lands."""
        key = keys.endpoint(network_id, endpoint_id)
        if self._own is not None:
            self._own.pop(key, None)
        try:
            async with self._own_lock:
                await self.kv.delete(key)
        except Unavailable as e:
            log.warning("endpoint %s: its record stays in the store until it answers (%s)",
                        endpoint_id[:12], e.message)
            self._pending_deletes.add(key)
            self._pending.set()

    def adopt_own(self, records: Iterable[EndpointRecord]) -> None:
        """The endpoints that live on this host now (at start, after reconcile): from here on
        every full listing makes the store's records of this node exactly these."""
        self._own = {r.key: r for r in records if r.node_id == self.node_id}

    async def _withdraw_loop(self) -> None:
        while True:
            await self._pending.wait()
            await self._sleep(self._retry)
            try:
                for key in sorted(self._pending_deletes):
                    if self._own is not None and key in self._own:
                        self._pending_deletes.discard(key)  # published again meanwhile
                        continue
                    async with self._own_lock:
                        await self.kv.delete(key)
                    self._pending_deletes.discard(key)
            except Unavailable:
                continue
            if not self._pending_deletes:
                self._pending.clear()

    async def _sync_own(self, held: list[KeyValue]) -> None:
        """Make the store's records of this node what ``adopt_own``/publish/withdraw say."""
        if self._own is None:
            return
        async with self._own_lock:
            stored = {kv.key: kv.value for kv in held if node_of(kv) == self.node_id}
            for key in sorted(set(stored) - set(self._own)):
                await self.kv.delete(key)
                self._pending_deletes.discard(key)
            for key, rec in sorted(self._own.items()):
                if stored.get(key) != rec.encode():
                    await self.kv.put(key, rec.encode())

    # ---- the watch --------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        while True:
            try:
                held, revision = await self.kv.get_prefix(keys.ENDPOINTS)
                self.replace(held)
                self.reachable = True
                await self._sync_own(held)
                async for events in self.kv.watch(keys.ENDPOINTS, revision + 1):
                    self.apply(events)
                await self._sleep(self._retry)  # the store ended the watch: list again
            except Compacted:
                continue
            except Unavailable as e:
                if self.reachable:
                    log.warning("endpoint watch broke (%s): entries kept, resync when the "
                                "store answers", e.message)
                self.reachable = False
                await self._sleep(self._retry)
            except Exception:  # a bug must not end the peer service for the daemon's life
                log.exception("endpoint watch")
                self.reachable = False
                await self._sleep(self._retry)

    def replace(self, held: Iterable[KeyValue]) -> None:
        """A full listing: the records become exactly these, and (once the node view is known)
        every overlay network's entries are synced to them."""
        self._records = {}
        self._by_node = {}
        for kv in held:
            rec = EndpointRecord.decode(kv)
            if rec is not None and rec.node_id != self.node_id:
                self._store(rec)
        self._listed = True
        self._full_sync()

    def apply(self, events: Iterable[WatchEvent]) -> None:
        for ev in events:
            rec = EndpointRecord.decode(ev.kv) if ev.kind == "put" else None
            ids = ids_of(ev.kv.key)
            if ids is None:
                continue
            self._forget(*ids)
            if rec is not None and rec.node_id != self.node_id:
                self._store(rec)
            self._refresh(*ids)
        self._retry_dirty()

    def nodes_changed(self, view: Mapping[str, NodeInfo]) -> None:
        """Membership's new view (``Cluster.on_nodes_change``): endpoints of nodes that left
        lose their entries, those of nodes that joined or moved their VTEP get them."""
        old, self._view = self._view, dict(view)
        if old is None:
            self._full_sync()
            return
        # Only presence and VTEP matter to entries and names: a node's record is rewritten
        # when its container count changes, which must not re-examine all its endpoints.
        changed = {n for n in set(old) | set(view) if _where(old.get(n)) != _where(view.get(n))}
        for node in sorted(changed):
            for ids in sorted(self._by_node.get(node, ())):
                self._refresh(*ids)
        self._retry_dirty()

    def site_made(self, net: Network) -> None:
        """The overlay driver's ``on_site``: this host's data plane of ``net`` was just made
        (or re-made): give it every reachable remote endpoint of the network."""
        if self._view is None or not self._listed:
            return
        self._sync_network(net)

    # ---- bookkeeping ------------------------------------------------------------------------

    def _store(self, rec: EndpointRecord) -> None:
        self._records.setdefault(rec.network_id, {})[rec.endpoint_id] = rec
        self._by_node.setdefault(rec.node_id, set()).add((rec.network_id, rec.endpoint_id))

    def _forget(self, network_id: str, endpoint_id: str) -> None:
        rec = self._records.get(network_id, {}).pop(endpoint_id, None)
        if rec is not None:
            self._by_node.get(rec.node_id, set()).discard((network_id, endpoint_id))

    def _wanted(self, rec: EndpointRecord | None) -> _Active | None:
        """The entry ``rec`` should have now: none for a dead node or an endpoint without
        IPv4; the VTEP is the node's current one (a host that re-registered elsewhere takes
        its endpoints along)."""
        if rec is None or self._view is None or rec.ipv4 is None:
            return None
        node = self._view.get(rec.node_id)
        if node is None:
            return None
        return _Active(rec, Peer(rec.endpoint_id, rec.ipv4, rec.mac, node.vtep))

    def _refresh(self, network_id: str, endpoint_id: str) -> None:
        """Bring one endpoint's entry and names in line with its record and its node."""
        if self._view is None or not self._listed:
            return
        old = self._active.get(network_id, {}).get(endpoint_id)
        new = self._wanted(self._records.get(network_id, {}).get(endpoint_id))
        if old == new:
            return
        net = self._overlay(network_id)
        if old is not None:
            del self._active[network_id][endpoint_id]
            if net is not None and (new is None or (old.peer.mac, old.peer.address) !=
                                    (new.peer.mac, new.peer.address)):
                self._kernel(net, self.driver.remove_peer, old.peer)
            if new is None or old.rec != new.rec:
                self._announce(False, old.rec)
        if new is not None:
            self._active.setdefault(network_id, {})[endpoint_id] = new
            if net is not None:
                self._kernel(net, self.driver.add_peer, new.peer)
            if old is None or old.rec != new.rec:
                self._announce(True, new.rec)

    def _full_sync(self) -> None:
        """Everything from the records and the view: names told of the difference, every
        overlay network's entries made exactly the wanted ones."""
        if self._view is None or not self._listed:
            return
        self.resyncs += 1
        active: dict[str, dict[str, _Active]] = {}
        for network_id, by_ep in self._records.items():
            for endpoint_id, rec in by_ep.items():
                a = self._wanted(rec)
                if a is not None:
                    active.setdefault(network_id, {})[endpoint_id] = a
        old, self._active = self._active, active
        for gone in _records(old) - _records(active):
            self._announce(False, gone)
        for new in _records(active) - _records(old):
            self._announce(True, new)
        self._dirty.clear()
        for net in list(self.networks.values()):
            if net.driver == self.driver_name:
                self._sync_network(net)

    def _sync_network(self, net: Network) -> None:
        wanted = [a.peer for a in self._active.get(net.id, {}).values()]
        try:
            added, removed = self.driver.sync_peers(net, wanted)
        except (NsnetError, OSError) as e:
            self.kernel_errors += 1
            self._dirty.add(net.id)
            log.error("overlay %s: syncing its peers failed: %s", net.name, e)
            return
        self._dirty.discard(net.id)
        if added or removed:
            log.info("overlay %s: %d peer entries added, %d removed", net.name, added,
                     removed)

    def _retry_dirty(self) -> None:
        for network_id in sorted(self._dirty):
            net = self._overlay(network_id)
            if net is None:
                self._dirty.discard(network_id)
            else:
                self._sync_network(net)

    def _overlay(self, network_id: str) -> Network | None:
        net = self.networks.get(network_id)
        return net if net is not None and net.driver == self.driver_name else None

    def _kernel(self, net: Network, fn: Callable[[Network, Peer], None], peer: Peer) -> None:
        try:
            fn(net, peer)
        except (NsnetError, OSError) as e:
            self.kernel_errors += 1
            self._dirty.add(net.id)  # synced whole at the next event
            log.error("overlay %s: peer %s (%s at %s): %s", net.name, peer.address, peer.mac,
                      peer.vtep, e)

    def _announce(self, up: bool, rec: EndpointRecord) -> None:
        for listener in self._listeners:
            fn = listener.remote_endpoint_up if up else listener.remote_endpoint_down
            self._tell(fn, rec)

    @staticmethod
    def _tell(fn: Callable[[EndpointRecord], None], rec: EndpointRecord) -> None:
        try:
            fn(rec)
        except Exception:  # the resolver's bug must not stop the data plane
            log.exception("remote endpoint listener")


def _where(node: NodeInfo | None) -> tuple[str, int] | None:
    return (node.vtep, node.vxlan_port) if node is not None else None


def _records(active: dict[str, dict[str, _Active]]) -> set[EndpointRecord]:
    return {a.rec for by_ep in active.values() for a in by_ep.values()}
