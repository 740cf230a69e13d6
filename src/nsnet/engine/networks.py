"""Network use-cases: create, remove, prune, and the predefined networks."""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass, field

from nsnet.engine.base import NAME_RE, EngineBase, log
from nsnet.engine.crashpoints import crash_point
from nsnet.engine.filter_regex import filter_regex
from nsnet.engine.undo import Undo
from nsnet.errors import Conflict, Forbidden, Invalid, NotFound
from nsnet.ipam.allocator import default_gateway, pick_subnet, validate_pools
from nsnet.model import (
    PREDEFINED_NETWORKS,
    RESERVED_NETWORK_NAMES,
    IPAMPool,
    Network,
    new_id,
    now_rfc3339,
)

LOCAL_DRIVERS = ("bridge", "host", "null", "macvlan", "ipvlan")


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


def parse_duration(value: str) -> float:
    """Docker's ``until`` filter: a Go duration (``24h``, ``1h30m``) or a timestamp."""
    m = re.fullmatch(r"((?:\d+(?:\.\d+)?(?:h|m|s|ms))+)", value)
    if m:
        total = 0.0
        for num, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", value):
            total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        return time.time() - total
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise Invalid(f"invalid filter 'until={value}': not a duration or a timestamp") from None


def created_ts(net: Network) -> float:
    from datetime import datetime

    s = net.created
    if "." in s:
        head, frac = s.rstrip("Z").split(".", 1)
        s = f"{head}.{frac[:6]}+00:00"
    else:
        s = s.replace("Z", "+00:00")
    return datetime.fromisoformat(s).timestamp()


class NetworksMixin(EngineBase):
    def host_reserved_subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """On-link host routes and nameservers: Docker never picks a pool overlapping them."""
        out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        try:
            out.extend(self.host.routes.networks())
        except Exception:  # noqa: BLE001
            log.exception("reading host routes")
        try:
            for line in self.config.host_resolv_conf.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        out.append(ipaddress.ip_network(parts[1]))
                    except ValueError:
                        continue
        except OSError:
            pass
        return out

    def _pick_ula(self) -> ipaddress.IPv6Network:
        """Docker 28's default IPv6 pool: a /48 ULA derived from this daemon's identity, cut
        into /64s, the first one no network uses."""
        import hashlib

        seed = hashlib.sha256(str(self.config.data_root.resolve()).encode()).digest()[:5]
        base = ipaddress.IPv6Network((b"\xfd" + seed + bytes(10), 48))
        used = [n for n in self._used_subnets() if n.version == 6]
        for cand in base.subnets(new_prefix=64):
            if not any(cand.overlaps(u) for u in used):
                return cand
        raise Forbidden("no free IPv6 /64 left in the default ULA pool")

    def _used_subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(p.subnet) for n in self.networks.values() for p in n.pools]

    def _check_overlaps(self, pools: list[IPAMPool], driver: str) -> None:
        for p in pools:
            new = ipaddress.ip_network(p.subnet)
            for n in self.networks.values():
                for q in n.pools:
                    old = ipaddress.ip_network(q.subnet)
                    if old.version == new.version and old.overlaps(new):
                        raise Forbidden(f"invalid pool request: Pool overlaps with other one on "
                                        f"this address space ({new} overlaps {old} of network "
                                        f"{n.name})")

    def create_network(self, req: NetworkCreate, predefined: bool = False) -> Network:
        name = req.name or ""
        if not name.strip():
            raise Invalid("invalid name: name is empty")
        if not predefined and name in RESERVED_NETWORK_NAMES:
            raise Forbidden(f"operation is not permitted on predefined {name} network ")
        if not NAME_RE.fullmatch(name) and not predefined:
            raise Invalid(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are "
                          "allowed")
        if len(name) > 255:
            raise Invalid("invalid network name: longer than 255 characters")
        for n in self.networks.values():
            if n.name == name:
                raise Conflict(f"network with name {name} already exists")
        driver = req.driver or "bridge"
        if driver == "overlay":
            raise Forbidden("overlay networks are not available yet in nsnet")
        if driver not in self.drivers:
            raise NotFound(f"plugin \"{driver}\" not found")
        if req.scope not in ("", "local"):
            raise Forbidden(f"cannot create a {req.scope} scoped network: nsnet is not a swarm "
                            "member")
        if req.ipam_driver not in ("", "default"):
            raise NotFound(f"plugin \"{req.ipam_driver}\" not found")
        net = Network(
            id=new_id(), name=name, driver=driver, created=now_rfc3339(), scope="local",
            internal=req.internal, attachable=req.attachable, enable_ipv4=req.enable_ipv4,
            enable_ipv6=req.enable_ipv6, ipam_driver=req.ipam_driver or "default",
            ipam_options=req.ipam_options or None, options=dict(req.options),
            labels=dict(req.labels),
        )
        drv = self.driver_of(net)
        if not predefined:
            drv.validate(net)
            unique = getattr(drv, "validate_unique", None)
            if unique is not None:
                unique(net, list(self.networks.values()))
        if drv.has_endpoints:
            pools = validate_pools(req.pools)
            self._check_overlaps(pools, driver)
            net.user_subnets = bool(pools)
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
            net.pools = pools
        elif req.pools:
            raise Invalid(f"the {driver} driver takes no IPAM configuration")
        with Undo() as undo:
            drv.create_network(net)
            undo.push(drv.delete_network, net)
            crash_point("network_create.kernel_made")
            self.save_network(net)
        crash_point("network_create.saved")
        log.info("network %s (%s) created", net.name, net.short_id)
        return net

    def ensure_predefined(self) -> None:
        """bridge, host and none exist from the first start (Docker's predefined networks)."""
        names = {n.name for n in self.networks.values()}
        if "bridge" not in names:
            self.create_network(NetworkCreate(
                name="bridge", driver="bridge",
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
        net = self.find_network(ref)
        if net.predefined:
            raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
        users = self.network_users(net)
        if users:
            desc = ", ".join(f'name:"{c.name}" id:"{c.short_id}"' for c in users)
            raise Forbidden(f"error while removing network: network {net.name} id {net.id} has "
                            f"active endpoints ({desc})")
        self.driver_of(net).delete_network(net)
        crash_point("network_rm.kernel_removed")
        with self.store.transaction():
            self.store.delete("network", net.id)
            self.ipam.release_network(net.id)
        crash_point("network_rm.forgotten")
        self.networks.pop(net.id, None)
        self.resolver.network_removed(net)
        log.info("network %s (%s) removed", net.name, net.short_id)

    def prune_networks(self, filters: dict[str, list[str]]) -> list[str]:
        for k in filters:
            if k not in ("until", "label", "label!"):
                raise Invalid(f"invalid filter '{k}'")
        until = [parse_duration(v) for v in filters.get("until", [])]
        removed = []
        for net in sorted(self.networks.values(), key=lambda n: n.name):
            if net.predefined or self.network_users(net):
                continue
            if until and not all(created_ts(net) < u for u in until):
                continue
            if not all(label_match(net.labels, f) for f in filters.get("label", [])):
                continue
            if any(label_match(net.labels, f) for f in filters.get("label!", [])):
                continue
            try:
                self.remove_network(net.id)
            except Exception:  # noqa: BLE001 - prune is best effort, like Docker's
                log.exception("prune %s", net.name)
                continue
            removed.append(net.name)
        return removed


def label_match(labels: dict[str, str], f: str) -> bool:
    if "=" in f:
        k, v = f.split("=", 1)
        return labels.get(k) == v
    return f in labels


def network_matches(net: Network, filters: dict[str, list[str]], in_use: bool) -> bool:
    """Docker's ``GET /networks`` filters (moby daemon/network/filter.go)."""
    for key, values in filters.items():
        if not values:
            continue
        if key == "driver":
            if net.driver not in values:
                return False
        elif key == "scope":
            if net.scope not in values:
                return False
        elif key == "name":
            if not any(v == net.name or _re_search(v, net.name, "name") for v in values):
                return False
        elif key == "id":
            if not any(v == net.id or _re_search(v, net.id, "id") for v in values):
                return False
        elif key == "label":
            if not all(label_match(net.labels, v) for v in values):
                return False
        elif key == "type":
            for v in values:
                if v not in ("custom", "builtin"):
                    raise Invalid(f"invalid filter: 'type'='{v}'")
            kind = "builtin" if net.name in PREDEFINED_NETWORKS else "custom"
            if kind not in values:
                return False
        elif key == "dangling":
            want = []
            for v in values:
                if v.lower() in ("true", "1"):
                    want.append(True)
                elif v.lower() in ("false", "0"):
                    want.append(False)
                else:
                    raise Invalid(f"invalid filter 'dangling={v}'")
            dangling = not net.predefined and not in_use
            if dangling not in want:
                return False
        else:
            raise Invalid(f"invalid filter '{key}'")
    return True


def _re_search(pattern: str, text: str, key: str) -> bool:
    return filter_regex(pattern, key).search(text)
