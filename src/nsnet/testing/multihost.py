"""Several simulated hosts on one machine, for overlay tests (issue 10's lab).

The machine's own network is never touched. The lab is made of throwaway namespaces only:

```
            switch namespace: bridge sw0 (no address), one veth port per member
             /            |             \\
     h1: eth0         h2: eth0  ...    etcd: eth0 (optional)
     192.0.2.11/24    192.0.2.12/24    192.0.2.2, .3, .4 (one per etcd member)
```

The etcd members (``nsnet.testing.etcd.etcd_cluster``) run in their own namespace, one address
each, so a test can kill one member or all of them while every host keeps its underlay.

Each host is a network namespace with one underlay interface ``eth0`` (MTU 1500) on TEST-NET-1;
the switch is a plain Linux bridge, so hosts reach each other with unicast exactly as machines on
one segment would. Each host may run its own nsnetd (``nsnet.testing.hosts.Daemon``: own data
root, exec root and socket under the lab's temporary directory). Extra daemon arguments (the
cluster flags, once the daemon has them) are passed through unchanged.

Teardown removes everything even after a failed test (daemons stopped, runc containers, mounts
and cgroups under the lab root, every namespace) and then runs the same leak check as
``daemon_host``; a leak fails the test that caused it.

Cost: ~10 ``ip`` forks per host (~50 ms), plus ~1 s per daemon (started in parallel).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nsnet.kernel.host import open_ns_fd
from nsnet.kernel.links import Links, random_mac, random_veth_name
from nsnet.kernel.netns import NamespaceThread
from nsnet.kernel.vxlan import (
    OverlayNetwork,
    Peer,
    create_overlay,
    remove_overlay,
)
from nsnet.testing.etcd import EtcdCluster, etcd_cluster
from nsnet.testing.hosts import Daemon, TestHost, _force_cleanup, sh
from nsnet.testing.leaks import LeakSnapshot, cgroups_of, check_leaks, mounts_under

UNDERLAY_PREFIX = 24
UNDERLAY_MTU = 1500
SWITCH_BRIDGE = "sw0"
UNDERLAY_IFNAME = "eth0"
FIRST_HOST = 11  # h1 is 192.0.2.11
ETCD_FIRST = 2  # etcd members are 192.0.2.2, .3, .4
MAX_HOSTS = 200  # .11 .. .210 stay inside 192.0.2.0/24


def host_address(index: int) -> str:
    """Underlay address of host ``index`` (0-based)."""
    return f"192.0.2.{FIRST_HOST + index}"


def etcd_address(member: int) -> str:
    return f"192.0.2.{ETCD_FIRST + member}"


@dataclass
class LabHost:
    """One simulated machine: a namespace with ``eth0`` on the underlay, maybe a daemon."""

    label: str  # h1, h2, ...
    ns: TestHost
    address: str
    daemon: Daemon | None = None

    @property
    def path(self) -> str:
        return self.ns.path

    def root(self, lab_root: Path) -> Path:
        """This host's private directory (data root, exec root, overlay namespaces)."""
        return lab_root / self.label


@dataclass
class Lab:
    root: Path
    switch: TestHost
    hosts: list[LabHost]
    etcd_ns: TestHost | None = None
    etcd_addresses: list[str] = field(default_factory=list)
    etcd: EtcdCluster | None = None
    extra: list[TestHost] = field(default_factory=list)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def namespace(self, label: str) -> TestHost:
        """A bare namespace (a "container" for data-plane tests) removed and leak-checked
        with the lab."""
        ns = TestHost.create(f"nsml{label}"[:12])
        self.extra.append(ns)
        return ns

    def ping(self, src: LabHost, dst: LabHost, count: int = 1) -> bool:
        p = sh("ping", "-c", str(count), "-W", "1", "-i", "0.2", dst.address, ns=src.ns.name,
               check=False)
        return p.returncode == 0

    def all_namespaces(self) -> list[TestHost]:
        out = [self.switch, *[h.ns for h in self.hosts], *self.extra]
        if self.etcd_ns is not None:
            out.append(self.etcd_ns)
        return out


def _join_switch(switch: TestHost, ns: TestHost, port: str, addresses: Sequence[str]) -> None:
    """A veth from the switch's bridge to ``eth0`` of ``ns``; the peer is born in ``ns``."""
    sh("ip", "-n", switch.name, "link", "add", port, "mtu", str(UNDERLAY_MTU), "type", "veth",
       "peer", "name", UNDERLAY_IFNAME, "netns", ns.name)
    sh("ip", "-n", switch.name, "link", "set", port, "master", SWITCH_BRIDGE, "up")
    for a in addresses:
        sh("ip", "-n", ns.name, "addr", "add", f"{a}/{UNDERLAY_PREFIX}", "dev", UNDERLAY_IFNAME)
    sh("ip", "-n", ns.name, "link", "set", UNDERLAY_IFNAME, "up")


def _make_switch() -> TestHost:
    switch = TestHost.create("nsmlsw")
    # The switch forwards frames and has no address: no IPv6 chatter from its own ports.
    sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=switch.name)
    sh("ip", "-n", switch.name, "link", "add", SWITCH_BRIDGE, "type", "bridge")
    sh("ip", "-n", switch.name, "link", "set", SWITCH_BRIDGE, "up")
    return switch


def _start_daemons(lab: Lab, daemon_args: Sequence[str]) -> None:
    for h in lab.hosts:
        root = h.root(lab.root)
        root.mkdir(parents=True, exist_ok=True)
        resolv = root / "resolv.conf"
        resolv.write_text("nameserver 192.0.2.53\nsearch example.test\n")
        h.daemon = Daemon(host=h.ns, root=root, resolv_conf=resolv,
                          extra_args=list(daemon_args))
    with ThreadPoolExecutor(max_workers=len(lab.hosts)) as pool:
        for f in [pool.submit(h.daemon.start) for h in lab.hosts if h.daemon]:
            f.result()


def _teardown(lab: Lab) -> None:
    try:
        try:
            _stop_daemons(lab)
        finally:
            lab._stack.close()  # etcd members: killed, their data removed, leak-checked
    finally:
        # Overlay namespaces pinned by data-plane tests under a host's directory.
        for m in sorted(mounts_under(str(lab.root)), key=len, reverse=True):
            sh("umount", "-l", m, check=False)
        for ns in lab.all_namespaces():
            ns.destroy()


def _stop_daemons(lab: Lab) -> None:
    for h in lab.hosts:
        d = h.daemon
        if d is None:
            continue
        try:
            if d.proc is not None:
                with contextlib.suppress(Exception):
                    d.remove_everything()
                d.stop()
        finally:
            _force_cleanup(d)


@contextlib.contextmanager
def lab(n_hosts: int, *, daemons: bool = True, daemon_args: Sequence[str] = (),
        etcd_members: int = 0) -> Iterator[Lab]:
    """``n_hosts`` hosts on one underlay switch, optionally an etcd cluster of
    ``etcd_members`` in a namespace of its own (192.0.2.2 upwards, ports 2379/2380; its URL
    for ``--cluster-store`` is ``lab.etcd.url``) and one nsnetd per host."""
    if not 1 <= n_hosts <= MAX_HOSTS:
        raise ValueError(f"n_hosts must be 1..{MAX_HOSTS}")
    if not 0 <= etcd_members <= FIRST_HOST - ETCD_FIRST:
        raise ValueError("at most 9 etcd members fit below the hosts' addresses")
    before = LeakSnapshot.take()
    root = Path(tempfile.mkdtemp(prefix="nsnet-lab-"))
    the_lab = Lab(root=root, switch=_make_switch(), hosts=[])
    failed = True
    try:
        for i in range(n_hosts):
            h = LabHost(label=f"h{i + 1}", ns=TestHost.create(f"nsmlh{i + 1}"),
                        address=host_address(i))
            the_lab.hosts.append(h)
            _join_switch(the_lab.switch, h.ns, f"p{i + 1}", [h.address])
        if etcd_members:
            the_lab.etcd_ns = TestHost.create("nsmletcd")
            the_lab.etcd_addresses = [etcd_address(m) for m in range(etcd_members)]
            _join_switch(the_lab.switch, the_lab.etcd_ns, "pe", the_lab.etcd_addresses)
            the_lab.etcd = the_lab._stack.enter_context(etcd_cluster(
                etcd_members, hosts=the_lab.etcd_addresses,
                netns=[the_lab.etcd_ns.name] * etcd_members))
        if daemons:
            _start_daemons(the_lab, daemon_args)
        yield the_lab
        failed = False
    finally:
        logs = "\n".join(f"--- {h.label} daemon log ---\n{h.daemon.log_tail(40)}"
                         for h in the_lab.hosts if h.daemon is not None)
        try:
            _teardown(the_lab)
        finally:
            problems = check_leaks(before, root, the_lab.all_namespaces())
            for h in the_lab.hosts:
                if h.daemon is not None and cgroups_of(h.daemon.exec_root):
                    problems.append(f"cgroups left by {h.label}'s daemon")
            shutil.rmtree(root, ignore_errors=True)
        if problems and not failed:
            raise AssertionError("lab leak check failed:\n" + "\n".join(problems) + "\n" + logs)


@dataclass
class LabContainer:
    """A bare namespace standing in for a container, with ``eth0`` in one overlay's bridge."""

    host: LabHost
    ns: TestHost
    ip: str
    mac: str

    @property
    def peer(self) -> Peer:
        return Peer(self.mac, self.ip, self.host.address)

    def sh(self, *args: str, check: bool = False,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh(*args, ns=self.ns.name, check=check, timeout=timeout)


class LabOverlay:
    """One overlay network across lab hosts, built with ``nsnet.kernel.vxlan`` directly (no
    daemon, no store): what the overlay driver will do, minus deciding what to do.

    The netlink sockets are opened inside each host's namespace by a ``NamespaceThread`` of
    the test process, exactly as the daemon opens them in its own.
    """

    def __init__(self, the_lab: Lab, nst: NamespaceThread, vni: int, prefix: str = "10.77.0",
                 mtu: int | None = None) -> None:
        self.lab = the_lab
        self.nst = nst
        self.vni = vni
        self.prefix = prefix
        self.mtu = mtu
        self.sites: dict[str, OverlayNetwork] = {}
        self.containers: list[LabContainer] = []
        self._host_links: dict[str, Links] = {}

    def ns_dir(self, h: LabHost) -> Path:
        return h.root(self.lab.root) / "overlay"

    def site(self, h: LabHost) -> OverlayNetwork:
        """This network's namespace on ``h``, made on first use."""
        if h.label not in self.sites:
            links = self._host_links.get(h.label) or Links(self.nst.iproute(h.path))
            self._host_links[h.label] = links
            self.sites[h.label] = create_overlay(self.nst, links.ipr, self.ns_dir(h), self.vni,
                                                 h.address, self.mtu)
        return self.sites[h.label]

    def attach(self, h: LabHost, last_octet: int) -> LabContainer:
        ov = self.site(h)
        ns = self.lab.namespace(f"c{self.vni % 1000}{last_octet}")
        mac = random_mac()
        with open_ns_fd(ns.path) as fd:
            ov.links.add_veth_into(random_veth_name(), "eth0", mac, fd, ov.bridge_index(),
                                   ov.mtu())
        ip = f"{self.prefix}.{last_octet}"
        sh("ip", "-n", ns.name, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns.name, "link", "set", "eth0", "up")
        c = LabContainer(h, ns, ip, mac)
        self.containers.append(c)
        return c

    def program(self) -> None:
        """Full mesh: every site learns every container that lives on another host."""
        for label, ov in self.sites.items():
            ov.sync_peers(c.peer for c in self.containers if c.host.label != label)

    def close(self) -> None:
        """Remove every site (idempotent) and close the sockets."""
        for label, ov in self.sites.items():
            ov.close()
            host = next(h for h in self.lab.hosts if h.label == label)
            remove_overlay(self.nst, self.ns_dir(host), self.vni)
        self.sites.clear()
        for links in self._host_links.values():
            links.close()
        self._host_links.clear()


# -- Overlay containers (issue 10, tests/multihost/test_overlay_containers.py) ----------------
#
# Readers and stand-ins for the end-to-end tests of containers on overlay networks. They read
# what the daemons made (overlay namespaces, etcd) with tools of their own, never through the
# daemon under test, and give the lab a world "outside" the hosts that is still only a
# namespace of the lab.

OUTSIDE_ROUTER = "192.0.2.1"  # the hosts' default gateway on the underlay
OUTSIDE_TARGET = "198.51.100.7"  # TEST-NET-2: "the internet", an address of the outside namespace


def add_outside(the_lab: Lab) -> TestHost:
    """A namespace on the switch standing in for the world beyond the hosts: it is every
    host's default gateway (192.0.2.1) and owns ``OUTSIDE_TARGET``, and it has no route to any
    container subnet. So a reply from it reaches a container only if the host masqueraded the
    request to its underlay address: a successful ping is itself evidence of NAT, and nothing
    ever leaves the lab."""
    ns = the_lab.namespace("out")
    _join_switch(the_lab.switch, ns, "pout", [OUTSIDE_ROUTER])
    sh("ip", "-n", ns.name, "addr", "add", f"{OUTSIDE_TARGET}/32", "dev", "lo")
    for h in the_lab.hosts:
        sh("ip", "-n", h.ns.name, "route", "replace", "default", "via", OUTSIDE_ROUTER)
    return ns


@contextlib.contextmanager
def capture(ns_name: str, ifname: str, bpf: Sequence[str], count: int = 1,
            timeout: float = 10.0) -> Iterator[list[str]]:
    """tcpdump in a lab namespace while the block runs; the list is filled with the packets
    seen (one line each) when the block ends. Waits until tcpdump listens before yielding, so
    a packet sent inside the block is not missed."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns_name, "tcpdump", "-l", "-n", "-i",
                             ifname, "-c", str(count), *bpf],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    said = ""
    while "listening on" not in said:
        line = proc.stderr.readline()  # "verbose output suppressed", then "listening on"
        if not line:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"tcpdump in {ns_name} did not start: {said}")
        said += line
    lines: list[str] = []
    try:
        yield lines
    finally:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines.extend(out.splitlines())


def overlay_entries(h: LabHost, vni: int) -> tuple[dict[str, str], dict[str, str]]:
    """(neighbours ip -> mac, FDB mac -> VTEP) on ``vx-<vni>`` in ``h``'s overlay namespace,
    as ``ip`` and ``bridge`` read them; both empty when the host has no such namespace (never
    made, or removed with the network). Only permanent neighbours count: they are the ones
    the peer service programs."""
    import json  # here, so this block stays apart from the lab above it
    assert h.daemon is not None
    ns = h.daemon.exec_root / "overlay" / f"ov-{vni}"
    if not ns.exists():
        return {}, {}
    dev = f"vx-{vni}"
    neigh_out = sh("nsenter", f"--net={ns}", "ip", "-j", "neigh", "show", "dev", dev,
                   check=False).stdout
    fdb_out = sh("nsenter", f"--net={ns}", "bridge", "-j", "fdb", "show", "dev", dev,
                 check=False).stdout
    neigh = {str(n["dst"]): str(n.get("lladdr", "")).lower()
             for n in json.loads(neigh_out or "[]") if "PERMANENT" in n.get("state", [])}
    fdb = {str(f["mac"]).lower(): str(f["dst"]) for f in json.loads(fdb_out or "[]")
           if "dst" in f}
    return neigh, fdb


def etcdctl(the_lab: Lab, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """etcdctl against every member of the lab's etcd, run from the etcd namespace."""
    assert the_lab.etcd is not None and the_lab.etcd_ns is not None
    return sh("etcdctl", "--dial-timeout", "2s", "--command-timeout", "5s", "--endpoints",
              ",".join(the_lab.etcd.endpoints), *args, ns=the_lab.etcd_ns.name, check=check)


def etcd_keys(the_lab: Lab, prefix: str) -> list[str]:
    """Keys under ``prefix`` as etcd itself lists them."""
    out = etcdctl(the_lab, "get", "--prefix", "--keys-only", prefix).stdout
    return [k for k in out.splitlines() if k]
