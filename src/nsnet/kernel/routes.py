"""The host's IPv4 routes, kept current from netlink events instead of dumped per request.

Docker skips default pools that overlap host routes. A route dump through pyroute2 costs ~5 ms
with a few dozen routes and grows with every network; a subscription costs one dump at start and
one small event per change.
"""

from __future__ import annotations

import ipaddress
import threading

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE, RTMGRP_IPV4_ROUTE

MAIN_TABLE = 254


def _key(msg: object) -> tuple[str, int] | None:
    get = getattr(msg, "get_attr", None)
    if get is None:
        return None
    table = get("RTA_TABLE") or msg["table"]  # type: ignore[index]
    if table != MAIN_TABLE:
        return None
    dst = get("RTA_DST")
    if dst is None:
        return None
    return str(dst), int(msg["dst_len"])  # type: ignore[index]


class RouteWatcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: set[tuple[str, int]] = set()
        self._events = IPRoute()
        self._events.bind(groups=RTMGRP_IPV4_ROUTE)
        self._stop = False
        # Subscribe first, then dump: an event racing the dump is applied after it.
        with IPRoute() as ipr:
            for m in ipr.get_routes(family=2, table=MAIN_TABLE):
                k = _key(m)
                if k:
                    self._routes.add(k)
        self._thread = threading.Thread(target=self._run, name="nsnet-routes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                msgs = self._events.get()
            except Exception:  # noqa: BLE001 - socket closed at shutdown
                return
            with self._lock:
                for m in msgs:
                    k = _key(m)
                    if k is None:
                        continue
                    if m["header"]["type"] == RTM_NEWROUTE:
                        self._routes.add(k)
                    elif m["header"]["type"] == RTM_DELROUTE:
                        self._routes.discard(k)

    def networks(self) -> list[ipaddress.IPv4Network]:
        with self._lock:
            keys = list(self._routes)
        out = []
        for dst, plen in keys:
            try:
                out.append(ipaddress.IPv4Network(f"{dst}/{plen}", strict=False))
            except ValueError:
                continue
        return out

    def close(self) -> None:
        self._stop = True
        try:
            self._events.close()
        except Exception:  # noqa: BLE001
            pass
