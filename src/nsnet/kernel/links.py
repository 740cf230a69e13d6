"""Links, addresses and routes over netlink (pyroute2 0.7).

pyroute2 is pinned to 0.7: its ``IPRoute`` opens its netlink socket in the constructor, in the
calling thread's namespace, and that socket then works from any thread. 0.8+ opens sockets lazily
and per thread, which silently talks to the *daemon's* namespace when the socket was meant for a
container's (seen here: an address meant for a sandbox landed on the host's eth0).

Every lookup is a kernel-filtered ``get`` by name, never a dump (``link_lookup`` dumps every link
and costs hundreds of ms at scale).
"""

from __future__ import annotations

import errno
import ipaddress
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nsnet.errors import Conflict, Invalid, SystemError_, Unavailable


def random_mac() -> str:
    """Locally administered unicast MAC, as Docker 28 does."""
    b = bytearray(secrets.token_bytes(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def random_veth_name() -> str:
    """Docker's host-side veth name shape: ``veth`` + 7 hex characters."""
    return "veth" + secrets.token_hex(4)[:7]


def _kernel_error(e: NetlinkError, what: str) -> Exception:
    code = e.code
    if code == errno.EEXIST:
        return Conflict(f"{what}: already exists")
    if code == errno.EOPNOTSUPP or code == errno.ENOTSUP:
        return Unavailable(f"{what}: not supported by this kernel")
    if code == errno.EINVAL:
        return Invalid(f"{what}: invalid argument (kernel refused)")
    return SystemError_(f"{what}: {e}")


IFA_F_NODAD = 0x02


def _ipv6_conf(name: str, key: str, value: str) -> None:
    """Through /proc/sys of the calling thread's namespace (the daemon's own)."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/{key}", "w") as f:
            f.write(value)
    except OSError:
        pass  # no IPv6 in this kernel or namespace: nothing to switch off


def _disable_ipv6(name: str) -> None:
    _ipv6_conf(name, "disable_ipv6", "1")

KIND_FEATURE = {
    "macvlan": "macvlan links (CONFIG_MACVLAN)",
    "ipvlan": "ipvlan links (CONFIG_IPVLAN)",
    "vlan": "802.1q VLAN links (CONFIG_VLAN_8021Q, module 8021q)",
    "vxlan": "VXLAN links (CONFIG_VXLAN)",
}


def _link_kind_error(e: NetlinkError, kind: str, name: str) -> Exception:
    """The kernel says EOPNOTSUPP ("Unknown device type") for a link kind it was built
    without: name the missing feature instead of echoing errno."""
    if e.code in (errno.EOPNOTSUPP, errno.ENOTSUP) or "Unknown device type" in str(e):
        return Unavailable(f"this kernel has no {KIND_FEATURE.get(kind, kind + ' links')}: "
                           f"cannot create {name}")
    return _kernel_error(e, f"{kind} {name}")


class Links:
    """Netlink operations on one namespace's links through one socket."""

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr
        self._lock = threading.Lock()

    def close(self) -> None:
        self.ipr.close()

    def index(self, name: str) -> int | None:
        with self._lock:
            try:
                msgs = self.ipr.link("get", ifname=name)
            except NetlinkError as e:
                if e.code in (errno.ENODEV, errno.ENOENT):
                    return None
                raise _kernel_error(e, f"link {name}") from e
        return int(msgs[0]["index"])

    def exists(self, name: str) -> bool:
        return self.index(name) is not None

    def link_info(self, name: str) -> dict[str, object] | None:
        with self._lock:
            try:
                msg = self.ipr.link("get", ifname=name)[0]
            except NetlinkError as e:
                if e.code in (errno.ENODEV, errno.ENOENT):
                    return None
                raise _kernel_error(e, f"link {name}") from e
        linkinfo = msg.get_attr("IFLA_LINKINFO")
        kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else None
        return {
            "index": msg["index"],
            "kind": kind,
            "mtu": msg.get_attr("IFLA_MTU"),
            "master": msg.get_attr("IFLA_MASTER"),
            "mac": msg.get_attr("IFLA_ADDRESS"),
        }

    def ensure_bridge(self, name: str, mtu: int | None, alias: str | None,
                      known_index: int | None = None) -> tuple[int, bool]:
        """Create the bridge if missing (reconcile calls this on every start), up, tagged.

        Returns (index, created). ``known_index`` saves a lookup when the caller has one.
        """
        idx = known_index
        created = False
        with self._lock:
            try:
                if idx is None:
                    kw: dict[str, object] = {"ifname": name, "kind": "bridge"}
                    if mtu:
                        kw["mtu"] = mtu
                    try:
                        # Try the add first: a failed lookup costs as much as the add itself.
                        self.ipr.link("add", **kw)
                        created = True
                    except NetlinkError as e:
                        if e.code != errno.EEXIST:
                            raise
                    idx = int(self.ipr.link("get", ifname=name)[0]["index"])
                    if created:
                        # Born down so that its link-local address skips DAD from the start.
                        # The host sends neighbour solicitations for forwarded traffic (from
                        # the LAN, from another container through a published port) from the
                        # bridge's link-local address; while that address is tentative (1-2 s
                        # after the first port comes up) the kernel sends none and the first
                        # packets to a container wait a retransmit or are lost.
                        _ipv6_conf(name, "accept_dad", "0")
                        self.ipr.link("set", index=idx, state="up")
                extra: dict[str, object] = {"mtu": mtu} if mtu and not created else {}
                if alias is not None:
                    extra["ifalias"] = alias
                if not created:
                    self.ipr.link("set", index=idx, state="up", **extra)
                elif extra:
                    self.ipr.link("set", index=idx, **extra)
            except NetlinkError as e:
                raise _kernel_error(e, f"bridge {name}") from e
        return idx, created

    def clear_alias(self, index: int) -> None:
        with self._lock:
            try:
                self.ipr.link("set", index=index, ifalias="")
            except NetlinkError as e:
                raise _kernel_error(e, "clear alias") from e

    def remove_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        with self._lock:
            try:
                self.ipr.addr("del", index=index, address=str(iface.ip),
                              prefixlen=iface.network.prefixlen)
            except NetlinkError as e:
                if e.code not in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                    raise _kernel_error(e, f"remove address {cidr}") from e

    def delete(self, name: str) -> None:
        """Idempotent delete by name."""
        with self._lock:
            try:
                self.ipr.link("del", ifname=name)
            except NetlinkError as e:
                if e.code not in (errno.ENODEV, errno.ENOENT):
                    raise _kernel_error(e, f"delete {name}") from e

    def ensure_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        kw: dict[str, object] = {"flags": IFA_F_NODAD} if iface.version == 6 else {}
        with self._lock:
            try:
                self.ipr.addr("add", index=index, address=str(iface.ip),
                              prefixlen=iface.network.prefixlen, **kw)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise _kernel_error(e, f"address {cidr}") from e

    def add_veth_into(self, host_name: str, peer_name: str, peer_mac: str, peer_ns_fd: int,
                      master: int | None, mtu: int | None, want_index: bool = False) -> int | None:
        """A veth pair whose peer is born inside the sandbox: moving links costs ~19 ms.

        The host side is a bridge port and needs no IPv6 of its own. Left on, every port adds
        link-local, local and multicast routes to the host's IPv6 FIB, and the kernel walks that
        whole FIB on every link up and down (rt6_sync_down_dev): connect then slows down with
        the number of containers (1.7x at 1,000). So it is created down, IPv6 is switched off
        on it, then it goes up.
        """
        peer: dict[str, object] = {"ifname": peer_name, "net_ns_fd": peer_ns_fd,
                                   "address": peer_mac}
        kw: dict[str, object] = {"ifname": host_name, "kind": "veth", "peer": peer}
        if master is not None:
            kw["master"] = master
        if mtu:
            kw["mtu"] = mtu
            peer["mtu"] = mtu
        with self._lock:
            try:
                self.ipr.link("add", **kw)
                idx = int(self.ipr.link("get", ifname=host_name)[0]["index"])
                _disable_ipv6(host_name)
                self.ipr.link("set", index=idx, state="up")
            except NetlinkError as e:
                raise _kernel_error(e, f"veth {host_name}") from e
        return idx if want_index else None

    def add_macvlan_into(self, name: str, parent: int, mode: str, mac: str, ns_fd: int | None,
                         mtu: int | None, kind: str = "macvlan") -> None:
        """A macvlan (or ipvlan) on ``parent``, born directly inside the sandbox namespace."""
        kw: dict[str, object] = {"ifname": name, "kind": kind, "link": parent}
        if kind == "macvlan":
            kw["macvlan_mode"] = mode
            kw["address"] = mac
        else:
            kw["ipvlan_mode"] = {"l2": 0, "l3": 1, "l3s": 2}[mode]
        if ns_fd is not None:
            kw["net_ns_fd"] = ns_fd
        if mtu:
            kw["mtu"] = mtu
        with self._lock:
            try:
                self.ipr.link("add", **kw)
            except NetlinkError as e:
                raise _link_kind_error(e, kind, name) from e

    def add_vlan(self, name: str, parent: int, vlan_id: int) -> None:
        with self._lock:
            try:
                self.ipr.link("add", ifname=name, kind="vlan", link=parent, vlan_id=vlan_id,
                              state="up")
            except NetlinkError as e:
                raise _link_kind_error(e, "vlan", name) from e

    def add_veth_pair(self, name: str, peer: str, alias: str) -> int:
        """A veth pair left in this namespace: the stand-in parent for parentless macvlans."""
        with self._lock:
            try:
                self.ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer},
                              state="up")
                idx = int(self.ipr.link("get", ifname=name)[0]["index"])
                pidx = int(self.ipr.link("get", ifname=peer)[0]["index"])
                self.ipr.link("set", index=idx, ifalias=alias)
                self.ipr.link("set", index=pidx, state="up", ifalias=alias)
            except NetlinkError as e:
                raise _kernel_error(e, f"veth {name}") from e
        return idx

    def set_up(self, name: str) -> None:
        with self._lock:
            try:
                idx = int(self.ipr.link("get", ifname=name)[0]["index"])
                self.ipr.link("set", index=idx, state="up")
            except NetlinkError as e:
                raise _kernel_error(e, f"up {name}") from e

    def add_route(self, dst: str, ifname: str) -> None:
        with self._lock:
            try:
                idx = int(self.ipr.link("get", ifname=ifname)[0]["index"])
                self.ipr.route("add", dst=dst, oif=idx)
            except NetlinkError as e:
                raise _kernel_error(e, f"route {dst} dev {ifname}") from e

    def ports(self, master: int) -> list[str]:
        """Names of the links enslaved to ``master`` (a dump: reconcile only)."""
        with self._lock:
            msgs = list(self.ipr.get_links())
        return [m.get_attr("IFLA_IFNAME") for m in msgs if m.get_attr("IFLA_MASTER") == master]

    def enslave(self, name: str, master: int) -> bool:
        """Put an existing link back on its bridge; False when the link is gone."""
        with self._lock:
            try:
                idx = int(self.ipr.link("get", ifname=name)[0]["index"])
                self.ipr.link("set", index=idx, master=master, state="up")
            except NetlinkError as e:
                if e.code in (errno.ENODEV, errno.ENOENT):
                    return False
                raise _kernel_error(e, f"enslave {name}") from e
        return True

    def set_isolated(self, index: int, isolated: bool) -> None:
        """Bridge port isolation: the kernel's own no-ICC, without br_netfilter."""
        with self._lock:
            try:
                self.ipr.brport("set", index=index, isolated=1 if isolated else 0)
            except NetlinkError as e:
                raise _kernel_error(e, "bridge port isolation") from e

    def set_hairpin(self, index: int, on: bool) -> None:
        """Hairpin mode on a bridge port, so a container reaches its own published port: the
        DNATed packet goes back out the port it came in by (with br_netfilter on, the bridge
        forwards it rather than the host routing it). Only on publishing endpoints: hairpin
        also reflects floods, so a container would hear its own broadcasts."""
        with self._lock:
            try:
                self.ipr.brport("set", index=index, mode=1 if on else 0)
            except NetlinkError as e:
                raise _kernel_error(e, "bridge port hairpin mode") from e

    def set_down(self, name: str) -> None:
        with self._lock:
            try:
                msgs = self.ipr.link("get", ifname=name)
                self.ipr.link("set", index=msgs[0]["index"], state="down")
            except NetlinkError as e:
                if e.code not in (errno.ENODEV, errno.ENOENT):
                    raise _kernel_error(e, f"down {name}") from e

    def tagged(self, tag_prefix: str) -> Iterator[tuple[str, str]]:
        """(name, alias) of links whose alias carries our tag: a dump, for reconcile only.

        Names alone cannot tell our ``br-<id12>`` from Docker's on a shared host; the alias can.
        """
        with self._lock:
            msgs = list(self.ipr.get_links())
        for m in msgs:
            alias = m.get_attr("IFLA_IFALIAS")
            name = m.get_attr("IFLA_IFNAME")
            if name and alias and alias.startswith(tag_prefix):
                yield name, alias

    # -- inside a sandbox -------------------------------------------------------------------

    def configure_endpoint(self, ifname: str, addresses: list[str], gateway4: str | None,
                           gateway6: str | None) -> None:
        """Addresses, up, and (when given) the default route, on a link in this namespace."""
        with self._lock:
            try:
                idx = int(self.ipr.link("get", ifname=ifname)[0]["index"])
                for cidr in addresses:
                    iface = ipaddress.ip_interface(cidr)
                    kw: dict[str, object] = {}
                    if iface.version == 6:
                        kw["flags"] = IFA_F_NODAD  # usable at once, not after ~1 s of DAD
                    self.ipr.addr("add", index=idx, address=str(iface.ip),
                                  prefixlen=iface.network.prefixlen, **kw)
                self.ipr.link("set", index=idx, state="up")
                if gateway4:
                    self.ipr.route("replace", dst="0.0.0.0/0", gateway=gateway4, oif=idx)
                if gateway6:
                    self.ipr.route("replace", dst="::/0", gateway=gateway6, oif=idx, family=10)
            except NetlinkError as e:
                raise _kernel_error(e, f"configure {ifname}") from e

    def set_default_route(self, ifname: str, gateway: str, family: int = 4) -> None:
        with self._lock:
            try:
                idx = int(self.ipr.link("get", ifname=ifname)[0]["index"])
                if family == 6:
                    self.ipr.route("replace", dst="::/0", gateway=gateway, oif=idx, family=10)
                else:
                    self.ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=idx)
            except NetlinkError as e:
                raise _kernel_error(e, f"default route via {gateway}") from e

    def loopback_up(self) -> None:
        with self._lock:
            self.ipr.link("set", index=1, state="up")

    def routes_v4(self) -> list[ipaddress.IPv4Network]:
        """Host routes, so IPAM can skip pools that overlap them (Docker does the same)."""
        out: list[ipaddress.IPv4Network] = []
        with self._lock:
            msgs = list(self.ipr.get_routes(family=2, table=254))
        for r in msgs:
            dst = r.get_attr("RTA_DST")
            if dst is None:
                continue
            try:
                out.append(ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False))
            except ValueError:
                continue
        return out


class LinkReaper:
    """Deletes veths off the request path: a veth delete waits ~15 ms for RCU in the kernel.

    A disconnect first takes the link down (instant), then hands the delete here. A crash before
    the delete is healed by reconcile, which removes nsnet-named links no endpoint owns.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nsnet-reaper")
        self._links = Links(IPRoute())

    def delete_later(self, name: str, done: Callable[[], None] | None = None) -> None:
        """``done`` runs in the reaper thread once the link is gone (or failed to go)."""
        fut = self._pool.submit(self._links.delete, name)
        if done is not None:
            fut.add_done_callback(lambda _f: done())

    def flush(self) -> None:
        """Wait for every queued delete (before re-creating a link of the same name)."""
        self._pool.submit(lambda: None).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._links.close()
