"""The host's IPv4 routes, kept current from netlink events instead of dumped per request.

Docker skips default pools that overlap host routes. A route dump through pyroute2 costs ~5 ms
with a few dozen routes and grows with every network; a subscription costs one dump at start and
one small event per change.

Route events alone do not tell the whole story: when a link is deleted, the kernel flushes the
IPv4 routes through it *without* sending ``RTM_DELROUTE`` (checked on 6.18 with ``ip monitor
route``: the bridge's connected route leaves silently). A watcher that only listened to route
events kept every removed network's subnet "reserved" as a host route, and the default pools ran
out after ~30 create/rm cycles. The deletion does announce the link's IPv4 addresses going
(``RTM_DELADDR``), so the watcher also listens to IPv4 address events and drops the connected
route of every address that goes.

Why addresses and not link events: link events are many (every veth of every container, several
per connect), pyroute2 decodes each one in Python (~0.5 ms for a full RTM_NEWLINK), and this
thread's decoding competed with the event loop for the GIL: connect went from 6 ms to 10 ms and
network rm from 1 ms to 4 ms. IPv4 addresses in the host namespace change only with bridges
(host-side veths carry none), so address events cost nothing on the container paths. A link
set down without being deleted keeps its subnet reserved until it comes back, which errs on the
safe side.

``RouteTable`` is the bookkeeping, pure and tested without root; ``RouteWatcher`` feeds it.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELROUTE,
    RTM_NEWROUTE,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
)

log = logging.getLogger(__name__)

MAIN_TABLE = 254
AF_INET = 2
NLM_F_REPLACE = 0x100
# A burst of network creates or removals must not overflow the buffer; an overflow is healed by
# a fresh dump anyway.
RCVBUF = 1024 * 1024


@dataclass(frozen=True)
class Route:
    """What identifies an IPv4 route in one table, plus the links its next hops leave by.

    ``oifs`` is empty for routes without a device (blackhole, unreachable, prohibit): the kernel
    never flushes those with a link.
    """

    dst: str
    plen: int
    tos: int = 0
    priority: int = 0
    oifs: frozenset[int] = frozenset()

    @property
    def slot(self) -> tuple[str, int, int, int]:
        """The kernel's identity of a route for ``replace``: prefix, TOS and metric."""
        return self.dst, self.plen, self.tos, self.priority


class RouteTable:
    """The main table as the kernel keeps it, from a dump and the events that follow.

    Not thread-safe: the watcher holds a lock around it.
    """

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._routes: set[Route] = set(routes)

    def add(self, route: Route, replace: bool = False) -> None:
        """``replace``: the event carried NLM_F_REPLACE, and the route it replaced in the same
        slot goes without an event of its own."""
        if replace:
            self._routes = {r for r in self._routes if r.slot != route.slot}
        self._routes.add(route)

    def delete(self, route: Route) -> None:
        if route in self._routes:
            self._routes.discard(route)
            return
        # A delete that names the slot but not the next hops exactly: the route is gone anyway.
        same = [r for r in self._routes if r.slot == route.slot]
        if len(same) == 1:
            self._routes.discard(same[0])

    def address_gone(self, index: int, network: ipaddress.IPv4Network) -> None:
        """An IPv4 address left link ``index`` (deleted, or its link deleted): the kernel
        dropped its connected route silently."""
        self._routes = {r for r in self._routes
                        if not (r.oifs == {index} and r.plen == network.prefixlen
                                and _network_of(r) == network)}

    def link_down(self, index: int) -> None:
        """A link went down or away: the kernel flushed every route whose next hops all used
        it (a multipath route keeps its other hops), and said nothing."""
        self._routes = {r for r in self._routes if not r.oifs or r.oifs != {index}}

    def networks(self) -> list[ipaddress.IPv4Network]:
        out = []
        for r in self._routes:
            try:
                out.append(ipaddress.IPv4Network(f"{r.dst}/{r.plen}", strict=False))
            except ValueError:
                continue
        return out

    def __len__(self) -> int:
        return len(self._routes)


def _network_of(r: Route) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(f"{r.dst}/{r.plen}", strict=False)
    except ValueError:
        return None


def route_of(msg: object) -> Route | None:
    """A pyroute2 route message as a ``Route``; None for other tables and default routes."""
    get = getattr(msg, "get_attr", None)
    if get is None:
        return None
    table = get("RTA_TABLE") or msg["table"]  # type: ignore[index]
    if table != MAIN_TABLE:
        return None
    dst = get("RTA_DST")
    if dst is None:
        return None
    oifs: set[int] = set()
    oif = get("RTA_OIF")
    if oif:
        oifs.add(int(oif))
    for hop in get("RTA_MULTIPATH") or ():
        if hop.get("oif"):
            oifs.add(int(hop["oif"]))
    return Route(dst=str(dst), plen=int(msg["dst_len"]),  # type: ignore[index]
                 tos=int(msg["tos"] or 0),  # type: ignore[index]
                 priority=int(get("RTA_PRIORITY") or 0), oifs=frozenset(oifs))


def address_of(msg: object) -> tuple[int, ipaddress.IPv4Network] | None:
    """An IPv4 address message as (link index, connected network); None for IPv6."""
    get = getattr(msg, "get_attr", None)
    if get is None or msg["family"] != AF_INET:  # type: ignore[index]
        return None
    addr = get("IFA_ADDRESS") or get("IFA_LOCAL")
    if addr is None:
        return None
    try:
        net = ipaddress.IPv4Network(f"{addr}/{msg['prefixlen']}", strict=False)  # type: ignore[index]
    except ValueError:
        return None
    return int(msg["index"]), net  # type: ignore[index]


def _dump(ipr: IPRoute) -> RouteTable:
    table = RouteTable()
    for m in ipr.get_routes(family=2, table=MAIN_TABLE):
        r = route_of(m)
        if r is not None:
            table.add(r)
    return table


class RouteWatcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events = IPRoute(rcvbuf=RCVBUF)
        self._events.bind(groups=RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_IFADDR)
        self._stop = False
        # Subscribe first, then dump: an event racing the dump is applied after it.
        self._table = self._resync()
        self._thread = threading.Thread(target=self._run, name="nsnet-routes", daemon=True)
        self._thread.start()

    @staticmethod
    def _resync() -> RouteTable:
        with IPRoute() as ipr:
            return _dump(ipr)

    def _run(self) -> None:
        while not self._stop:
            try:
                msgs = self._events.get()
            except Exception:  # closed at shutdown, or events lost (ENOBUFS)
                if self._stop:
                    return
                log.warning("route events lost: reading the routes again", exc_info=True)
                time.sleep(0.05)  # bounded, should the socket keep failing
                try:
                    table = self._resync()
                except Exception:
                    log.exception("re-reading host routes")
                    continue
                with self._lock:
                    self._table = table
                continue
            with self._lock:
                for m in msgs:
                    self._apply(m)

    def _apply(self, m: object) -> None:
        kind = m["header"]["type"]  # type: ignore[index]
        if kind == RTM_DELADDR:
            gone = address_of(m)
            if gone is not None:
                self._table.address_gone(*gone)
            return
        if kind not in (RTM_NEWROUTE, RTM_DELROUTE):
            return
        r = route_of(m)
        if r is None:
            return
        if kind == RTM_NEWROUTE:
            self._table.add(r, replace=bool(m["header"]["flags"] & NLM_F_REPLACE))  # type: ignore[index]
        else:
            self._table.delete(r)

    def networks(self) -> list[ipaddress.IPv4Network]:
        with self._lock:
            return self._table.networks()

    def close(self) -> None:
        self._stop = True
        try:
            self._events.close()
        except Exception:  # noqa: BLE001
            pass
