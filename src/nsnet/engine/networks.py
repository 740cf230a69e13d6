"""Network use-cases: create, remove, prune, and the predefined networks."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from nsnet import resolvconf
from nsnet.drivers.base import Driver, UniqueValidator
from nsnet.engine.config import EngineConfig
from nsnet.engine.crashpoints import crash_point
from nsnet.engine.filters import created_ts, label_match, parse_duration
from nsnet.engine.global_networks import NO_CLUSTER, OVERLAY, GlobalNetworks
from nsnet.engine.ports import Kernel, Store
from nsnet.engine.registry import Registry, check_network_name, driver_of
from nsnet.engine.resolver_hooks import ResolverHooks
from nsnet.engine.undo import Undo
from nsnet.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from nsnet.ipam.allocator import Allocator, default_gateway, pick_subnet, validate_pools
from nsnet.ipam.ula import first_free_64, load_or_create_engine_id, ula_base
from nsnet.model import (
    GATEWAY_NETWORK,
    RESERVED_NETWORK_NAMES,
    IPAMPool,
    Network,
    new_id,
    now_rfc3339,
)

log = logging.getLogger("nsnet.engine")

LOCAL_DRIVERS = ("bridge", "host", "null", "macvlan", "ipvlan")
# EngineConfig.extra keys the daemon sets from dockerd's flags of the same meaning.
DEFAULT_BRIDGE_IPV6 = "ipv6"  # --ipv6: the default bridge has IPv6
DEFAULT_BRIDGE_CIDR_V6 = "fixed_cidr_v6"  # --fixed-cidr-v6: its IPv6 subnet


@dataclass
class NetworkCreate:
    """A validated-to-shape ``POST /networks/create`` body."""

    name: str
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = False
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    ipam_driver: str = "default"
    ipam_options: dict[str, str] | None = None
    pools: list[IPAMPool] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    scope: str = ""


class NetworkService:
    """Creates and removes networks: validate all, then driver, then store (rule 2)."""

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
        # Set by the wiring when the daemon is in a cluster (--cluster-store).
        self.global_networks: GlobalNetworks | None = None
        self._ula: ipaddress.IPv6Network | None = None

    def host_reserved_subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """On-link host routes and nameservers: Docker never picks a pool overlapping them."""
        out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        try:
            out.extend(self.kernel.routes.networks())
        except Exception:
            log.exception("reading host routes")
        for server in resolvconf.read(self.config.host_resolv_conf).nameservers:
            try:
                out.append(ipaddress.ip_network(server))
            except ValueError:
                continue
        return out

    def _pick_ula(self) -> ipaddress.IPv6Network:
        """Docker's default IPv6 pool: the first /64 no network uses in the ULA /48 derived
        from this engine's ID (``ipam/ula.py``)."""
        if self._ula is None:
            self._ula = ula_base(load_or_create_engine_id(self.config.data_root))
        found = first_free_64(self._ula, self._used_subnets())
        if found is None:
            raise Forbidden(f"no free IPv6 /64 left in the default pool {self._ula}: give the "
                            "network an IPv6 --subnet")
        return found

    def _used_subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(p.subnet) for n in self.registry.networks.values()
                for p in n.pools]

    def _check_overlaps(self, pools: list[IPAMPool], driver: str) -> None:
        for p in pools:
            new = ipaddress.ip_network(p.subnet)
            for n in self.registry.networks.values():
                for q in n.pools:
                    old = ipaddress.ip_network(q.subnet)
                    if old.version == new.version and old.overlaps(new):
                        raise Forbidden(f"invalid pool request: Pool overlaps with other one on "
                                        f"this address space ({new} overlaps {old} of network "
                                        f"{n.name})")

    def _check_name(self, name: str, predefined: bool) -> None:
        check_network_name(name)
        if not predefined and name in RESERVED_NETWORK_NAMES:
            raise Forbidden(f"operation is not permitted on predefined {name} network ")
        for n in self.registry.networks.values():
            if n.name == name:
                raise Conflict(f"network with name {name} already exists")

    def _check_driver(self, req: NetworkCreate, driver: str) -> None:
        if driver == OVERLAY:
            raise Forbidden(NO_CLUSTER)
        if driver not in self.drivers:
            raise NotFound(f"plugin \"{driver}\" not found")
        if req.scope not in ("", "local"):
            raise Forbidden(f"cannot create a {req.scope} scoped network: nsnet is not a swarm "
                            "member")
        if req.ipam_driver not in ("", "default"):
            raise NotFound(f"plugin \"{req.ipam_driver}\" not found")

    @staticmethod
    def _check_families(pools: list[IPAMPool], req: NetworkCreate, driver: str) -> None:
        """An IPv4 subnet on a network with IPv4 switched off would be stored and never used
        (a container on an IPv6-only network must get no IPv4): refused, as every option
        nsnet cannot honour is. A bridge with neither family would carry nothing."""
        for p in pools:
            version = ipaddress.ip_network(p.subnet).version
            if version == 4 and not req.enable_ipv4:
                raise Invalid(f"IPv4 subnet {p.subnet} given but IPv4 is disabled "
                              "(--ipv4=false)")
        if driver == "bridge" and not (req.enable_ipv4 or req.enable_ipv6):
            raise Invalid("a bridge network needs IPv4 or IPv6: --ipv4=false needs --ipv6")

    def _complete_pools(self, pools: list[IPAMPool], req: NetworkCreate,
                        driver: str) -> list[IPAMPool]:
        """The validated pools, plus a free IPv4 subnet and an IPv6 ULA where the request
        asks for a family without giving one, each with a gateway."""
        self._check_families(pools, req, driver)
        self._check_overlaps(pools, driver)
        if not any(ipaddress.ip_network(p.subnet).version == 4 for p in pools) and \
                req.enable_ipv4:
            subnet = pick_subnet(self._used_subnets(), self.host_reserved_subnets())
            pools.insert(0, IPAMPool(subnet=str(subnet)))
        if req.enable_ipv6 and not any(
                ipaddress.ip_network(p.subnet).version == 6 for p in pools):
            pools.append(IPAMPool(subnet=str(self._pick_ula())))
        for p in pools:
            if not p.gateway:
                p.gateway = default_gateway(ipaddress.ip_network(p.subnet))
        return pools

    async def create(self, req: NetworkCreate) -> Network:
        """``POST /networks/create``: an overlay goes to the cluster (it awaits etcd), any
        other driver is made here at once."""
        if (req.driver or "bridge") != OVERLAY:
            return self.create_network(req)
        if self.global_networks is None:
            raise Forbidden(NO_CLUSTER)
        net = Network(
            id=new_id(), name=req.name or "", driver=OVERLAY, created=now_rfc3339(),
            scope=req.scope, internal=req.internal, attachable=req.attachable,
            enable_ipv4=req.enable_ipv4, enable_ipv6=req.enable_ipv6,
            ipam_driver=req.ipam_driver or "default", ipam_options=req.ipam_options or None,
            options=dict(req.options), labels=dict(req.labels))
        return await self.global_networks.create(net, validate_pools(req.pools))

    async def remove(self, ref: str) -> None:
        """``DELETE /networks/{id}``: a global network is removed cluster-wide."""
        net = self.registry.find_network(ref)
        if net.scope != "global":
            self.remove_network(net.id)
            return
        if self.global_networks is None:
            raise Unavailable(f"network {net.name} is global and this daemon has no cluster "
                              "store")
        await self.global_networks.remove(net)

    def create_network(self, req: NetworkCreate, predefined: bool = False) -> Network:
        name = req.name or ""
        self._check_name(name, predefined)
        driver = req.driver or "bridge"
        self._check_driver(req, driver)
        net = Network(
            id=new_id(), name=name, driver=driver, created=now_rfc3339(), scope="local",
            internal=req.internal, attachable=req.attachable, enable_ipv4=req.enable_ipv4,
            enable_ipv6=req.enable_ipv6, ipam_driver=req.ipam_driver or "default",
            ipam_options=req.ipam_options or None, options=dict(req.options),
            labels=dict(req.labels),
        )
        drv = driver_of(self.drivers, net)
        if not predefined:
            drv.validate(net)
            if isinstance(drv, UniqueValidator):
                drv.validate_unique(net, list(self.registry.networks.values()))
        if drv.has_endpoints:
            pools = validate_pools(req.pools)
            net.user_subnets = bool(pools)
            net.pools = self._complete_pools(pools, req, driver)
        elif req.pools:
            raise Invalid(f"the {driver} driver takes no IPAM configuration")
        with Undo() as undo:
            drv.create_network(net)
            undo.push(drv.delete_network, net)
            crash_point("network_create.kernel_made")
            self.registry.save_network(net)
        crash_point("network_create.saved")
        log.info("network %s (%s) created", net.name, net.short_id)
        return net

    def gateway_network(self) -> Network:
        """The local bridge that gives overlay containers their default route, with NAT and
        no traffic between its containers (as docker_gwbridge: containers of different
        overlays on this host must not meet through it). Made on first use; a user's own
        network of that name is used only if it is a bridge."""
        for net in self.registry.networks.values():
            if net.name == GATEWAY_NETWORK and net.scope != "global":
                if net.driver != "bridge" or net.internal:
                    raise Unavailable(f"network {GATEWAY_NETWORK} is not a bridge network "
                                      "with outbound access: remove it so nsnet can make its "
                                      "gateway bridge for overlay containers")
                return net
        return self.create_network(NetworkCreate(
            name=GATEWAY_NETWORK, driver="bridge",
            options={"com.docker.network.bridge.name": GATEWAY_NETWORK,
                     "com.docker.network.bridge.enable_icc": "false",
                     "com.docker.network.bridge.enable_ip_masquerade": "true"}))

    def _default_bridge_v6(self) -> list[IPAMPool] | None:
        """dockerd's ``--ipv6 [--fixed-cidr-v6 CIDR]`` for the default bridge, as the daemon
        passes them in ``EngineConfig.extra``: None when IPv6 is off, else the given subnet
        (none: a /64 of the default ULA pool, as Docker 27+)."""
        if not self.config.extra.get(DEFAULT_BRIDGE_IPV6):
            return None
        cidr = str(self.config.extra.get(DEFAULT_BRIDGE_CIDR_V6) or "")
        return [IPAMPool(subnet=cidr)] if cidr else []

    def _default_bridge_gains_ipv6(self, net: Network, pools: list[IPAMPool]) -> None:
        """``--ipv6`` given to a daemon whose default bridge was made without it: the network
        gains its IPv6 pool in the store; reconcile, which runs next, puts the gateway on the
        bridge and the subnet in the firewall. Containers get IPv6 from their next start.
        Turning it off again is not done (Docker re-creates the network; nsnet keeps it)."""
        pools = validate_pools(pools)
        self._check_overlaps(pools, "bridge")
        if not pools:
            pools = [IPAMPool(subnet=str(self._pick_ula()))]
        for p in pools:
            if not p.gateway:
                p.gateway = default_gateway(ipaddress.ip_network(p.subnet))
        net.enable_ipv6 = True
        net.pools = [*net.pools, *pools]
        self.registry.save_network(net)
        log.info("default bridge: IPv6 on, subnet %s", pools[0].subnet)

    def ensure_predefined(self) -> None:
        """bridge, host and none exist from the first start (Docker's predefined networks)."""
        names = {n.name for n in self.registry.networks.values()}
        v6 = self._default_bridge_v6()
        if "bridge" in names and v6 is not None:
            bridge = self.registry.find_network("bridge")
            if not any(ipaddress.ip_network(p.subnet).version == 6 for p in bridge.pools):
                self._default_bridge_gains_ipv6(bridge, v6)
        if "bridge" not in names:
            self.create_network(NetworkCreate(
                name="bridge", driver="bridge", enable_ipv6=v6 is not None, pools=v6 or [],
                options={
                    "com.docker.network.bridge.default_bridge": "true",
                    "com.docker.network.bridge.enable_icc": "true",
                    "com.docker.network.bridge.enable_ip_masquerade": "true",
                    "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                    "com.docker.network.bridge.name": self.config.default_bridge,
                    "com.docker.network.driver.mtu": "1500",
                }), predefined=True)
        if "host" not in names:
            self.create_network(NetworkCreate(name="host", driver="host"), predefined=True)
        if "none" not in names:
            self.create_network(NetworkCreate(name="none", driver="null"), predefined=True)

    def remove_network(self, ref: str) -> None:
        """A local network (a global one goes through ``remove``)."""
        net = self.registry.find_network(ref)
        if net.scope == "global":
            raise Invalid(f"network {net.name} is global: remove it through the cluster")
        if net.predefined:
            raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
        users = self.registry.network_users(net)
        if users:
            desc = ", ".join(f'name:"{c.name}" id:"{c.short_id}"' for c in users)
            raise Forbidden(f"error while removing network: network {net.name} id {net.id} has "
                            f"active endpoints ({desc})")
        driver_of(self.drivers, net).delete_network(net)
        crash_point("network_rm.kernel_removed")
        with self.store.transaction():
            self.store.delete("network", net.id)
            self.ipam.release_network(net.id)
        crash_point("network_rm.forgotten")
        self.registry.networks.pop(net.id, None)
        self.resolver.network_removed(net)
        log.info("network %s (%s) removed", net.name, net.short_id)

    async def prune(self, filters: dict[str, list[str]]) -> list[str]:
        """Local networks without users, then global ones no host uses (Docker prunes
        swarm networks too)."""
        removed = self.prune_networks(filters)
        glob = self.global_networks
        if glob is None:
            return removed
        for net in sorted(self.registry.networks.values(), key=lambda n: n.name):
            if net.scope != "global" or not _prune_match(net, filters):
                continue
            if not await glob.prunable(net):
                continue
            try:
                await glob.remove(net)
            except Exception:
                log.exception("prune %s", net.name)
                continue
            removed.append(net.name)
        return removed

    def prune_networks(self, filters: dict[str, list[str]]) -> list[str]:
        for k in filters:
            if k not in ("until", "label", "label!"):
                raise Invalid(f"invalid filter '{k}'")
        for v in filters.get("until", []):
            parse_duration(v)  # a bad value is a 400 even when nothing would be pruned
        removed = []
        for net in sorted(self.registry.networks.values(), key=lambda n: n.name):
            if net.predefined or net.scope == "global" or self.registry.network_users(net):
                continue
            if not _prune_match(net, filters):
                continue
            try:
                self.remove_network(net.id)
            except Exception:
                log.exception("prune %s", net.name)
                continue
            removed.append(net.name)
        return removed




def _prune_match(net: Network, filters: dict[str, list[str]]) -> bool:
    until = [parse_duration(v) for v in filters.get("until", [])]
    if until and not all(created_ts(net) < u for u in until):
        return False
    if not all(label_match(net.labels, f) for f in filters.get("label", [])):
        return False
    return not any(label_match(net.labels, f) for f in filters.get("label!", []))
