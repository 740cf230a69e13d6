"""Everything the drivers need of the daemon's own ("host") namespace, opened once at start.

``HostKernel`` is the real implementation of ``nsnet.kernel.api.Kernel``; callers above the
kernel type against the protocol, so a test can hand them ``testing.fake_kernel.FakeKernel``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pyroute2 import IPRoute

from nsnet.errors import Invalid
from nsnet.kernel.announce import Announcer
from nsnet.kernel.dying import DyingNames
from nsnet.kernel.firewall import Firewall
from nsnet.kernel.links import LinkReaper, Links
from nsnet.kernel.netns import NamespaceThread
from nsnet.kernel.overlays import HostOverlays
from nsnet.kernel.port_firewall import PortFirewall
from nsnet.kernel.routes import RouteWatcher

if TYPE_CHECKING:
    from nsnet.kernel.api import Kernel


class HostKernel:
    def __init__(self, exec_root: Path) -> None:
        self.links = Links(IPRoute())
        self.ns = NamespaceThread()
        self.firewall = Firewall()
        # Writes nothing until the first port is published (PortFirewall.ensure_base).
        self.ports = PortFirewall(families=(4, 6))
        self.reaper = LinkReaper()
        self.routes = RouteWatcher()
        self.announcer = Announcer()
        self._dying = DyingNames()
        self.netns_dir = exec_root / "netns"
        self.netns_dir.mkdir(parents=True, exist_ok=True)
        # Overlay namespaces live apart from sandboxes', out of the sandbox reconcile's reach.
        self.overlays = HostOverlays(self.ns, self.links.ipr, exec_root / "overlay")

    def delete_peer_later(self, host_ifname: str, ns_path: str | None, ifname: str) -> None:
        """Delete a veth off the request path; until it is gone, ``ifname`` stays taken in
        its sandbox so a quick reconnect picks another name instead of waiting (or failing)."""
        if not ns_path:
            self.reaper.delete_later(host_ifname)
            return
        self._dying.add(ns_path, ifname)
        self.reaper.delete_later(host_ifname, lambda: self._dying.discard(ns_path, ifname))

    def netns_fd(self, ns_path: str) -> AbstractContextManager[int]:
        return open_ns_fd(ns_path)

    def sysctl_set(self, key: str, value: str) -> None:
        sysctl_set(key, value)

    def dying_names(self, ns_path: str) -> set[str]:
        return self._dying.of(ns_path)

    def wait_for_name(self, ns_path: str, ifname: str) -> None:
        """Backstop before re-using ``ifname``: let a pending delete of it finish."""
        if ifname in self.dying_names(ns_path):
            self.reaper.flush()

    def close(self) -> None:
        self.overlays.close()
        self.announcer.close()
        self.routes.close()
        self.reaper.close()
        self.firewall.close()
        self.ports.close()
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

    def prepare_interface(self, ns_path: str, ifname: str, ipv6: bool) -> socket.socket:
        """One hop into the sandbox while its new interface is still down.

        Without ``ipv6`` the interface's IPv6 is switched off before it ever comes up, so no
        ``fe80::`` appears (Docker 26+ does the same): with one, glibc sorts a round-robin
        name's answers by RFC 6724 and every client picks the same replica. ``lo`` keeps
        ``::1``. Returns the packet socket that will announce the interface once it is up
        (see ``Announcer``). /proc/sys/net is the opener's namespace's, so the sysctl is
        written by the namespace thread; the socket works from any thread afterwards.
        """
        if not ifname or "/" in ifname or ifname in (".", ".."):
            raise Invalid(f"invalid interface name {ifname!r}")

        def job() -> socket.socket:
            if not ipv6:
                try:
                    with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
                        f.write("1")
                except FileNotFoundError:
                    pass  # a kernel without IPv6: nothing to switch off
            return socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)

        return self.ns.call_in(ns_path, job)


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


def _is_a_kernel(k: HostKernel) -> Kernel:
    """Never called: mypy checks here that HostKernel implements the protocol."""
    return k
