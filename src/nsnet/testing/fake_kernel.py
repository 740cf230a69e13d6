"""An in-memory kernel for engine and driver tests without root.

``FakeKernel`` implements ``nsnet.kernel.api.Kernel``: namespaces, links (with masters, peers,
addresses, aliases), routes, the host firewall's networks, the sandboxes' resolver tables. It
behaves like the kernel where callers depend on it: names are unique per namespace, deleting one
end of a veth deletes the other, removing a namespace takes its links along, deleting a parent
takes its macvlans along, and a missing link is an error where netlink says ENODEV.

Two things make it a test double rather than a model:

- ``fail_on("add_veth_into")`` makes the next call of that name raise (after ``after`` calls
  succeed), to drive a use-case into its undo path;
- ``objects()`` lists what exists, so a test can assert that a failed create left nothing:
  ``before = fake.objects(); ...; assert fake.objects() == before``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from nsnet.errors import Invalid, NsnetError
from nsnet.kernel.dying import DyingNames
from nsnet.kernel.firewall import NetworkFirewall
from nsnet.kernel.port_firewall import FakePortRules
from nsnet.testing.fake_links import HOST, FakeLink, FakeLinks, KernelState
from nsnet.testing.fake_overlays import FakeOverlays

if TYPE_CHECKING:
    from nsnet.kernel.api import Kernel

T = TypeVar("T")

__all__ = ["HOST", "FakeKernel", "FakeLink", "FakeLinks", "KernelObjects"]


@dataclass(frozen=True)
class KernelObjects:
    """Everything that exists, as comparable sets (see ``FakeKernel.objects``)."""

    namespaces: frozenset[str]
    links: frozenset[tuple[str, str]]  # (namespace, name); the host is ``HOST``
    addresses: frozenset[tuple[str, str, str]]  # (namespace, link, cidr)
    routes: frozenset[tuple[str, str, str]]  # (namespace, destination, link)
    firewall_networks: frozenset[str]  # short ids with chains in ``inet nsnet``
    forward_accepts: frozenset[str]  # short ids with accepts in a foreign FORWARD chain
    sandbox_tables: frozenset[str]  # namespaces with a resolver table


class FakeNamespaces:
    def __init__(self, k: FakeKernel) -> None:
        self._k = k

    def create(self, ns_path: str) -> None:
        self._k.state.hit("create")
        with self._k.state.lock:
            if ns_path in self._k.state.namespaces:
                # A second bind mount hides the first namespace: the path names a new one.
                self._k.state.drop_namespace(ns_path)
            self._k.state.add_namespace(ns_path)
        self._k.pin(ns_path, True)

    def remove(self, ns_path: str) -> None:
        self._k.state.hit("remove")
        with self._k.state.lock:
            self._k.state.drop_namespace(ns_path)
            self._k.firewall.sandbox_tables.pop(ns_path, None)
        self._k.pin(ns_path, False)

    def call_in(self, ns_path: str, fn: Callable[[], T]) -> T:
        """Runs ``fn`` here: the fake has no namespace to enter, only one to check."""
        self._k.state.hit("call_in")
        self._k.state.require_namespace(ns_path)
        return fn()


class FakeForeign:
    def __init__(self) -> None:
        self.accepts: set[str] = set()

    def remove_unowned(self, known: set[str]) -> list[str]:
        gone = sorted(self.accepts - known)
        self.accepts -= set(gone)
        return gone


class FakeFirewall:
    def __init__(self, state: KernelState) -> None:
        self._state = state
        self.base = False
        self.networks: dict[str, NetworkFirewall] = {}
        self.sandbox_tables: dict[str, str] = {}
        self.foreign = FakeForeign()

    def ensure_base(self) -> None:
        self._state.hit("ensure_base")
        self.base = True

    def apply_network(self, n: NetworkFirewall) -> None:
        self._state.hit("apply_network")
        self.base = True
        self.networks[n.short_id] = n
        self.foreign.accepts.add(n.short_id)

    def remove_network(self, short_id: str, bridge: str, subnets: tuple[str, ...]) -> None:
        self._state.hit("remove_network")
        self.networks.pop(short_id, None)
        self.foreign.accepts.discard(short_id)

    def remove_stale(self, short_id: str) -> None:
        self._state.hit("remove_stale")
        self.networks.pop(short_id, None)
        self.foreign.accepts.discard(short_id)

    def network_chains(self) -> set[str]:
        return set(self.networks)

    def run_in_namespace(self, ns_path: str, commands: str) -> None:
        self._state.hit("run_in_namespace")
        self._state.require_namespace(ns_path)
        self.sandbox_tables[ns_path] = commands


class FakeReaper:
    """Deletes at once, or (``deferred``) when flushed, as the real one's thread would."""

    def __init__(self, links: FakeLinks, deferred: bool) -> None:
        self._links = links
        self._deferred = deferred
        self.queue: list[tuple[str, Callable[[], None] | None]] = []

    def delete_later(self, name: str, done: Callable[[], None] | None = None) -> None:
        self.queue.append((name, done))
        if not self._deferred:
            self.flush()

    def flush(self) -> None:
        while self.queue:
            name, done = self.queue.pop(0)
            with contextlib.suppress(NsnetError):
                self._links.delete(name)
            if done is not None:
                done()


class FakeRoutes:
    def __init__(self) -> None:
        self.host_networks: list[ipaddress.IPv4Network] = []

    def networks(self) -> list[ipaddress.IPv4Network]:
        return list(self.host_networks)


class FakeAnnouncer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str]]] = []

    def announce(self, sock: socket.socket, ifname: str, addresses: Iterable[str]) -> None:
        sock.close()  # the real announcer owns the socket from here
        self.sent.append((ifname, list(addresses)))


class FakeKernel:
    """See the module docstring. ``netns_dir`` is a real directory (under ``exec_root``, or a
    private temporary one) holding one file per namespace made there, for code that lists
    it; ``deferred_deletes`` keeps the reaper's queue until ``reaper.flush()``."""

    def __init__(self, exec_root: Path | None = None, deferred_deletes: bool = False) -> None:
        self.state = KernelState()
        self.links = FakeLinks(self.state, HOST)
        self.ns = FakeNamespaces(self)
        self.firewall = FakeFirewall(self.state)
        self.ports = FakePortRules()
        self.reaper = FakeReaper(self.links, deferred_deletes)
        self.routes = FakeRoutes()
        self.announcer = FakeAnnouncer()
        self.sysctls: dict[str, str] = {}
        self._dying = DyingNames()
        # Without an exec root, a private directory that goes with the fake (GC or close).
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if exec_root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="nsnet-fake-")
            exec_root = Path(self._tmp.name)
        self.netns_dir = exec_root / "netns"
        self.netns_dir.mkdir(parents=True, exist_ok=True)
        self.overlays = FakeOverlays(self, exec_root / "overlay")
        self._next_fd = itertools.count(10_000)
        self.closed = False

    # -- test controls ----------------------------------------------------------------------

    def fail_on(self, call: str, error: Exception | None = None, after: int = 0) -> None:
        """Make call ``after + 1`` of ``call`` (a method name) raise ``error`` (default
        ``SystemError_``), once. Unknown names are refused: a typo would test nothing."""
        self.state.fail_on(call, error, after)

    @property
    def calls(self) -> list[str]:
        """Names of the kernel calls made so far, in order."""
        return list(self.state.calls)

    def objects(self) -> KernelObjects:
        s = self.state
        with s.lock:
            return KernelObjects(
                namespaces=frozenset(s.namespaces),
                links=frozenset((ln.ns, ln.name) for ln in s.all_links()),
                addresses=frozenset((ln.ns, ln.name, a) for ln in s.all_links()
                                    for a in ln.addresses),
                routes=frozenset((ns, dst, ifname) for ns, table in s.routes.items()
                                 for dst, (ifname, _gw) in table.items()),
                firewall_networks=frozenset(self.firewall.networks),
                forward_accepts=frozenset(self.firewall.foreign.accepts),
                sandbox_tables=frozenset(self.firewall.sandbox_tables),
            )

    def link(self, name: str, ns: str = HOST) -> FakeLink | None:
        """The link as the fake holds it, for assertions."""
        return self.state.get(ns, name)

    def add_host_link(self, name: str, kind: str = "veth") -> int:
        """A link the test's "host" has before nsnet starts (a parent for macvlan)."""
        return self.state.add_link(FakeLink(name=name, kind=kind, ns=HOST, up=True)).index

    def pin(self, ns_path: str, present: bool) -> None:
        """Mirror a namespace as a file under ``netns_dir``, for code that lists it."""
        if Path(ns_path).parent != self.netns_dir:
            return
        if present:
            Path(ns_path).touch()
        else:
            Path(ns_path).unlink(missing_ok=True)

    # -- the Kernel protocol ----------------------------------------------------------------

    @contextlib.contextmanager
    def sandbox_links(self, ns_path: str) -> Iterator[FakeLinks]:
        self.state.hit("sandbox_links")
        self.state.require_namespace(ns_path)
        yield FakeLinks(self.state, ns_path)

    @contextlib.contextmanager
    def netns_fd(self, ns_path: str) -> Iterator[int]:
        """A number standing for the namespace, valid for the block (as a real fd)."""
        self.state.require_namespace(ns_path)
        with self.state.lock:
            fd = next(self._next_fd)
            self.state.fd_namespaces[fd] = ns_path
        try:
            yield fd
        finally:
            with self.state.lock:
                self.state.fd_namespaces.pop(fd, None)

    def prepare_interface(self, ns_path: str, ifname: str, ipv6: bool) -> socket.socket:
        self.state.hit("prepare_interface")
        if not ifname or "/" in ifname or ifname in (".", ".."):
            raise Invalid(f"invalid interface name {ifname!r}")
        link = self.state.get(ns_path, ifname)
        if link is not None:
            link.ipv6 = ipv6
        return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def sysctl_set(self, key: str, value: str) -> None:
        self.state.hit("sysctl_set")
        self.sysctls[key] = value

    def delete_peer_later(self, host_ifname: str, ns_path: str | None, ifname: str) -> None:
        if not ns_path:
            self.reaper.delete_later(host_ifname)
            return
        self._dying.add(ns_path, ifname)
        self.reaper.delete_later(host_ifname, lambda: self._dying.discard(ns_path, ifname))

    def dying_names(self, ns_path: str) -> set[str]:
        return self._dying.of(ns_path)

    def wait_for_name(self, ns_path: str, ifname: str) -> None:
        if ifname in self.dying_names(ns_path):
            self.reaper.flush()

    def close(self) -> None:
        self.closed = True
        if self._tmp is not None:
            self._tmp.cleanup()


def _is_a_kernel(k: FakeKernel) -> Kernel:
    """Never called: mypy checks here that the fake implements the protocol."""
    return k

