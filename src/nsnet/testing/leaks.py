"""Leak checks that look only at what this test run made, or a daemon of it could have made.

The machine the tests run on is shared: Docker may start containers on it (``docker0``,
``br-<id12>`` bridges, ``veth<7 hex>`` ports whose peers are in its containers), and several
people may run this suite at once, each making namespaces named like ours. A check that
compared the whole machine before and after a test would blame the test for all of it, so each
check is scoped:

- **Namespaces** (``/run/netns``): the ones this process made after the snapshot
  (``note_namespace``, called by ``TestHost.create`` and by ``sh("ip", "netns", "add", ...)``)
  and still there. Naming cannot tell two runs of this suite apart; the process that made the
  namespace can. nsnetd itself never names a namespace: its sandboxes and overlay namespaces are
  bind mounts under its exec root, which the mount check covers.
- **Links in the machine's namespace** (new since the snapshot by name *and* index), only those
  recognisably ours (``our_new_links``): an alias ``nsnet:...`` (the daemon's bridges and private
  parents; the same tag its reconcile trusts, since a name cannot tell our ``br-<id12>`` from
  Docker's), a name only nsnet uses (``nsnet0``, ``nsnet_gwbridge``, ``nsm-``, ``nsh-``, ``nsp-``,
  ``vx-<vni>``, ``ovbr0``), a port of such a link (a ``veth<7 hex>`` on our bridge), or a link
  whose other end is in a namespace this run made (a fixture's veth born on the wrong side),
  or one this process made there (``note_link``, called by ``sh("ip", "link", "add", ...)``
  run in the machine's namespace: a fixture's dummy, bridge or VLAN, which carries no tag).
- **nftables tables** in the machine's namespace named ``nsnet*`` that were not there before.
- **Mounts, processes and cgroups** under the test's own temporary root.

Blind spot, named so nobody relies on it: a VLAN sub-interface (``eth0.50``) or a container-side
``ethN`` that a daemon (not ``sh``) makes in the machine's namespace carries no tag and is named
as Docker names its own.

Every check can be pointed at a stand-in for the machine's namespace (``machine``, a named
namespace), so a test can prove what is and is not reported without touching the real one.

Cost per look: two forks (``ip -j link``, ``nft -j list tables``, ~5 ms together), a third
(``ip netns list-id``) only when an unexplained link has its other end in another namespace,
plus reading ``/proc``. A clean test looks once; a leak is looked at again every 0.1 s for up
to ``wait`` seconds, since the kernel reaps namespaces and their links asynchronously.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

NETNS_DIR = "/run/netns"
NSNET_ALIAS = "nsnet:"
# Link names nsnet gives and no other tool on the machine does (docs/kernel-names.md). Docker's
# overlay VXLAN devices are ``vx-<6 hex>-<id>``, never ``vx-<decimal>``.
NSNET_NAME = re.compile(r"nsnet.*|nsm-.*|nsh-.*|nsp-.*|vx-\d+|ovbr\d+")

_made: dict[str, int] = {}
_sequence = itertools.count(1)
_made_links: set[str] = set()


def note_namespace(name: str) -> None:
    """Record that this process made the named namespace ``name``: the namespace check looks
    at these only."""
    _made[name] = next(_sequence)


def note_link(name: str) -> None:
    """Record that this process made a link named ``name`` in the machine's namespace."""
    _made_links.add(name)


def links_added(args: Sequence[str]) -> list[str]:
    """The names an ``ip link add`` argv gives (the link's, a veth peer's), run in the
    namespace it is run in; [] for anything else (``ip -n NS link add`` is another's)."""
    if list(args[:3]) != ["ip", "link", "add"] or len(args) < 4:
        return []
    rest = list(args[3:])
    names = [rest[i + 1] for i, w in enumerate(rest[:-1]) if w == "name"]
    if rest[0] not in ("link", "name", "dev"):
        names.insert(0, rest[0])
    return names


def namespaces_mark() -> int:
    """Where this process's record of made namespaces stands: a snapshot keeps it."""
    return max(_made.values(), default=0)


def made_since(mark: int) -> list[str]:
    """Names of namespaces this process made after ``mark``, oldest first."""
    return [n for n, seq in sorted(_made.items(), key=lambda kv: kv[1]) if seq > mark]


def namespaces_left(mark: int) -> list[str]:
    """Namespaces this process made after ``mark`` that are still there (``ip netns del``
    removes the name at once, so there is nothing to wait for)."""
    return [n for n in made_since(mark) if os.path.lexists(f"{NETNS_DIR}/{n}")]


class Named(Protocol):
    """What the check needs of a test host (``nsnet.testing.hosts.TestHost``)."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> str: ...


def _run(machine: str | None, *args: str) -> str:
    cmd = list(args)
    if machine is not None and args[0] == "ip":
        cmd = ["ip", "-n", machine, *args[1:]]
    elif machine is not None:
        cmd = ["ip", "netns", "exec", machine, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    return p.stdout if p.returncode == 0 else ""


def machine_links(machine: str | None = None) -> list[dict[str, Any]]:
    """``ip -j link`` of the machine's namespace (``machine`` None: the real one)."""
    return json.loads(_run(machine, "ip", "-j", "link", "show") or "[]")  # type: ignore[no-any-return]


def nsnet_tables(machine: str | None = None) -> set[tuple[str, str, int]]:
    """(family, name, handle) of the tables named ``nsnet*`` in the machine's namespace."""
    out = _run(machine, "nft", "-j", "list", "tables")
    items = json.loads(out)["nftables"] if out else []
    return {(t["family"], t["name"], int(t["handle"])) for i in items
            if (t := i.get("table")) and str(t.get("name", "")).startswith("nsnet")}


def run_nsids(machine: str | None = None) -> set[int]:
    """The ids, as the machine's namespace numbers them, of the namespaces this process made
    that are still there (``ip netns list-id`` names only those in /run/netns)."""
    out = _run(machine, "ip", "-j", "netns", "list-id")
    return {int(e["nsid"]) for e in json.loads(out or "[]") if e.get("name") in _made}


def _tagged(link: Mapping[str, Any]) -> bool:
    return (str(link.get("ifalias", "")).startswith(NSNET_ALIAS)
            or NSNET_NAME.fullmatch(str(link.get("ifname", ""))) is not None)


def our_new_links(links: Sequence[Mapping[str, Any]], before: Mapping[str, int],
                  nsids: Callable[[], set[int]],
                  noted: Set[str] = frozenset()) -> list[str]:
    """Names of the links in ``links`` (``ip -j link`` of the machine's namespace) that are
    new since ``before`` (name -> ifindex) and recognisably nsnet's or this run's; see the
    module docstring for the rules. ``nsids`` (the ids of this run's namespaces) is called only
    when a new link that nothing else explains has its other end in another namespace;
    ``noted``: names this process made there (``note_link``)."""
    tagged = {str(link["ifname"]) for link in links if _tagged(link)} | set(noted)
    new = [link for link in links if before.get(str(link["ifname"])) != link["ifindex"]]
    ours: list[str] = []
    ids: set[int] | None = None
    for link in new:
        name = str(link["ifname"])
        if name in tagged or link.get("master") in tagged:
            ours.append(name)
        elif "link_netnsid" in link:
            if ids is None:
                ids = nsids()
            if int(link["link_netnsid"]) in ids:
                ours.append(name)
    return sorted(ours)


@dataclass(frozen=True)
class LeakSnapshot:
    """The machine before a test: what the check compares with afterwards."""

    links: Mapping[str, int]  # name -> ifindex in the machine's namespace
    tables: frozenset[tuple[str, str, int]]
    namespaces_mark: int
    machine: str | None = None

    @classmethod
    def take(cls, machine: str | None = None) -> LeakSnapshot:
        """``machine``: a named namespace standing in for the machine's own (tests of the
        check); None for the real one."""
        return cls(links={str(x["ifname"]): int(x["ifindex"]) for x in machine_links(machine)},
                   tables=frozenset(nsnet_tables(machine)), namespaces_mark=namespaces_mark(),
                   machine=machine)


def check_leaks(before: LeakSnapshot, root: Path, hosts: Sequence[Named],
                wait: float = 5.0) -> list[str]:
    """What this test left behind; empty when clean. ``root`` is the test's temporary
    directory (daemon data and exec roots), ``hosts`` the namespaces it must have removed."""
    deadline = time.monotonic() + wait
    while True:
        problems = _look(before, root, hosts)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.1)


def _look(before: LeakSnapshot, root: Path, hosts: Sequence[Named]) -> list[str]:
    problems: list[str] = []
    m = before.machine
    # Noted links are the real machine's: a stand-in (``machine``) is never made through sh.
    noted = frozenset(_made_links) if m is None else frozenset()
    links = our_new_links(machine_links(m), before.links, lambda: run_nsids(m), noted)
    if links:
        problems.append(f"links left in the root namespace: {links}")
    left = namespaces_left(before.namespaces_mark)
    if left:
        problems.append(f"namespaces left: {left}")
    mounts = mounts_under(str(root))
    if mounts:
        problems.append(f"mounts left: {mounts}")
    tables = nsnet_tables(m) - before.tables
    if tables:
        problems.append("an nsnet nftables table appeared in the root namespace: "
                        f"{sorted(f'{f} {n}' for f, n, _ in tables)}")
    problems += [f"test host {h.name} still exists" for h in hosts if os.path.exists(h.path)]
    procs = procs_mentioning(str(root))
    if procs:
        problems.append(f"processes left: {procs}")
    cgs = cgroups_of(root / "run")
    if cgs:
        problems.append(f"cgroups left: {cgs[:3]} ({len(cgs)})")
    return problems


def mounts_under(prefix: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and parts[4].startswith(prefix):
                out.append(parts[4])
    return out


def cgroups_of(exec_root: Path) -> list[str]:
    """Container cgroups runc made for this daemon (``nsnet-<hash of exec root>-<id>``, see
    nsnet.runtime.runc) that still exist in any hierarchy."""
    tag = "nsnet-" + hashlib.sha256(str(exec_root).encode()).hexdigest()[:8] + "-"
    out: list[str] = []
    base = Path("/sys/fs/cgroup")
    if not base.is_dir():
        return out
    for hier in base.iterdir():
        # Cgroups of other tests come and go while this walks: a vanished one is not ours.
        try:
            parents = [hier, *[p for p in hier.glob("*/*") if p.is_dir()]]
        except OSError:
            parents = [hier]
        for parent in parents:
            try:
                out += [str(p) for p in parent.iterdir() if p.name.startswith(tag)]
            except OSError:
                continue
    return out


def procs_mentioning(text: str) -> list[str]:
    """Processes (not this one) whose command line names ``text``: the test's root."""
    out = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append(f"{d}: {cmd[:120]}")
    return out
