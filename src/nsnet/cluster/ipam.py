"""Global IPAM: subnets, VNIs, addresses and network names handed out once across every host.

Each daemon talks to the same KV store and nothing else coordinates them, so every claim is a
transaction that compares what it read and writes only if nobody changed it meanwhile; a loser
re-reads and tries again (bounded, with jitter). What each kind of claim compares, and why that
is enough (keys are in ``cluster.keys``):

- **a network** (its name, subnets, VNI and record in one transaction): the name key absent,
  the VNI key absent, each subnet key absent, and ``ipam/subnet-epoch`` unchanged since the
  subnets were listed (overlap is not a single-key compare, so the epoch serialises subnet
  changes; the transaction bumps it).
- **an address**: the address key absent and its subnet record unchanged. A network removal
  first rewrites its subnet records with a "releasing" mark, so a claim that read the record
  before the mark fails, and one that reads it after is refused; then the removal lists the
  addresses, and only if there are none deletes everything, comparing its own marks. Without
  the mark an address claimed between the removal's listing and its delete would outlive its
  network.

The choice of what to claim is the local allocator's pure code (``ipam.allocator``): Docker's
global pool 10.0.0.0/8 in /24s, the lowest free address with gateway, aux addresses and
ip-range honoured, the same validation and messages. Errors: ``Conflict`` (409) for a taken
name or static address, ``Forbidden`` (403) for overlap and a network still in use,
``Unavailable`` (503) when the store cannot be reached or contention never settles.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nsnet.cluster import keys
from nsnet.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from nsnet.ipam.allocator import (
    GLOBAL_POOLS,
    IPNetwork,
    default_gateway,
    lowest_free,
    pick_subnet,
    pool_of_requested,
    validate_pools,
)
from nsnet.model import IPAMPool
from nsnet.store.kv import KV, KeyValue

VNI_FIRST = 4096  # below: left for hand-made VXLANs (and Docker Swarm's own 4096 start)
VNI_LAST = (1 << 24) - 1
# How long a removal's mark blocks address claims if its daemon dies before finishing.
RELEASE_HOLD = 30.0


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _load(kv: KeyValue) -> dict[str, Any]:
    value = json.loads(kv.value)
    if not isinstance(value, dict):
        raise Unavailable(f"cluster store: {kv.key} holds no JSON object")
    return value


@dataclass(frozen=True)
class NetworkClaim:
    """What ``create_network`` chose: the caller builds the network record from it."""

    network_id: str
    name: str
    vni: int
    pools: tuple[IPAMPool, ...]


@dataclass(frozen=True)
class AddressClaim:
    network_id: str
    address: str
    prefixlen: int
    gateway: str | None


@dataclass(frozen=True)
class AddressHolder:
    network_id: str
    address: str
    endpoint_id: str
    node_id: str


@dataclass
class _Subnet:
    """``ipam/subnets/<cidr>`` as read: its pool, owner and any removal mark."""

    kv: KeyValue
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def network_id(self) -> str:
        return str(self.record.get("network", ""))

    @property
    def pool(self) -> IPAMPool:
        r = self.record
        return IPAMPool(subnet=keys.subnet_of_key(self.kv.key), gateway=r.get("gateway"),
                        ip_range=r.get("ip_range"), aux_addresses=dict(r.get("aux", {})))

    def releasing(self, now: float) -> bool:
        return float(self.record.get("releasing_until", 0)) > now


def pick_vni(used: Iterable[int], first: int = VNI_FIRST) -> int:
    """The lowest VNI from ``first`` up that nobody holds."""
    taken = set(used)
    for vni in range(first, VNI_LAST + 1):
        if vni not in taken:
            return vni
    raise Forbidden("no free VXLAN network identifier left")


def _subnet_record(network_id: str, pool: IPAMPool) -> dict[str, Any]:
    record: dict[str, Any] = {"network": network_id, "gateway": pool.gateway}
    if pool.ip_range:
        record["ip_range"] = pool.ip_range
    if pool.aux_addresses:
        record["aux"] = dict(pool.aux_addresses)
    return record


class GlobalIpam:
    """Claims and releases on one ``KV``; safe to use from many tasks and many hosts at once.

    ``node_id`` is written into every address claim so a network that cannot be removed can
    name the hosts still using it, and reconcile can find a dead node's claims.
    """

    def __init__(self, kv: KV, node_id: str, *, attempts: int = 64,
                 clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._node = keys.component(node_id, "node id")
        self._attempts = attempts
        self._clock = clock
        self._random = random.Random()
        # network id -> its subnet keys; subnets never change during a network's life.
        self._subnet_keys: dict[str, tuple[str, ...]] = {}

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(self._random.uniform(0, min(0.02, 0.0005 * (attempt + 1))))

    def _busy(self, what: str) -> Unavailable:
        return Unavailable(f"cluster store: gave up {what} after {self._attempts} attempts "
                           "(other hosts kept changing the same keys); try again")

    async def _subnets(self) -> list[_Subnet]:
        held, _ = await self._kv.get_prefix(keys.SUBNETS)
        return [_Subnet(kv, _load(kv)) for kv in held]

    # ---- networks --------------------------------------------------------------------------

    async def create_network(self, network_id: str, name: str, pools: Sequence[IPAMPool],
                             record: Callable[[NetworkClaim], bytes], *, ipv4: bool = True,
                             vni: int | None = None,
                             avoid: Iterable[IPNetwork] = ()) -> NetworkClaim:
        """Claim ``name``, the pools (a free /24 of 10.0.0.0/8 when ``ipv4`` and none is
        IPv4), a VNI (``vni``, else the lowest free from 4096) and write ``record(claim)`` as
        ``networks/<network_id>``, all in one transaction. ``avoid``: subnets the automatic
        pick must not overlap (this host's routes)."""
        requested = validate_pools(list(pools))
        if vni is not None and not VNI_FIRST <= vni <= VNI_LAST:
            raise Invalid(f"invalid VXLAN id {vni}: must be from {VNI_FIRST} to {VNI_LAST}")
        name_key, net_key = keys.network_name(name), keys.network(network_id)
        avoid = list(avoid)
        for attempt in range(self._attempts):
            epoch = await self._kv.get(keys.SUBNET_EPOCH)
            if await self._kv.get(name_key) is not None:
                raise Conflict(f"network with name {name} already exists")
            if await self._kv.get(net_key) is not None:
                raise Conflict(f"network with id {network_id} already exists")
            chosen = self._complete(requested, await self._subnets(), ipv4, avoid)
            vnis, _ = await self._kv.get_prefix(keys.VNIS)
            held_vnis = {int(keys.last(kv.key)) for kv in vnis}
            if vni is not None and vni in held_vnis:
                raise Conflict(f"VXLAN id {vni} is already in use by another network")
            claim = NetworkClaim(network_id, name, vni or pick_vni(held_vnis), tuple(chosen))
            owner = _dump({"network": network_id})
            compares = [(keys.SUBNET_EPOCH, epoch.mod_revision if epoch else 0), (name_key, 0),
                        (net_key, 0), (keys.vni(claim.vni), 0)]
            puts = [(keys.SUBNET_EPOCH, str(int(epoch.value) + 1 if epoch else 1).encode(), 0),
                    (name_key, owner, 0), (net_key, record(claim), 0),
                    (keys.vni(claim.vni), owner, 0)]
            for p in chosen:
                compares.append((keys.subnet(p.subnet), 0))
                puts.append((keys.subnet(p.subnet), _dump(_subnet_record(network_id, p)), 0))
            if await self._kv.txn(compares, puts, []):
                self._subnet_keys[network_id] = tuple(keys.subnet(p.subnet) for p in chosen)
                return claim
            await self._backoff(attempt)
        raise self._busy(f"creating network {name}")

    @staticmethod
    def _complete(requested: list[IPAMPool], held: list[_Subnet], ipv4: bool,
                  avoid: list[IPNetwork]) -> list[IPAMPool]:
        """The requested pools checked against every held subnet, plus an automatic IPv4
        /24 when needed, each with a gateway (new objects: the request is reused on retry)."""
        taken = [ipaddress.ip_network(keys.subnet_of_key(s.kv.key)) for s in held]
        out = [IPAMPool(subnet=p.subnet, gateway=p.gateway, ip_range=p.ip_range,
                        aux_addresses=dict(p.aux_addresses)) for p in requested]
        for p in out:
            new = ipaddress.ip_network(p.subnet)
            for s, old in zip(held, taken, strict=True):
                if old.version == new.version and old.overlaps(new):
                    raise Forbidden(f"invalid pool request: Pool overlaps with other one on "
                                    f"this address space ({new} overlaps {old} of network "
                                    f"{s.network_id[:12]})")
        if ipv4 and not any(ipaddress.ip_network(p.subnet).version == 4 for p in out):
            mine = [ipaddress.ip_network(p.subnet) for p in out]
            out.insert(0, IPAMPool(subnet=str(pick_subnet([*taken, *mine], avoid,
                                                          GLOBAL_POOLS))))
        for p in out:
            if not p.gateway:
                p.gateway = default_gateway(ipaddress.ip_network(p.subnet))
        return out

    async def remove_network(self, network_id: str) -> bool:
        """Delete the network's record, name, VNI and subnets once no address is claimed on
        it; ``Forbidden`` naming the nodes that still hold addresses. False if nothing of it
        was there (idempotent)."""
        for attempt in range(self._attempts):
            net = await self._kv.get(keys.network(network_id))
            owned = await self._owned_keys(network_id)
            subnets = [s for s in await self._subnets() if s.network_id == network_id]
            if net is None and not owned and not subnets:
                self._subnet_keys.pop(network_id, None)
                return False
            marked = await self._mark(subnets)
            if marked is None:
                await self._backoff(attempt)
                continue
            holders = await self.holders(network_id)
            if holders:
                await self._unmark(subnets, marked)
                nodes = ", ".join(sorted({h.node_id for h in holders}))
                raise Forbidden(f"error while removing network: network {network_id[:12]} "
                                f"has active endpoints on nodes {nodes}")
            compares = [(s.kv.key, rev) for s, rev in zip(subnets, marked, strict=True)]
            compares.append((keys.network(network_id), net.mod_revision if net else 0))
            deletes = [keys.network(network_id), *owned, *(s.kv.key for s in subnets)]
            if await self._kv.txn(compares, [], deletes):
                self._subnet_keys.pop(network_id, None)
                return True
            await self._backoff(attempt)
        raise self._busy(f"removing network {network_id[:12]}")

    async def _owned_keys(self, network_id: str) -> list[str]:
        """The network's name and VNI keys (whose values name their network)."""
        found: list[str] = []
        for prefix in (keys.NETWORK_NAMES, keys.VNIS):
            held, _ = await self._kv.get_prefix(prefix)
            found += [kv.key for kv in held if _load(kv).get("network") == network_id]
        return found

    async def _mark(self, subnets: list[_Subnet]) -> list[int] | None:
        """Mark every subnet record "releasing" in one transaction; their new revisions, or
        None if any changed since it was read."""
        if not subnets:
            return []
        token = secrets.token_hex(8)
        until = self._clock() + RELEASE_HOLD
        puts = [(s.kv.key, _dump({**s.record, "releasing_until": until, "releasing": token}), 0)
                for s in subnets]
        if not await self._kv.txn([(s.kv.key, s.kv.mod_revision) for s in subnets], puts, []):
            return None
        revisions: list[int] = []
        for s in subnets:
            now = await self._kv.get(s.kv.key)
            if now is None or _load(now).get("releasing") != token:
                return None
            revisions.append(now.mod_revision)
        return revisions

    async def _unmark(self, subnets: list[_Subnet], marked: list[int]) -> None:
        compares = [(s.kv.key, rev) for s, rev in zip(subnets, marked, strict=True)]
        restore = [(s.kv.key, _dump({k: v for k, v in s.record.items()
                                      if k not in ("releasing", "releasing_until")}), 0)
                   for s in subnets]
        # If this fails another removal has re-marked them; its own outcome decides.
        await self._kv.txn(compares, restore, [])

    # ---- addresses -------------------------------------------------------------------------

    async def _network_subnets(self, network_id: str) -> list[_Subnet]:
        """The network's subnet records, read fresh (their revisions matter), found through
        a cache of their keys that is rebuilt when it no longer matches."""
        cached = self._subnet_keys.get(network_id, ())
        out: list[_Subnet] = []
        for key in cached:
            kv = await self._kv.get(key)
            if kv is None or _load(kv).get("network") != network_id:
                break
            out.append(_Subnet(kv, _load(kv)))
        if cached and len(out) == len(cached):
            return out
        found = [s for s in await self._subnets() if s.network_id == network_id]
        if found:
            self._subnet_keys[network_id] = tuple(s.kv.key for s in found)
        else:
            self._subnet_keys.pop(network_id, None)
        return found

    async def allocate_address(self, network_id: str, endpoint_id: str, *, family: int = 4,
                               requested: str | None = None,
                               network_name: str = "") -> AddressClaim:
        """Claim ``requested`` or the lowest free address of the network's IPv``family``
        pool for ``endpoint_id`` on this node."""
        name = network_name or network_id[:12]
        value = _dump({"endpoint": keys.component(endpoint_id, "endpoint id"),
                       "node": self._node})
        tried: set[str] = set()
        for attempt in range(self._attempts):
            subnets = await self._network_subnets(network_id)
            if not subnets:
                raise NotFound(f"network {name} not found")
            if any(s.releasing(self._clock()) for s in subnets):
                raise Forbidden(f"network {name} is being removed")
            addr, subnet = await self._candidate(network_id, subnets, family, requested, tried,
                                                 name)
            key = keys.address(network_id, addr)
            if await self._kv.txn([(subnet.kv.key, subnet.kv.mod_revision), (key, 0)],
                                  [(key, value, 0)], []):
                net = ipaddress.ip_network(subnet.pool.subnet)
                return AddressClaim(network_id, addr, net.prefixlen, subnet.pool.gateway)
            if requested and await self._kv.get(key) is not None:
                raise Conflict(f"Address already in use: {addr} in network {name}")
            tried.add(addr)
            await self._backoff(attempt)
        raise self._busy(f"allocating an address on network {name}")

    async def _candidate(self, network_id: str, subnets: list[_Subnet], family: int,
                         requested: str | None, tried: set[str],
                         name: str) -> tuple[str, _Subnet]:
        by_pool = {s.pool.subnet: s for s in subnets}
        pools = [s.pool for s in subnets]
        if requested:
            addr, pool = pool_of_requested(pools, requested, family, name)
            return addr, by_pool[pool.subnet]
        subnet = next((s for s in subnets
                       if ipaddress.ip_network(s.pool.subnet).version == family), None)
        if subnet is None:
            raise Invalid(f"network {name} has no IPv{family} subnet")
        held, _ = await self._kv.get_prefix(keys.addresses(network_id))
        free = lowest_free(subnet.pool, {keys.last(kv.key) for kv in held} | tried)
        if free is None:
            raise Unavailable(f"no available IPv{family} addresses on network {name}")
        return free, subnet

    async def release_address(self, network_id: str, address: str,
                              endpoint_id: str | None = None) -> bool:
        """Free an address (only if ``endpoint_id``, when given, still holds it: a late
        release must not free an address handed to someone else since). Idempotent."""
        key = keys.address(network_id, address)
        for attempt in range(self._attempts):
            kv = await self._kv.get(key)
            if kv is None:
                return False
            if endpoint_id is not None and _load(kv).get("endpoint") != endpoint_id:
                return False
            try:
                return await self._kv.delete(key, expect_mod_revision=kv.mod_revision)
            except Conflict:
                await self._backoff(attempt)
        raise self._busy(f"releasing {address}")

    async def holders(self, network_id: str | None = None) -> list[AddressHolder]:
        """Every address claim (of one network, or of all): for ``network rm``'s message and
        for reconcile, which releases what no live endpoint owns."""
        prefix = keys.addresses(network_id) if network_id else keys.ADDRESSES
        held, _ = await self._kv.get_prefix(prefix)
        out: list[AddressHolder] = []
        for kv in held:
            network, _, addr = kv.key[len(keys.ADDRESSES):].partition("/")
            record = _load(kv)
            out.append(AddressHolder(network, addr, str(record.get("endpoint", "")),
                                     str(record.get("node", ""))))
        return out
