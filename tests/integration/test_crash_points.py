"""Crash at every named step of every state-changing operation, restart, check store vs kernel.

One test host and one daemon for the whole walk (a host costs more than a restart): for each
point the daemon is restarted with the point armed (nsnet.engine.crashpoints), the operation is
prepared and run, the daemon SIGKILLs itself at the step, and a plain restart must leave
nothing leaked, nothing lost and no address held twice (nsnet.testing.invariants); a new
container on the same network must get an address nobody holds, and a peer must reach every
container. A point its operation never reaches fails here too (the daemon does not die).

"run" is create then start: its points are the create.* and start.* ones. "exit" is the end of
a container's life (stop, a crash, rm -f), reached here through stop.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from helpers import api_error, in_sandbox, ip_of, links_in, run, sandbox

from nsnet.client.api import Client
from nsnet.engine.crashpoints import POINTS
from nsnet.testing import invariants
from nsnet.testing.hosts import Daemon, daemon_host, sh

pytestmark = pytest.mark.root

# Exits at once on SIGTERM (a shell as PID 1 would otherwise ignore it): stops stay quick.
QUICK_STOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]


@dataclass
class Walk:
    daemon: Daemon
    walk_net: str
    peer: str
    peer_ip: str
    peer_ns: str


@pytest.fixture(scope="module")
def walk() -> Iterator[Walk]:
    with daemon_host(prefix="nsct") as d:
        c = d.client()
        nid = str(c.networks.create({"Name": "walk", "IPAM": {"Config": [
            {"Subnet": "10.77.0.0/24"}]}})["Id"])
        c.networks.create({"Name": "side", "IPAM": {"Config": [{"Subnet": "10.78.0.0/24"}]}})
        peer = run(c, network="walk", name="peer", cmd=QUICK_STOP)
        yield Walk(d, nid, peer, ip_of(c, peer, "walk"), sandbox(c, peer))


def _target(c: Client, start: bool = True) -> str:
    return run(c, network="walk", name="target", cmd=QUICK_STOP, start=start)


def _prepare(op: str, c: Client) -> None:
    """Bring the objects the operation needs; never through the operation itself, so the
    armed point is not hit early."""
    if op in ("start",):
        _target(c, start=False)
    elif op in ("connect", "stop", "exit"):
        _target(c)
    elif op == "disconnect":
        _target(c)
        c.networks.connect("side", "target")
    elif op == "rm":
        _target(c)
        c.containers.stop("target", t=5)
    elif op == "network_rm":
        c.networks.create({"Name": "tmpnet", "IPAM": {"Config": [{"Subnet": "10.79.0.0/24"}]}})


ACTIONS: dict[str, Callable[[Client], object]] = {
    "network_create": lambda c: c.networks.create(
        {"Name": "tmpnet", "IPAM": {"Config": [{"Subnet": "10.79.0.0/24"}]}}),
    "network_rm": lambda c: c.networks.remove("tmpnet"),
    "create": lambda c: _target(c, start=False),
    "start": lambda c: c.containers.start("target"),
    "connect": lambda c: c.networks.connect("side", "target"),
    # eth0 carries the default route: the disconnect has to move it to side's endpoint.
    "disconnect": lambda c: c.networks.disconnect("walk", "target"),
    "stop": lambda c: c.containers.stop("target", t=5),
    "exit": lambda c: c.containers.stop("target", t=5),
    "rm": lambda c: c.containers.remove("target"),
}


def _cleanup(c: Client) -> None:
    """Whatever the crash left must still be removable through the API."""
    for name in ("target", "probe"):
        with contextlib.suppress(Exception):
            c.containers.inspect(name)
            c.containers.remove(name, force=True)
    with contextlib.suppress(Exception):
        c.networks.inspect("tmpnet")
        c.networks.remove("tmpnet")


def test_every_operation_has_points() -> None:
    ops = {p.split(".", 1)[0] for p in POINTS}
    assert ops == set(ACTIONS)


@pytest.mark.parametrize("point", list(POINTS))
def test_crash_at(walk: Walk, point: str) -> None:
    d = walk.daemon
    op = point.split(".", 1)[0]
    d.stop()
    d.start(crash_at=point)
    c = d.client()
    try:
        _prepare(op, c)
        with pytest.raises(Exception):  # noqa: B017 - the connection dies with the daemon
            ACTIONS[op](c)
        assert d.wait_crashed() == -9, f"{point}: the daemon did not die at the point"
        d.start()
        c = d.client()
        problems = invariants.check(d)
        assert not problems, f"after a crash at {point}:\n" + "\n".join(problems)
        # A new container on the same network: no address that anyone still holds.
        run(c, network="walk", name="probe", cmd=QUICK_STOP)
        problems = invariants.check(d) + invariants.reachable(d, walk.peer_ns, walk.walk_net)
        assert not problems, f"after a crash at {point}, with a new container:\n" + \
            "\n".join(problems)
        assert ip_of(c, walk.peer, "walk") == walk.peer_ip  # nothing lost
    finally:
        if d.proc is None:
            d.start()
        _cleanup(d.client())
    assert api_error(c.containers.inspect, "target").status == 404
    assert invariants.check(d) == []


def _host_veth(d: Daemon, c: Client, cid: str) -> str:
    eth0 = next(x for x in links_in(sandbox(c, cid)) if x["ifname"] == "eth0")
    names = [str(x["ifname"]) for x in d.host.ip_json("link", "show")
             if x["ifindex"] == eth0["link_index"]]
    assert len(names) == 1
    return names[0]


def test_a_restored_veth_keeps_its_endpoint_sysctls(daemon: Daemon) -> None:
    """A veth re-made at reconcile (someone deleted it while the daemon was down) is a new
    interface in the container: the ``com.docker.network.endpoint.sysctls`` asked for at
    run time were lost with the old one."""
    c = daemon.client()
    c.networks.create({"Name": "lab", "IPAM": {"Config": [{"Subnet": "10.82.0.0/24"}]}})
    keeper = run(c, network="lab", name="keeper", cmd=QUICK_STOP,
                 NetworkingConfig={"EndpointsConfig": {"lab": {"DriverOpts": {
                     "com.docker.network.endpoint.sysctls":
                         "net.ipv4.conf.IFNAME.log_martians=1,"
                         "net.ipv4.conf.IFNAME.arp_ignore=2"}}}})

    def conf(leaf: str) -> str:
        return in_sandbox(c, keeper, "cat", f"/proc/sys/net/ipv4/conf/eth0/{leaf}",
                          check=True).stdout.strip()

    assert (conf("log_martians"), conf("arp_ignore")) == ("1", "2")
    veth = _host_veth(daemon, c, keeper)
    daemon.stop()
    sh("ip", "link", "del", veth, ns=daemon.host.name)
    daemon.start()
    c = daemon.client()
    assert _host_veth(daemon, c, keeper) != veth  # re-made
    assert (conf("log_martians"), conf("arp_ignore")) == ("1", "2")
    assert invariants.check(daemon) == []


def test_reconcile_claims_again_an_address_a_crash_left_free(daemon: Daemon) -> None:
    """The state a crash between "address freed" and "container saved" left before the
    writes were ordered: a running container's address free in IPAM. The next container must
    not get it."""
    c = daemon.client()
    c.networks.create({"Name": "lab", "IPAM": {"Config": [{"Subnet": "10.80.0.0/24"}]}})
    old = run(c, network="lab", name="old", cmd=QUICK_STOP)
    old_ip = ip_of(c, old, "lab")
    daemon.stop()
    db = sqlite3.connect(str(daemon.data_root / "nsnet.db"))
    with db:
        assert db.execute("DELETE FROM ipam WHERE address=?", (old_ip,)).rowcount == 1
    db.close()
    daemon.start()
    c = daemon.client()
    new = run(c, network="lab", name="new", cmd=QUICK_STOP)
    assert ip_of(c, new, "lab") != old_ip
    assert invariants.check(daemon) == []


def test_restored_veth_name_is_written_back(daemon: Daemon) -> None:
    """A veth re-made at reconcile gets a new name; unsaved, the next reconcile took it for a
    leftover and deleted it, cutting the container off."""
    c = daemon.client()
    nid = str(c.networks.create({"Name": "lab", "IPAM": {"Config": [
        {"Subnet": "10.81.0.0/24"}]}})["Id"])
    keeper = run(c, network="lab", name="keeper", cmd=QUICK_STOP)
    peer = run(c, network="lab", name="peer", cmd=QUICK_STOP)
    veth = _host_veth(daemon, c, keeper)
    daemon.stop()
    sh("ip", "link", "del", veth, ns=daemon.host.name)
    daemon.start()
    daemon.stop()
    daemon.start()
    c = daemon.client()
    assert invariants.check(daemon) == []
    assert invariants.reachable(daemon, sandbox(c, peer), nid) == []
