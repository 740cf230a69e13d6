"""The host's IPv4 routes, kept current from netlink events instead of dumped per request.

Docker skips default pools that overlap host routes. A route dump through pyroute2 costs ~5 ms
with a few dozen routes and grows with every network; a subscription costs one dump at start and
one small event per change.

Route events alone do not tell the whole story: when a link goes down or is deleted, the kernel
flushes the IPv4 routes through it *without* sending ``RTM_DELROUTE`` (checked on 6.18 with
``ip monitor route``: the bridge's connected route leaves silently). A watcher that only listened
to route events kept every removed network's subnet "reserved" as a host route, and the default
pools ran out after ~30 create/rm cycles. So the watcher also listens to link events and drops
the routes whose every next hop was on the link that went down or away, as the kernel does.

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
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_LINK,
)

log = logging.getLogger(__name__)

MAIN_TABLE = 254
IFF_UP = 0x1
NLM_F_REPLACE = 0x100
# Link events are many (every veth of every container, up and down): a roomy buffer keeps a
# burst from overflowing it; an overflow is healed by a fresh dump anyway.
RCVBUF = 4 * 1024 * 1024


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
        self._events.bind(groups=RTMGRP_IPV4_ROUTE | RTMGRP_LINK)
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
        if kind == RTM_DELLINK or (kind == RTM_NEWLINK and
                                   not int(m["flags"]) & IFF_UP):  # type: ignore[index]
            self._table.link_down(int(m["index"]))  # type: ignore[index]
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
