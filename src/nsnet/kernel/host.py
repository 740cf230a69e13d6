"""Everything the drivers need of the daemon's own ("host") namespace, opened once at start."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import IPRoute

from nsnet.kernel.firewall import Firewall
from nsnet.kernel.links import LinkReaper, Links
from nsnet.kernel.netns import NamespaceThread
from nsnet.kernel.routes import RouteWatcher


class HostKernel:
    def __init__(self, exec_root: Path) -> None:
        self.links = Links(IPRoute())
        self.ns = NamespaceThread()
        self.firewall = Firewall()
        self.reaper = LinkReaper()
        self.routes = RouteWatcher()
        # Sandbox -> container-side names whose pair is queued for deletion.
        self._dying: dict[str, set[str]] = {}
        self._dying_lock = threading.Lock()
        self.netns_dir = exec_root / "netns"
        self.netns_dir.mkdir(parents=True, exist_ok=True)

    def delete_peer_later(self, host_ifname: str, ns_path: str | None, ifname: str) -> None:
        """Delete a veth off the request path; until it is gone, ``ifname`` stays taken in
        its sandbox so a quick reconnect picks another name instead of waiting (or failing)."""
        if ns_path:
            with self._dying_lock:
                self._dying.setdefault(ns_path, set()).add(ifname)

        def gone() -> None:
            if ns_path:
                with self._dying_lock:
                    names = self._dying.get(ns_path)
                    if names is not None:
                        names.discard(ifname)
                        if not names:
                            self._dying.pop(ns_path, None)

        self.reaper.delete_later(host_ifname, gone)

    def dying_names(self, ns_path: str) -> set[str]:
        with self._dying_lock:
            return set(self._dying.get(ns_path, ()))

    def wait_for_name(self, ns_path: str, ifname: str) -> None:
        """Backstop before re-using ``ifname``: let a pending delete of it finish."""
        if ifname in self.dying_names(ns_path):
            self.reaper.flush()

    def close(self) -> None:
        self.routes.close()
        self.reaper.close()
        self.firewall.close()
        self.ns.close()
        self.links.close()

    @contextmanager
    def sandbox_links(self, ns_path: str) -> Iterator[Links]:
        """A netlink socket inside a sandbox for the duration of one operation."""
        links = Links(self.ns.iproute(ns_path))
        try:
            yield links
        finally:
            links.close()


def sysctl_set(key: str, value: str) -> None:
    """Write a sysctl of the daemon's namespace (``/proc/sys`` follows the opener's netns)."""
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path, "w") as f:
        f.write(value)


def sysctl_get(key: str) -> str:
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        return f.read().strip()


@contextmanager
def open_ns_fd(ns_path: str) -> Iterator[int]:
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)
