"""The fake kernel's state and its netlink side: links, addresses and routes in memory.

Kept beside ``fake_kernel`` (which adds namespaces, the firewall and the reaper) so each stays
readable. Errors are the ones ``kernel.links`` turns netlink errors into: ``Conflict`` for
EEXIST, ``SystemError_`` for ENODEV, so callers' error paths run as they would for real.
"""

from __future__ import annotations

import ipaddress
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from nsnet.errors import Conflict, SystemError_

HOST = "host"  # the daemon's own namespace, as a namespace key

# Every name ``fail_on`` accepts: the kernel calls that can fail for real.
FAILABLE = frozenset({
    # links (host and sandbox)
    "ensure_bridge", "clear_alias", "ensure_address", "remove_address", "delete",
    "add_veth_into", "add_macvlan_into", "add_vlan", "add_veth_pair", "add_route", "enslave",
    "set_isolated", "set_hairpin", "set_up", "set_down", "loopback_up", "configure_endpoint",
    "set_default_route",
    # namespaces, firewall, the rest of the kernel
    "create", "remove", "call_in", "sandbox_links", "prepare_interface", "sysctl_set",
    "ensure_base", "apply_network", "remove_network", "remove_stale", "run_in_namespace",
    # overlays (testing/fake_overlays.py)
    "create_overlay", "remove_overlay", "add_peer", "remove_peer", "sync_peers",
})


def _no_device(what: str) -> SystemError_:
    return SystemError_(f"{what}: No such device")


@dataclass
class FakeLink:
    name: str
    kind: str
    ns: str
    index: int = 0
    up: bool = False
    alias: str | None = None
    mac: str | None = None
    mtu: int | None = None
    master: int | None = None  # a bridge's index (host namespace)
    parent: int | None = None  # the lower link of a macvlan, ipvlan or VLAN
    peer: tuple[str, str] | None = None  # (namespace, name) of a veth's other end
    addresses: list[str] = field(default_factory=list)
    isolated: bool = False
    hairpin: bool = False
    ipv6: bool = True
    mode: str | None = None
    vlan_id: int | None = None


@dataclass
class _Failure:
    after: int
    error: Exception


class KernelState:
    """All namespaces' links and routes behind one lock (the engine calls from threads)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.namespaces: set[str] = set()
        self.links: dict[str, dict[str, FakeLink]] = {HOST: {}}
        # namespace -> destination -> (link name, gateway)
        self.routes: dict[str, dict[str, tuple[str, str | None]]] = {HOST: {}}
        self.fd_namespaces: dict[int, str] = {}
        self.calls: list[str] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._index = itertools.count(2)  # 1 is every namespace's loopback
        self.add_link(FakeLink(name="lo", kind="loopback", ns=HOST, index=1, up=True))

    # -- failures ---------------------------------------------------------------------------

    def fail_on(self, call: str, error: Exception | None, after: int) -> None:
        if call not in FAILABLE:
            raise ValueError(f"the fake kernel has no call {call!r}; known: "
                             f"{', '.join(sorted(FAILABLE))}")
        err = error or SystemError_(f"fake kernel: {call} fails (as asked by the test)")
        with self.lock:
            self._failures.setdefault(call, []).append(_Failure(after, err))

    def hit(self, call: str) -> None:
        """Record a call; raise if a test asked this one to fail."""
        assert call in FAILABLE, call
        with self.lock:
            self.calls.append(call)
            pending = self._failures.get(call)
            if not pending:
                return
            first = pending[0]
            if first.after > 0:
                first.after -= 1
                return
            pending.pop(0)
        raise first.error

    # -- namespaces -------------------------------------------------------------------------

    def add_namespace(self, ns: str) -> None:
        self.namespaces.add(ns)
        self.links[ns] = {}
        self.routes[ns] = {}
        self.add_link(FakeLink(name="lo", kind="loopback", ns=ns, index=1))

    def drop_namespace(self, ns: str) -> None:
        """The kernel reaps a namespace with its links; veth peers elsewhere go too."""
        if ns not in self.namespaces:
            return
        for name in list(self.links.get(ns, {})):
            self.delete_link(ns, name)
        self.namespaces.discard(ns)
        self.links.pop(ns, None)
        self.routes.pop(ns, None)

    def require_namespace(self, ns: str) -> None:
        if ns != HOST and ns not in self.namespaces:
            raise FileNotFoundError(2, "No such file or directory (not a namespace)", ns)

    # -- links ------------------------------------------------------------------------------

    def add_link(self, link: FakeLink) -> FakeLink:
        with self.lock:
            table = self.links[link.ns]
            if link.name in table:
                raise Conflict(f"{link.kind} {link.name}: already exists")
            if not link.index:
                link.index = next(self._index)
            table[link.name] = link
        return link

    def get(self, ns: str, name: str) -> FakeLink | None:
        with self.lock:
            return self.links.get(ns, {}).get(name)

    def by_index(self, ns: str, index: int) -> FakeLink | None:
        with self.lock:
            for link in self.links.get(ns, {}).values():
                if link.index == index:
                    return link
        return None

    def all_links(self) -> Iterator[FakeLink]:
        with self.lock:
            items = [ln for table in self.links.values() for ln in table.values()]
        yield from items

    def delete_link(self, ns: str, name: str) -> None:
        with self.lock:
            link = self.links.get(ns, {}).pop(name, None)
            if link is None:
                return
            self.drop_routes(ns, name)
            if link.peer is not None:
                self.delete_link(*link.peer)
            if link.kind == "loopback":
                return
            # Indexes are unique across the fake's namespaces (bar loopbacks, never a lower
            # link), so an index alone names a parent or a master.
            for other in list(self.all_links()):
                if other.parent == link.index:
                    self.delete_link(other.ns, other.name)  # a macvlan dies with its parent
                elif other.master == link.index:
                    other.master = None  # a bridge's ports are released

    def drop_routes(self, ns: str, ifname: str) -> None:
        table = self.routes.get(ns, {})
        for dst in [d for d, (dev, _gw) in table.items() if dev == ifname]:
            del table[dst]


class FakeLinks:
    """``HostLinks`` (and ``SandboxLinks``) over one namespace of the fake kernel."""

    def __init__(self, state: KernelState, ns: str) -> None:
        self._s = state
        self._ns = ns

    def _need(self, name: str, what: str) -> FakeLink:
        link = self._s.get(self._ns, name)
        if link is None:
            raise _no_device(what)
        return link

    def _need_index(self, index: int, what: str) -> FakeLink:
        link = self._s.by_index(self._ns, index)
        if link is None:
            raise _no_device(what)
        return link

    def _ns_of_fd(self, fd: int) -> str:
        ns = self._s.fd_namespaces.get(fd)
        if ns is None:
            raise SystemError_(f"fd {fd} is not an open namespace")
        return ns

    # -- lookups ----------------------------------------------------------------------------

    def index(self, name: str) -> int | None:
        link = self._s.get(self._ns, name)
        return link.index if link else None

    def exists(self, name: str) -> bool:
        return self._s.get(self._ns, name) is not None

    def link_info(self, name: str) -> dict[str, object] | None:
        link = self._s.get(self._ns, name)
        if link is None:
            return None
        return {"index": link.index, "kind": link.kind, "mtu": link.mtu,
                "master": link.master, "mac": link.mac}

    def ports(self, master: int) -> list[str]:
        return [ln.name for ln in self._s.all_links()
                if ln.ns == self._ns and ln.master == master]

    def tagged(self, tag_prefix: str) -> Iterator[tuple[str, str]]:
        for ln in list(self._s.all_links()):
            if ln.ns == self._ns and ln.alias and ln.alias.startswith(tag_prefix):
                yield ln.name, ln.alias

    # -- links ------------------------------------------------------------------------------

    def ensure_bridge(self, name: str, mtu: int | None, alias: str | None,
                      known_index: int | None = None) -> tuple[int, bool]:
        self._s.hit("ensure_bridge")
        with self._s.lock:
            link = self._s.by_index(self._ns, known_index) if known_index is not None \
                else self._s.get(self._ns, name)
            created = link is None
            if link is None:
                link = self._s.add_link(FakeLink(name=name, kind="bridge", ns=self._ns,
                                                 mtu=mtu))
            link.up = True
            if mtu:
                link.mtu = mtu
            if alias is not None:
                link.alias = alias
        return link.index, created

    def clear_alias(self, index: int) -> None:
        self._s.hit("clear_alias")
        self._need_index(index, "clear alias").alias = None

    def ensure_address(self, index: int, cidr: str) -> None:
        self._s.hit("ensure_address")
        link = self._need_index(index, f"address {cidr}")
        if cidr not in link.addresses:
            link.addresses.append(cidr)

    def remove_address(self, index: int, cidr: str) -> None:
        self._s.hit("remove_address")
        link = self._s.by_index(self._ns, index)
        if link is not None and cidr in link.addresses:
            link.addresses.remove(cidr)

    def delete(self, name: str) -> None:
        self._s.hit("delete")
        self._s.delete_link(self._ns, name)

    def add_veth_into(self, host_name: str, peer_name: str, peer_mac: str, peer_ns_fd: int,
                      master: int | None, mtu: int | None, want_index: bool = False) -> int | None:
        self._s.hit("add_veth_into")
        peer_ns = self._ns_of_fd(peer_ns_fd)
        with self._s.lock:
            if master is not None:
                self._need_index(master, f"veth {host_name}")
            if self._s.get(self._ns, host_name) or self._s.get(peer_ns, peer_name):
                raise Conflict(f"veth {host_name}: already exists")
            host = self._s.add_link(FakeLink(name=host_name, kind="veth", ns=self._ns, up=True,
                                             master=master, mtu=mtu, ipv6=False,
                                             peer=(peer_ns, peer_name)))
            self._s.add_link(FakeLink(name=peer_name, kind="veth", ns=peer_ns, mac=peer_mac,
                                      mtu=mtu, peer=(self._ns, host_name)))
        return host.index if want_index else None

    def add_macvlan_into(self, name: str, parent: int, mode: str, mac: str, ns_fd: int | None,
                         mtu: int | None, kind: str = "macvlan") -> None:
        self._s.hit("add_macvlan_into")
        ns = self._ns if ns_fd is None else self._ns_of_fd(ns_fd)
        with self._s.lock:
            lower = self._need_index(parent, f"{kind} {name}")
            self._s.add_link(FakeLink(name=name, kind=kind, ns=ns, parent=parent, mode=mode,
                                      mac=mac if kind == "macvlan" else lower.mac, mtu=mtu))

    def add_vlan(self, name: str, parent: int, vlan_id: int) -> None:
        self._s.hit("add_vlan")
        with self._s.lock:
            self._need_index(parent, f"vlan {name}")
            self._s.add_link(FakeLink(name=name, kind="vlan", ns=self._ns, parent=parent,
                                      vlan_id=vlan_id, up=True))

    def add_veth_pair(self, name: str, peer: str, alias: str) -> int:
        self._s.hit("add_veth_pair")
        with self._s.lock:
            if self._s.get(self._ns, name) or self._s.get(self._ns, peer):
                raise Conflict(f"veth {name}: already exists")
            link = self._s.add_link(FakeLink(name=name, kind="veth", ns=self._ns, up=True,
                                             alias=alias, peer=(self._ns, peer)))
            self._s.add_link(FakeLink(name=peer, kind="veth", ns=self._ns, up=True,
                                      alias=alias, peer=(self._ns, name)))
        return link.index

    def enslave(self, name: str, master: int) -> bool:
        self._s.hit("enslave")
        with self._s.lock:
            link = self._s.get(self._ns, name)
            if link is None:
                return False
            self._need_index(master, f"enslave {name}")
            link.master = master
            link.up = True
        return True

    def set_isolated(self, index: int, isolated: bool) -> None:
        self._s.hit("set_isolated")
        self._need_index(index, "bridge port isolation").isolated = isolated

    def set_hairpin(self, index: int, on: bool) -> None:
        self._s.hit("set_hairpin")
        self._need_index(index, "bridge port hairpin mode").hairpin = on

    def set_up(self, name: str) -> None:
        self._s.hit("set_up")
        self._need(name, f"up {name}").up = True

    def set_down(self, name: str) -> None:
        self._s.hit("set_down")
        with self._s.lock:
            link = self._s.get(self._ns, name)
            if link is not None:
                link.up = False
                self._s.drop_routes(self._ns, name)  # a link going down takes its routes

    def loopback_up(self) -> None:
        self._s.hit("loopback_up")
        self._need("lo", "loopback").up = True

    # -- routes -----------------------------------------------------------------------------

    def add_route(self, dst: str, ifname: str) -> None:
        self._s.hit("add_route")
        with self._s.lock:
            self._need(ifname, f"route {dst} dev {ifname}")
            table = self._s.routes[self._ns]
            if dst in table:
                raise Conflict(f"route {dst} dev {ifname}: already exists")
            table[dst] = (ifname, None)

    def configure_endpoint(self, ifname: str, addresses: list[str], gateway4: str | None,
                           gateway6: str | None) -> None:
        self._s.hit("configure_endpoint")
        with self._s.lock:
            link = self._need(ifname, f"configure {ifname}")
            for cidr in addresses:
                if cidr in link.addresses:
                    raise Conflict(f"configure {ifname}: already exists")
                link.addresses.append(cidr)
            link.up = True
            if gateway4:
                self._route_default(link, gateway4, 4)
            if gateway6:
                self._route_default(link, gateway6, 6)

    def set_default_route(self, ifname: str, gateway: str, family: int = 4) -> None:
        self._s.hit("set_default_route")
        with self._s.lock:
            self._route_default(self._need(ifname, f"default route via {gateway}"), gateway,
                                family)

    def _route_default(self, link: FakeLink, gateway: str, family: int) -> None:
        """As the kernel: the gateway must be on a connected subnet of an up link."""
        gw = ipaddress.ip_address(gateway)
        if not link.up or not any(gw in ipaddress.ip_interface(a).network
                                  for a in link.addresses):
            raise SystemError_(f"default route via {gateway}: Network is unreachable")
        dst = "0.0.0.0/0" if family == 4 else "::/0"
        self._s.routes[self._ns][dst] = (link.name, gateway)

    def close(self) -> None:
        pass
