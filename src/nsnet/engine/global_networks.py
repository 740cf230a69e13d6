"""Global (overlay) networks: made and removed through etcd, mirrored into every host's registry.

etcd is the truth for a global network, not this host's SQLite store: a network made on host A
must appear on B with the same ID, and one removed on C must vanish from A, whether or not A
was up at the time. So a global network is never written to the local store. Every host keeps
``networks/`` mirrored into its ``Registry`` (memory only) with a listing followed by a watch
from the listing's revision + 1; a ``Compacted`` watch lists again, an ``Unavailable`` one
waits ``retry`` and lists again, so a host that was cut off resynchronises without a restart.
A daemon restart finds its global networks by that same first listing, awaited in
``Engine.start`` before reconcile so restored containers find their networks. If etcd is down
at start the listing is retried in the background and ``synced`` stays False meanwhile:
nothing global is torn down on the strength of an empty view.

What a create does (``create``): validate everything (name shape, scope, options, the overlay
driver's own checks), then one ``GlobalIpam.create_network`` transaction claims the name
(unique cluster-wide), the subnets (Docker's 10.0.0.0/8 in /24s when none is given, never one
overlapping this host's routes or local networks) and the VNI, and writes the network record
as ``networks/<id>``. The VNI is also in the record's options as Docker's
``com.docker.network.driver.overlay.vxlanid_list``, where a driver reads it and ``network
inspect`` shows it. A removal (``remove``) is refused with 403 naming the hosts while any
endpoint or address of the network exists on any host, then ``GlobalIpam.remove_network``
deletes record, name, VNI and subnets in one transaction; every mirror drops it on the watch
event, and the driver's ``delete_network`` removes this host's overlay if it made one.

Errors: etcd unreachable is ``Unavailable`` (503) for every change; local networks and
containers never wait for etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nsnet.cluster import keys
from nsnet.cluster.ipam import GlobalIpam, NetworkClaim
from nsnet.drivers.base import Driver
from nsnet.engine.registry import Registry, check_network_name
from nsnet.engine.resolver_hooks import ResolverHooks
from nsnet.errors import Conflict, Forbidden, Invalid, NsnetError, Unavailable
from nsnet.ipam.allocator import IPNetwork
from nsnet.model import (
    GATEWAY_NETWORK,
    RESERVED_NETWORK_NAMES,
    IPAMPool,
    Network,
    new_id,
    now_rfc3339,
)
from nsnet.store.kv import KV, Compacted, KeyValue, WatchEvent

log = logging.getLogger(__name__)

OVERLAY = "overlay"
OPT_VNI = "com.docker.network.driver.overlay.vxlanid_list"
OPT_MTU = "com.docker.network.driver.mtu"
# Options an overlay network takes; anything else is refused, never dropped.
OVERLAY_OPTIONS = (OPT_VNI, OPT_MTU)
NO_CLUSTER = ("overlay networks need a cluster store: start nsnetd with --cluster-store "
              "etcd://host:2379 --cluster-advertise <ip|interface>")
_FIELDS = {f.name for f in dataclasses.fields(Network)}

Sleep = Callable[[float], Awaitable[None]]


def encode(net: Network) -> bytes:
    """The record of ``networks/<id>``: the network without this host's driver state."""
    d = net.to_dict()
    d.pop("driver_state", None)
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


def decode(kv: KeyValue) -> Network | None:
    """The network of a record, or None for one this version cannot read (a damaged key, a
    newer peer's shape): one bad record must not hide every other network. Fields this
    version does not know are ignored; the scope is always global."""
    try:
        raw = json.loads(kv.value)
        if not isinstance(raw, dict):
            raise TypeError("not an object")
        net = Network.from_dict({k: v for k, v in raw.items() if k in _FIELDS})
        if net.id != keys.last(kv.key) or not isinstance(net.name, str):
            raise ValueError("id does not match its key")
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring unreadable network record %s", kv.key)
        return None
    if net.driver != OVERLAY or net.name == GATEWAY_NETWORK:
        # Only overlay networks are global: a record naming another driver would make this
        # host build a local network (a bridge) from whatever etcd holds.
        log.warning("ignoring network record %s: driver %r", kv.key, net.driver)
        return None
    net.scope = "global"
    net.driver_state = {}
    return net


def vni_of(net: Network) -> int | None:
    raw = net.options.get(OPT_VNI, "")
    return int(raw) if raw.isdigit() else None


def check_overlay_options(options: Mapping[str, str]) -> int | None:
    """The requested VNI, if any, after refusing every option an overlay does not take."""
    for k in options:
        if k not in OVERLAY_OPTIONS:
            raise Invalid(f"the overlay driver does not support option {k!r}")
    mtu = options.get(OPT_MTU)
    if mtu is not None and (not mtu.isdigit() or not 68 <= int(mtu) <= 65535):
        raise Invalid(f"invalid MTU {mtu!r}: expected a number from 68 to 65535")
    raw = options.get(OPT_VNI)
    if raw is None:
        return None
    if not raw.isdigit():
        raise Invalid(f"invalid {OPT_VNI} {raw!r}: expected one VXLAN id")
    return int(raw)


class GlobalNetworks:
    """Creates and removes global networks in etcd and mirrors ``networks/`` locally.

    ``node_names`` maps node ids to host names for messages; ``local_subnets`` lists the
    subnets an automatic pick must avoid on this host (routes, local networks)."""

    def __init__(self, kv: KV, ipam: GlobalIpam, registry: Registry,
                 drivers: Mapping[str, Driver], resolver: ResolverHooks, *,
                 node_names: Callable[[], dict[str, str]] = dict,
                 local_subnets: Callable[[], list[IPNetwork]] = list,
                 retry: float = 1.0, sleep: Sleep = asyncio.sleep) -> None:
        self.kv = kv
        self.ipam = ipam
        self.registry = registry
        self.drivers = drivers
        self.resolver = resolver
        self.node_names = node_names
        self.local_subnets = local_subnets
        self.retry = retry
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.synced = False  # a full listing has been applied since the last break
        # Waits for this host's endpoint releases in flight (engine/global_endpoints.py), so
        # `docker rm -f c && docker network rm ov` does not meet c's own record.
        self.settle: Callable[[], Awaitable[None]] | None = None

    # ---- the mirror ------------------------------------------------------------------------

    async def start(self) -> None:
        """List once now (so a restart finds its networks before reconcile), then keep the
        mirror in the background; an unreachable store is retried there."""
        revision: int | None = None
        try:
            revision = await self._list()
        except Unavailable as e:
            log.warning("cannot list global networks (%s): retrying in the background",
                        e.message)
        self._task = asyncio.create_task(self._run(revision), name="nsnet-global-networks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, revision: int | None) -> None:
        while True:
            try:
                if revision is None:
                    revision = await self._list()
                async for events in self.kv.watch(keys.NETWORKS, revision + 1):
                    self.apply(events)
                revision = None  # the store ended the watch: list again
            except Compacted:
                revision = None
            except Unavailable as e:
                if self.synced:
                    log.warning("global network watch broke (%s): resynchronising", e.message)
                self.synced = False
                revision = None
                await self._sleep(self.retry)
            except Exception:  # a bug must not end the mirror for the daemon's life
                log.exception("global network mirror")
                self.synced = False
                revision = None
                await self._sleep(self.retry)

    async def _list(self) -> int:
        held, revision = await self.kv.get_prefix(keys.NETWORKS)
        self.replace(held)
        self.synced = True
        return revision

    def replace(self, held: list[KeyValue]) -> None:
        """Make the mirror exactly the listed records."""
        seen: set[str] = set()
        for kv in held:
            net = decode(kv)
            if net is not None:
                seen.add(net.id)
                self._seen(net)
        for net in [n for n in self.registry.networks.values() if n.scope == "global"]:
            if net.id not in seen:
                self._gone(net.id)

    def apply(self, events: list[WatchEvent]) -> None:
        for ev in events:
            if ev.kind == "delete":
                self._gone(keys.last(ev.kv.key))
                continue
            net = decode(ev.kv)
            if net is not None:
                self._seen(net)

    def _seen(self, net: Network) -> None:
        old = self.registry.networks.get(net.id)
        if old is not None:
            net.driver_state = old.driver_state  # this host's, not the record's
            self.registry.networks[net.id] = net
            return
        self.registry.networks[net.id] = net
        drv = self.drivers.get(net.driver)
        if drv is None:
            return
        try:
            drv.create_network(net)
        except Exception:
            log.exception("making global network %s on this host", net.name)

    def _gone(self, network_id: str) -> None:
        net = self.registry.networks.get(network_id)
        if net is None or net.scope != "global":
            return
        if self.registry.network_users(net):
            # Only after a partition or by hand: removal checks every host first. Keeping it
            # keeps the containers' attachments readable; it goes with its last user.
            log.error("global network %s was removed from the store while containers here "
                      "use it", net.name)
            return
        self.registry.networks.pop(network_id, None)
        drv = self.drivers.get(net.driver)
        if drv is not None:
            try:
                drv.delete_network(net)
            except Exception:
                log.exception("removing global network %s from this host", net.name)
        self.resolver.network_removed(net)
        log.info("global network %s (%s) gone", net.name, net.short_id)

    # ---- use-cases -------------------------------------------------------------------------

    def _check(self, name: str, scope: str, enable_ipv6: bool, pools: list[IPAMPool],
               ipam_driver: str) -> None:
        check_network_name(name)
        # The name is one component of an etcd key (cluster/keys.py): "/", "." and ".." are
        # refused here, before anything is claimed, rather than by the store half-way.
        keys.component(name, "network name")
        if name in RESERVED_NETWORK_NAMES:
            raise Forbidden(f"operation is not permitted on predefined {name} network ")
        if name == GATEWAY_NETWORK:
            raise Forbidden(f"{name} is the name of nsnet's local gateway bridge for overlay "
                            "containers: choose another name")
        if scope not in ("", "global", "swarm"):
            raise Invalid(f"an overlay network cannot have scope {scope!r}: it is global")
        if ipam_driver not in ("", "default"):
            raise Invalid(f"overlay networks use the default IPAM driver, not {ipam_driver!r}")
        if enable_ipv6 and not any(ipaddress.ip_network(p.subnet).version == 6 for p in pools):
            raise Invalid("an IPv6 overlay network needs an IPv6 --subnet: there is no "
                          "cluster-wide IPv6 default pool")
        if any(n.name == name for n in self.registry.networks.values()):
            raise Conflict(f"network with name {name} already exists")

    async def create(self, net: Network, pools: list[IPAMPool]) -> Network:
        """Claim and publish ``net`` (id, name, flags, options and labels filled in; pools
        as requested). Returns it as stored, now in this host's registry too."""
        self._check(net.name, net.scope, net.enable_ipv6, pools, net.ipam_driver)
        vni = check_overlay_options(net.options)
        net.id = net.id or new_id()
        net.created = net.created or now_rfc3339()
        net.scope = "global"
        net.user_subnets = bool(pools)
        drv = self.drivers.get(net.driver)
        if drv is not None:
            drv.validate(net)
        avoid = [*self.local_subnets(),
                 *(ipaddress.ip_network(p.subnet) for n in self.registry.networks.values()
                   if n.scope != "global" for p in n.pools)]

        def record(claim: NetworkClaim) -> bytes:
            net.pools = list(claim.pools)
            net.options[OPT_VNI] = str(claim.vni)
            return encode(net)

        await self.ipam.create_network(net.id, net.name, pools, record,
                                       ipv4=net.enable_ipv4, vni=vni, avoid=avoid)
        log.info("global network %s (%s) created, VNI %s", net.name, net.short_id,
                 net.options[OPT_VNI])
        self._seen(net)  # at once, not at the watch event: the next request sees it
        return self.registry.networks[net.id]

    async def users_elsewhere(self, net: Network) -> list[str]:
        """Hosts (names where known, else node ids) with an endpoint or an address on
        ``net``, sorted."""
        eps, _ = await self.kv.get_prefix(keys.endpoints(net.id))
        nodes: set[str] = set()
        for kv in eps:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                raw: Any = json.loads(kv.value)
                nodes.add(str(raw.get("node", "")) or "?")
        nodes |= {h.node_id for h in await self.ipam.holders(net.id)}
        names = self.node_names()
        return sorted(names.get(n, n) for n in nodes)

    async def remove(self, net: Network) -> None:
        users = self.registry.network_users(net)
        if users:
            desc = ", ".join(f'name:"{c.name}" id:"{c.short_id}"' for c in users)
            raise Forbidden(f"error while removing network: network {net.name} id {net.id} has "
                            f"active endpoints ({desc})")
        if self.settle is not None:
            await self.settle()
        hosts = await self.users_elsewhere(net)
        if hosts:
            raise Forbidden(f"error while removing network: network {net.name} id {net.id} has "
                            f"active endpoints on hosts {', '.join(hosts)}")
        try:
            await self.ipam.remove_network(net.id)
        except Forbidden as e:  # an address claimed since the check above
            raise Forbidden(f"error while removing network {net.name}: {e.message}") from None
        self._gone(net.id)
        log.info("global network %s (%s) removed", net.name, net.short_id)

    async def prunable(self, net: Network) -> bool:
        """No endpoint on any host (for ``network prune``); False when etcd is unreachable."""
        try:
            return not self.registry.network_users(net) and not await self.users_elsewhere(net)
        except NsnetError:
            return False
