"""Store against kernel, read independently of the daemon: what must hold after any crash.

The daemon's own view cannot judge itself, so this reads the SQLite file directly (read-only)
and the kernel with ``ip -j``, ``nft -j`` and ``runc list`` inside the test host, and reports
every disagreement as a sentence:

- every address in IPAM is held by a stored endpoint, every stored endpoint's address is held
  in IPAM by that endpoint, and no address is stored on two endpoints of one network;
- every running container has its namespace, and in it exactly its stored endpoints' links, up,
  with their addresses and the default route of the endpoint marked for it; the host side of
  each veth exists, is up, and sits on its network's bridge;
- no veth, bridge, namespace, nftables network chain or runc container that no stored object
  owns; no namespace, runc state or stored endpoint for a container that is not running.

``reachable`` adds traffic: a peer namespace pings every running container's addresses.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from nsnet.testing.hosts import Daemon, sh


@dataclass
class StoreView:
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    ipam: list[tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def read(cls, d: Daemon) -> StoreView:
        db = sqlite3.connect(f"file:{d.data_root / 'nsnet.db'}?mode=ro", uri=True, timeout=10)
        try:
            v = cls()
            for kind, data in db.execute("SELECT kind, data FROM objects"):
                doc = json.loads(data)
                if kind == "network":
                    v.networks[doc["id"]] = doc
                elif kind == "container":
                    v.containers[doc["id"]] = doc
            v.ipam = [(str(a), str(b), str(c)) for a, b, c in
                      db.execute("SELECT network, address, owner FROM ipam")]
        finally:
            db.close()
        return v

    def endpoints(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(container, endpoint) for every stored endpoint."""
        return [(c, a["endpoint"]) for c in self.containers.values()
                for a in c.get("attachments", []) if a.get("endpoint")]

    def running(self) -> list[dict[str, Any]]:
        return [c for c in self.containers.values() if c["state"]["status"] == "running"]


def _addresses(ep: dict[str, Any]) -> list[str]:
    return [a for a in (ep.get("ipv4"), ep.get("ipv6")) if a]


def check_ipam(v: StoreView) -> list[str]:
    problems: list[str] = []
    eps = {ep["id"]: (c, ep) for c, ep in v.endpoints()}
    held: dict[tuple[str, str], str] = {}
    for network, address, owner in v.ipam:
        held[(network, address)] = owner
        if owner not in eps:
            problems.append(f"address {address} on network {network[:12]} is held by {owner[:12]}"
                            ", which no stored endpoint is")
    users: dict[tuple[str, str], list[str]] = {}
    for c, ep in v.endpoints():
        for addr in _addresses(ep):
            key = (ep["network_id"], addr)
            users.setdefault(key, []).append(c["name"])
            owner_of = held.get(key)
            if owner_of is None:
                problems.append(f"{c['name']} uses {addr}, which IPAM has as free")
            elif owner_of != ep["id"]:
                problems.append(f"{c['name']} uses {addr}, which IPAM gives to {owner_of[:12]}")
    for (network, addr), names in users.items():
        if len(names) > 1:
            problems.append(f"{addr} is stored on {len(names)} endpoints of network "
                            f"{network[:12]}: {names}")
    for c in v.containers.values():
        if c["state"]["status"] != "running":
            stale = [a["network_id"][:12] for a in c.get("attachments", []) if a.get("endpoint")]
            if stale:
                problems.append(f"{c['name']} is {c['state']['status']} but keeps endpoints on "
                                f"{stale}")
    return problems


def _links(d: Daemon, ns: str | None = None) -> list[dict[str, Any]]:
    cmd = ["ip", "-j", "-d", "addr", "show"]
    if ns is None:
        out = sh(*cmd, ns=d.host.name).stdout
    else:
        out = sh("nsenter", f"--net={ns}", *cmd).stdout
    return json.loads(out or "[]")  # type: ignore[no-any-return]


def _default_routes(ns: str) -> list[dict[str, Any]]:
    out = sh("nsenter", f"--net={ns}", "ip", "-j", "route", "show", "default").stdout
    return json.loads(out or "[]")  # type: ignore[no-any-return]


def _bridge(net: dict[str, Any]) -> str:
    state: dict[str, str] = net.get("driver_state") or {}
    return state.get("bridge") or (net.get("options") or {}).get(
        "com.docker.network.bridge.name") or "br-" + net["id"][:12]


def check_kernel(d: Daemon, v: StoreView) -> list[str]:
    """Store against kernel: each running container's sandbox, then what no object owns."""
    host_links = {x["ifname"]: x for x in _links(d)}
    owned_veths: set[str] = set()
    problems: list[str] = []
    for c in v.running():
        problems += _check_container(d, v, c, host_links, owned_veths)
    problems += _check_host_links(v, host_links, owned_veths)
    problems += _check_namespaces(d, v)
    problems += _check_chains(d, v)
    problems += _check_runc(d, v)
    return problems


def _check_container(d: Daemon, v: StoreView, c: dict[str, Any],
                     host_links: dict[str, dict[str, Any]], owned_veths: set[str]) -> list[str]:
    name = c["name"]
    problems: list[str] = []
    pid = int(c["state"]["pid"])
    if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
        problems.append(f"{name} is stored as running but its process {pid} is gone")
    if c.get("network_mode") == "host":
        return problems
    ns = str(d.exec_root / "netns" / c["id"][:12])
    if c.get("sandbox_key") != ns or not os.path.exists(ns):
        return [*problems, f"{name} is running but its namespace {ns} is missing"]
    inside = {x["ifname"]: x for x in _links(d, ns)}
    want = {a["endpoint"]["ifname"]: a["endpoint"] for a in c.get("attachments", [])
            if a.get("endpoint")}
    extra = set(inside) - set(want) - {"lo"}
    if extra:
        problems.append(f"{name} has links no stored endpoint owns: {sorted(extra)}")
    gateway = None
    for ifname, ep in want.items():
        link = inside.get(ifname)
        if link is None:
            problems.append(f"{name}: stored endpoint {ifname} is missing in the sandbox")
            continue
        problems += _check_endpoint(v, name, ifname, ep, link, host_links, owned_veths)
        if ep.get("default_route") and ep.get("gateway"):
            gateway = (ifname, ep["gateway"])
    routes = _default_routes(ns)
    if gateway is not None:
        if not any(r.get("dev") == gateway[0] and r.get("gateway") == gateway[1]
                   for r in routes):
            problems.append(f"{name}: no default route via {gateway[1]} dev {gateway[0]} "
                            f"(have {routes})")
    elif routes and want:
        problems.append(f"{name}: a default route no stored endpoint is marked for: {routes}")
    return problems


def _check_endpoint(v: StoreView, name: str, ifname: str, ep: dict[str, Any],
                    link: dict[str, Any], host_links: dict[str, dict[str, Any]],
                    owned_veths: set[str]) -> list[str]:
    """One stored endpoint against its link in the sandbox and, on a bridge, its host veth."""
    problems: list[str] = []
    if "UP" not in link.get("flags", []):
        problems.append(f"{name}: {ifname} is down")
    have = {a["local"] for a in link.get("addr_info", [])}
    for addr in _addresses(ep):
        if addr not in have:
            problems.append(f"{name}: {ifname} lacks its address {addr}")
    net = v.networks.get(ep["network_id"])
    if net is None or net.get("driver") != "bridge":
        return problems
    host_if = ep.get("host_ifname") or ""
    owned_veths.add(host_if)
    hl = host_links.get(host_if)
    if hl is None:
        return [*problems, f"{name}: host side {host_if} of {ifname} is missing"]
    if "UP" not in hl.get("flags", []):
        problems.append(f"{name}: host side {host_if} of {ifname} is down")
    if hl.get("master") != _bridge(net):
        problems.append(f"{name}: host side {host_if} is on {hl.get('master')}, not "
                        f"on {_bridge(net)}")
    by_index = {x["ifindex"]: x["ifname"] for x in host_links.values()}
    if by_index.get(link.get("link_index")) != host_if:
        problems.append(f"{name}: {ifname}'s peer is not {host_if}")
    return problems


def _check_host_links(v: StoreView, host_links: dict[str, dict[str, Any]],
                      owned_veths: set[str]) -> list[str]:
    """Veths and bridges in the host namespace that no stored object owns, and the reverse."""
    problems: list[str] = []
    bridges = {_bridge(n) for n in v.networks.values() if n.get("driver") == "bridge"}
    for ifname, link in host_links.items():
        kind = (link.get("linkinfo") or {}).get("info_kind")
        if kind == "veth" and ifname.startswith("veth") and ifname not in owned_veths:
            problems.append(f"host veth {ifname} belongs to no stored endpoint")
        if kind == "bridge" and ifname not in bridges:
            problems.append(f"bridge {ifname} belongs to no stored network")
    for b in bridges:
        if b not in host_links:
            problems.append(f"bridge {b} of a stored network is missing")
    return problems


def _check_namespaces(d: Daemon, v: StoreView) -> list[str]:
    live_ns = {c["id"][:12] for c in v.running() if c.get("network_mode") != "host"}
    netns_dir = d.exec_root / "netns"
    left = set(os.listdir(netns_dir)) if netns_dir.exists() else set()
    if left - live_ns:
        return [f"namespaces of no running container: {sorted(left - live_ns)}"]
    return []


def _check_chains(d: Daemon, v: StoreView) -> list[str]:
    problems: list[str] = []
    chains = _chain_networks(d)
    short_ids = {n["id"][:12] for n in v.networks.values()}
    for sid in chains:
        if sid not in short_ids:
            problems.append(f"firewall chains of network {sid}, which is not stored")
    for n in v.networks.values():
        if n.get("driver") == "bridge" and n["id"][:12] not in chains:
            problems.append(f"network {n['name']} has no firewall chains")
    return problems


def _check_runc(d: Daemon, v: StoreView) -> list[str]:
    running_ids = {c["id"] for c in v.running()}
    runc_root = d.exec_root / "runc"
    if not runc_root.exists():
        return []
    out = sh("runc", "--root", str(runc_root), "list", "-q", check=False).stdout.split()
    return [f"runc keeps {cid[:12]}, which is not a running container"
            for cid in out if cid not in running_ids]


def _chain_networks(d: Daemon) -> set[str]:
    out: set[str] = set()
    for item in d.host.nft_json("list", "table", "inet", "nsnet"):
        chain = item.get("chain") if isinstance(item, dict) else None
        if isinstance(chain, dict):
            m = re.fullmatch(r"n-([0-9a-f]{12})-(to|from|nat)", str(chain.get("name", "")))
            if m:
                out.add(m.group(1))
    return out


def check(d: Daemon, settle: float = 3.0) -> list[str]:
    """Every invariant; retried for ``settle`` seconds (veth deletes finish off the request
    path), the last answer returned."""
    deadline = time.monotonic() + settle
    while True:
        v = StoreView.read(d)
        problems = check_ipam(v) + check_kernel(d, v)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.1)


def reachable(d: Daemon, from_ns: str, network_id: str) -> list[str]:
    """Ping every running container's IPv4 address on ``network_id`` from namespace
    ``from_ns`` (a peer on that network)."""
    v = StoreView.read(d)
    problems: list[str] = []
    # No neighbour flush here: a re-used address behind a new MAC must be announced (gratuitous
    # ARP), so the peer's cache is part of what is checked.
    for c in v.running():
        if c.get("sandbox_key") == from_ns:
            continue
        for a in c.get("attachments", []):
            ep = a.get("endpoint")
            if not ep or not ep.get("ipv4") or ep["network_id"] != network_id:
                continue
            p = sh("nsenter", f"--net={from_ns}", "ping", "-c1", "-W2", ep["ipv4"], check=False)
            if p.returncode != 0:
                problems.append(f"{c['name']} at {ep['ipv4']} does not answer a ping")
    return problems
