"""Containers on overlay networks across lab hosts, end to end (issue 10).

Each test builds its own lab (2 or 3 hosts on one underlay switch, a real etcd, one nsnetd per
host with the cluster flags) and drives it the way a user would: the docker CLI or the API to
run, connect and remove containers. Every result is read back by something other than the
daemon under test: ping, nc and nslookup inside the containers, ``ip``/``bridge`` in the
overlay namespaces and the sandboxes, tcpdump on the lab's switch or on the stand-in for the
outside world, etcdctl. The lab's teardown checks that nothing was left on any host.

Nothing leaves the lab: "outside" is a namespace of the lab (``add_outside``) that owns a
TEST-NET-2 address and has no route back to any container subnet.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest

from nsnet.client.api import Client, frames_text
from nsnet.client.errors import APIError
from nsnet.testing.hosts import mounts_under, sh
from nsnet.testing.multihost import (
    OUTSIDE_TARGET,
    Lab,
    LabHost,
    add_outside,
    capture,
    etcd_address,
    etcd_keys,
    lab,
    overlay_entries,
)

pytestmark = pytest.mark.root

ONE_ETCD = ["--cluster-store", f"etcd://{etcd_address(0)}:2379", "--cluster-advertise", "eth0"]
THREE_ETCD = ["--cluster-store",
              "etcd://" + ",".join(f"{etcd_address(m)}:2379" for m in range(3)),
              "--cluster-advertise", "eth0"]
GWBRIDGE = "nsnet_gwbridge"
TTL = 3  # NSNET_TEST_NODE_TTL for the killed-host test (production: 10 s)
PORT = 7000
ADDR = "/nsnet/v1/ipam/addr/"
ENDPOINTS = "/nsnet/v1/endpoints/"


# -- helpers ----------------------------------------------------------------------------------

@contextlib.contextmanager
def logged_lab(n_hosts: int, **kw: Any) -> Iterator[Lab]:
    """``lab`` that prints every daemon's log tail when the test fails (pytest shows it with
    the failure): the evidence a failure report needs."""
    with lab(n_hosts, **kw) as the_lab:
        try:
            wait_for_cluster(the_lab)
            yield the_lab
        except BaseException:
            for h in the_lab.hosts:
                if h.daemon is not None:
                    print(f"--- {h.label} daemon log ---\n{h.daemon.log_tail(80)}")
            raise


def client(h: LabHost) -> Client:
    assert h.daemon is not None
    return h.daemon.client()


def wait_for_cluster(the_lab: Lab) -> None:
    """Every daemon sees every host ready. The daemons start even when etcd answers slowly
    (registering later); a test of containers starts from a formed cluster, as a user does."""
    want = {h.address for h in the_lab.hosts}

    def formed() -> bool:
        for h in the_lab.hosts:
            try:
                nodes = client(h).nodes()
            except APIError:
                return False
            if {n["VTEP"] for n in nodes if n["Status"] == "ready"} != want:
                return False
        return True
    eventually(formed, "every host sees the whole cluster ready", timeout=20, interval=0.2)


def eventually(cond: Callable[[], bool], what: str, timeout: float = 5.0,
               interval: float = 0.05) -> float:
    """Seconds until ``cond`` held; AssertionError naming ``what`` when it never did."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)
    return time.monotonic() - start


def overlay(h: LabHost, name: str, **body: Any) -> tuple[str, int]:
    """An overlay network made on ``h``; (id, VNI)."""
    n = client(h).networks.create({"Name": name, "Driver": "overlay", **body})
    net = client(h).networks.inspect(n["Id"])
    return str(n["Id"]), int(net["Options"]["com.docker.network.driver.overlay.vxlanid_list"])


def seen_everywhere(the_lab: Lab, name: str) -> None:
    def everywhere() -> bool:
        return all(any(n["Name"] == name for n in client(h).networks.list())
                   for h in the_lab.hosts)
    eventually(everywhere, f"network {name} on every host", timeout=10)


def run(h: LabHost, name: str, network: str, aliases: list[str] | None = None) -> str:
    """``docker run -d --name <name> --network <network> [--network-alias ...] busybox``
    through the API (create + start)."""
    body: dict[str, Any] = {"Image": "busybox", "Cmd": ["sleep", "3600"],
                            "HostConfig": {"NetworkMode": network}}
    if aliases:
        body["NetworkingConfig"] = {"EndpointsConfig": {network: {"Aliases": aliases}}}
    cid = str(client(h).containers.create(body, name=name)["Id"])
    client(h).containers.start(cid)
    return cid


def ex(h: LabHost, cid: str, *cmd: str) -> tuple[int, str]:
    """Run ``cmd`` inside the container (exec): (exit code, stdout + stderr)."""
    c = client(h)
    e = c.containers.exec_create(cid, list(cmd))
    out, err = frames_text(c.containers.exec_start(e["Id"]))
    code = int(c.containers.exec_inspect(e["Id"])["ExitCode"])
    return code, out.decode(errors="replace") + err.decode(errors="replace")


def ex_detached(h: LabHost, cid: str, *cmd: str) -> None:
    c = client(h)
    e = c.containers.exec_create(cid, list(cmd), detach=True)
    c.containers.exec_start(e["Id"], detach=True)


def ip_on(h: LabHost, cid: str, network: str) -> str:
    nets = client(h).containers.inspect(cid)["NetworkSettings"]["Networks"]
    return str(nets[network]["IPAddress"])


def pings(h: LabHost, cid: str, ip: str, count: int = 1) -> bool:
    code, _ = ex(h, cid, "ping", "-c", str(count), "-W", "1", ip)
    return code == 0


def sandbox(h: LabHost, cid: str) -> str:
    return str(client(h).containers.inspect(cid)["NetworkSettings"]["SandboxKey"])


def in_sandbox(h: LabHost, cid: str, *cmd: str, check: bool = True) -> str:
    """A host tool run in the container's network namespace: an independent reader."""
    return str(sh("nsenter", f"--net={sandbox(h, cid)}", *cmd, timeout=30, check=check).stdout)


def ifname_with(h: LabHost, cid: str, ip: str) -> str | None:
    """The sandbox interface holding ``ip`` (None: no interface has it)."""
    for link in json.loads(in_sandbox(h, cid, "ip", "-j", "addr", "show") or "[]"):
        if any(a.get("local") == ip for a in link.get("addr_info", [])):
            return str(link["ifname"])
    return None


def default_routes(h: LabHost, cid: str) -> list[dict[str, Any]]:
    return json.loads(in_sandbox(h, cid, "ip", "-j", "-4", "route", "show", "default") or "[]")  # type: ignore[no-any-return]


def resolve(h: LabHost, cid: str, name: str) -> list[str]:
    """IPv4 answers to ``nslookup <name>.`` run inside the container (busybox), in order.

    The trailing dot keeps busybox from trying the search domain first: that question goes
    upstream, to the lab's unreachable 192.0.2.53, and would time out the whole lookup."""
    _code, out = ex(h, cid, "nslookup", "-type=a", f"{name}.")
    answers = out.split("Name:", 1)[1] if "Name:" in out else ""
    return re.findall(r"^Address:?\s*(?:\d+:\s*)?(\d+\.\d+\.\d+\.\d+)\s*$", answers, re.M)


def tcp_exchange(server: tuple[LabHost, str], client_: tuple[LabHost, str], ip: str,
                 word: str) -> None:
    """A TCP echo over the overlay with busybox nc: the server echoes what the client sends."""
    ex_detached(server[0], server[1], "nc", "-ll", "-p", str(PORT), "-e", "/bin/cat")

    def echoed() -> bool:
        code, out = ex(client_[0], client_[1], "sh", "-c",
                       f"echo {word} | timeout 5 nc {ip} {PORT}")
        return code == 0 and word in out
    eventually(echoed, f"TCP echo of {word} from {ip}", timeout=10, interval=0.3)


def status_of(fn: Callable[[], object]) -> tuple[int, str]:
    try:
        fn()
    except APIError as e:
        return e.status, e.message
    return 200, ""


def peers_of(h: LabHost, vni: int) -> dict[str, tuple[str, str]]:
    """ip -> (mac, VTEP) for every complete peer (neighbour + FDB) in ``h``'s overlay."""
    neigh, fdb = overlay_entries(h, vni)
    return {ip: (mac, fdb[mac]) for ip, mac in neigh.items() if mac in fdb}


def holds_exactly(h: LabHost, vni: int, ips: set[str]) -> bool:
    return set(peers_of(h, vni)) == ips


def holds_peer(h: LabHost, vni: int, ip: str, want: tuple[str, str]) -> bool:
    return peers_of(h, vni).get(ip) == want


def lacks_entries(h: LabHost, vni: int, ip: str, mac: str) -> bool:
    """Neither half of a peer is left: no neighbour for ``ip``, no FDB entry for ``mac``."""
    neigh, fdb = overlay_entries(h, vni)
    return ip not in neigh and mac not in fdb


def mac_on(h: LabHost, cid: str, network: str) -> str:
    nets = client(h).containers.inspect(cid)["NetworkSettings"]["Networks"]
    return str(nets[network]["MacAddress"]).lower()


@contextlib.contextmanager
def etcd_env(monkeypatch: pytest.MonkeyPatch, ttl: int) -> Iterator[None]:
    """The test-only short lease for the daemons this block starts."""
    monkeypatch.setenv("NSNET_TESTING", "1")
    monkeypatch.setenv("NSNET_TEST_NODE_TTL", str(ttl))
    yield


# -- 1. reachability across two and three hosts ------------------------------------------------

@pytest.mark.parametrize("n_hosts", [2, 3])
def test_containers_reach_each_other_across_hosts(n_hosts: int) -> None:
    with logged_lab(n_hosts, etcd_members=1, daemon_args=ONE_ETCD) as the_lab:
        outside = add_outside(the_lab)
        hosts = the_lab.hosts
        h1 = hosts[0]
        assert h1.daemon is not None
        _net_id, vni = overlay(h1, "ovnet")
        seen_everywhere(the_lab, "ovnet")
        # The first container through the real docker CLI, the others through the API.
        p = h1.daemon.docker("run", "-d", "--name", "c1", "--network", "ovnet", "busybox",
                             "sleep", "3600")
        ids = [p.stdout.strip()] + [run(h, f"c{i + 1}", "ovnet")
                                    for i, h in enumerate(hosts) if i > 0]
        ips = [ip_on(h, cid, "ovnet") for h, cid in zip(hosts, ids, strict=True)]
        assert len(set(ips)) == n_hosts, ips

        # Every container reaches every other, both ways.
        for i, (h, cid) in enumerate(zip(hosts, ids, strict=True)):
            for j, ip in enumerate(ips):
                if i != j:
                    eventually(partial(pings, h, cid, ip),
                               f"c{i + 1} on {h.label} pings c{j + 1} ({ip})", timeout=10)

        # And the packets really cross the underlay in VXLAN, host to host.
        last, last_id, last_ip = hosts[-1], ids[-1], ips[-1]
        with capture(the_lab.switch.name, "sw0",
                     ["udp", "dst", "port", "4789", "and", "src", "host", h1.address,
                      "and", "dst", "host", last.address]) as seen:
            assert pings(h1, ids[0], last_ip)
        assert seen and f"{h1.address}." in seen[0] and f"{last.address}.4789" in seen[0] and (
            f"vni {vni}" in seen[0]), seen

        # Each host's overlay holds a peer for each remote container and none for its own.
        for i, h in enumerate(hosts):
            held = peers_of(h, vni)
            want = {ips[j]: (mac_on(hosts[j], ids[j], "ovnet"), hosts[j].address)
                    for j in range(n_hosts) if j != i}
            assert held == want, (h.label, held, want)

        # TCP both ways with busybox nc.
        tcp_exchange((last, last_id), (h1, ids[0]), last_ip, "hello-from-h1")
        tcp_exchange((h1, ids[0]), (last, last_id), ips[0], "hello-from-last")

        # Routes: the overlay carries only its subnet; the default route goes through the
        # local gateway bridge, which docker inspect does not show among the networks.
        for h, cid, ip in zip(hosts, ids, ips, strict=True):
            ov_if = ifname_with(h, cid, ip)
            assert ov_if is not None
            gw_net = client(h).networks.inspect(GWBRIDGE)
            assert gw_net["Driver"] == "bridge" and gw_net["Scope"] == "local", gw_net
            gw = gw_net["IPAM"]["Config"][0]["Gateway"]
            routes = default_routes(h, cid)
            assert len(routes) == 1, routes
            assert routes[0]["dev"] != ov_if and routes[0].get("gateway") == gw, (routes, gw)
            assert list(client(h).containers.inspect(cid)["NetworkSettings"]["Networks"]) == [
                "ovnet"]

        # Outbound: the outside world (no route back to any container subnet) sees the host's
        # underlay address as the source, and answers.
        with capture(outside.name, "eth0", ["icmp", "and", "dst", "host", OUTSIDE_TARGET],
                     count=1) as out_seen:
            eventually(lambda: pings(h1, ids[0], OUTSIDE_TARGET), "c1 reaches the outside",
                       timeout=5)
        assert out_seen and f"{h1.address} > {OUTSIDE_TARGET}" in out_seen[0], out_seen


# -- 2. two overlays are isolated ------------------------------------------------------------

def test_two_overlays_are_isolated() -> None:
    with logged_lab(2, etcd_members=1, daemon_args=ONE_ETCD) as the_lab:
        add_outside(the_lab)
        h1, h2 = the_lab.hosts
        overlay(h1, "ov1")
        overlay(h2, "ov2")
        seen_everywhere(the_lab, "ov1")
        seen_everywhere(the_lab, "ov2")
        a1 = run(h1, "a1", "ov1")  # ov1 on h1
        b1 = run(h2, "b1", "ov1")  # ov1 on h2: the positive control
        a2 = run(h1, "a2", "ov2")  # ov2 on the same host as a1
        b2 = run(h2, "b2", "ov2")  # ov2 on the other host
        ip_b1, ip_a2, ip_b2 = ip_on(h2, b1, "ov1"), ip_on(h1, a2, "ov2"), ip_on(h2, b2, "ov2")
        eventually(lambda: pings(h1, a1, ip_b1), "a1 -> b1 on ov1", timeout=10)
        eventually(lambda: pings(h1, a2, ip_b2), "a2 -> b2 on ov2", timeout=10)
        for h, cid in ((h1, a1), (h1, a2), (h2, b2), (h2, b1)):
            ex_detached(h, cid, "nc", "-ll", "-p", str(PORT), "-e", "/bin/cat")
        tcp_exchange((h2, b1), (h1, a1), ip_b1, "same-overlay")  # the control, over TCP
        for src_h, src, dst, what in [(h1, a1, ip_b2, "ov1 -> ov2, other host"),
                                      (h1, a1, ip_a2, "ov1 -> ov2, same host"),
                                      (h2, b2, ip_on(h1, a1, "ov1"), "ov2 -> ov1, other host"),
                                      (h2, b2, ip_b1, "ov2 -> ov1, same host")]:
            assert not pings(src_h, src, dst, count=2), f"{what}: {dst} answered"
            code, out = ex(src_h, src, "sh", "-c",
                           f"echo cross-overlay | timeout 3 nc -w 2 {dst} {PORT}")
            assert "cross-overlay" not in out, (what, code, out)


# -- 3. DNS across hosts -----------------------------------------------------------------------

def test_dns_across_hosts() -> None:
    with logged_lab(3, etcd_members=1, daemon_args=ONE_ETCD) as the_lab:
        h1, h2, h3 = the_lab.hosts
        overlay(h1, "ovnet")
        seen_everywhere(the_lab, "ovnet")
        asker = run(h1, "asker", "ovnet")
        web = run(h2, "web", "ovnet", aliases=["webalias", "svc"])
        ip_web = ip_on(h2, web, "ovnet")
        # A new container's name answers on another host as soon as it is programmed.
        took = eventually(lambda: resolve(h1, asker, "web") == [ip_web],
                          "web (on h2) resolved on h1", timeout=5, interval=0.02)
        print(f"web answered on h1 {took * 1000:.0f} ms after its run returned on h2")
        assert resolve(h1, asker, "webalias") == [ip_web]
        web3 = run(h3, "web3", "ovnet", aliases=["svc"])
        ip_web3 = ip_on(h3, web3, "ovnet")
        eventually(lambda: sorted(resolve(h1, asker, "svc")) == sorted([ip_web, ip_web3]),
                   "svc answers both hosts' containers", timeout=5)
        # Round robin: the order changes between questions.
        firsts = {resolve(h1, asker, "svc")[0] for _ in range(12)}
        assert firsts == {ip_web, ip_web3}, firsts
        # A container on the same host but not on the overlay sees none of its names.
        client(h1).networks.create({"Name": "lnet", "Driver": "bridge"})
        outsider = run(h1, "outsider", "lnet")
        for name in ("web", "webalias", "svc"):
            out = in_sandbox(h1, outsider, "dig", "+time=1", "+tries=1", "+short",
                             "@127.0.0.11", name, check=False)
            assert ip_web not in out and ip_web3 not in out, (name, out)
        # rm on h2: the name stops answering on h1; the shared alias keeps h3's container.
        client(h2).containers.remove(web, force=True)
        eventually(lambda: resolve(h1, asker, "web") == [], "web gone on h1", timeout=5)
        assert resolve(h1, asker, "webalias") == []
        assert resolve(h1, asker, "svc") == [ip_web3]


# -- 4. racing runs on two hosts ---------------------------------------------------------------

def test_racing_runs_on_two_hosts_never_share_an_address() -> None:
    with logged_lab(2, etcd_members=1, daemon_args=ONE_ETCD) as the_lab:
        h1, h2 = the_lab.hosts
        net_id, vni = overlay(h1, "ovnet")
        seen_everywhere(the_lab, "ovnet")
        jobs = [(the_lab.hosts[i % 2], f"r{i}") for i in range(20)]
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda j: run(j[0], j[1], "ovnet"), jobs))
        ips = [ip_on(h, cid, "ovnet") for (h, _), cid in zip(jobs, ids, strict=True)]
        assert len(set(ips)) == 20, sorted(ips)
        # etcd holds one address claim and one endpoint record per container, no more.
        claimed = {k.rsplit("/", 1)[1] for k in etcd_keys(the_lab, f"{ADDR}{net_id}/")}
        assert set(ips) <= claimed, (sorted(ips), sorted(claimed))
        assert len(etcd_keys(the_lab, f"{ENDPOINTS}{net_id}/")) == 20
        # Each host's kernel has exactly the other host's ten as peers.
        for me in (h1, h2):
            other = {ip for (h, _), ip in zip(jobs, ips, strict=True) if h is not me}
            eventually(partial(holds_exactly, me, vni, other),
                       f"{me.label} holds the other host's ten peers", timeout=10)
        # And a sample of them answers across hosts.
        for i in (0, 7, 13):
            j = i + 1
            eventually(partial(pings, jobs[i][0], ids[i], ips[j]),
                       f"r{i} pings r{j}", timeout=10)


# -- 5. connect / disconnect -------------------------------------------------------------------

def test_connect_and_disconnect_a_running_container() -> None:
    with logged_lab(2, etcd_members=1, daemon_args=ONE_ETCD) as the_lab:
        h1, h2 = the_lab.hosts
        _net_id, vni = overlay(h1, "ovnet")
        seen_everywhere(the_lab, "ovnet")
        a = run(h1, "a", "ovnet")
        ip_a = ip_on(h1, a, "ovnet")
        b = run(h2, "b", "bridge")
        assert not pings(h2, b, ip_a, count=2)

        client(h2).networks.connect("ovnet", b)
        ip_b = ip_on(h2, b, "ovnet")
        mac_b = mac_on(h2, b, "ovnet")
        ov_if = ifname_with(h2, b, ip_b)
        assert ov_if == "eth1", ov_if
        eventually(lambda: pings(h1, a, ip_b), "a pings b after the connect", timeout=10)
        eventually(lambda: pings(h2, b, ip_a), "b pings a after the connect", timeout=10)
        assert peers_of(h1, vni).get(ip_b) == (mac_b, h2.address)
        assert resolve(h1, a, "b") == [ip_b]
        # Its default route stays where it was (the bridge network's eth0).
        [route] = default_routes(h2, b)
        assert route["dev"] == "eth0", route

        client(h2).networks.disconnect("ovnet", b)
        assert "ovnet" not in client(h2).containers.inspect(b)["NetworkSettings"]["Networks"]
        assert ifname_with(h2, b, ip_b) is None
        eventually(lambda: ip_b not in peers_of(h1, vni) and mac_b not in overlay_entries(
            h1, vni)[1], "b's entries gone from h1", timeout=5)
        assert not pings(h1, a, ip_b, count=2)
        assert not pings(h2, b, ip_a, count=2)
        eventually(lambda: resolve(h1, a, "b") == [], "b's name gone on h1", timeout=5)
        # Connected again (IPAM hands out the lowest free address again, with a new MAC), it
        # is reachable again: a must not keep sending to the MAC b had before.
        client(h2).networks.connect("ovnet", b)
        ip_b2, mac_b2 = ip_on(h2, b, "ovnet"), mac_on(h2, b, "ovnet")
        try:
            eventually(lambda: pings(h1, a, ip_b2) and pings(h2, b, ip_a),
                       "a <-> b after the reconnect", timeout=10)
        except AssertionError as e:
            raise AssertionError(
                f"{e}; b was {ip_b}/{mac_b}, is {ip_b2}/{mac_b2}; h1's peers "
                f"{peers_of(h1, vni)}; h2's peers {peers_of(h2, vni)}; a's neighbours: "
                f"{in_sandbox(h1, a, 'ip', 'neigh', 'show', 'dev', 'eth0')!r}; b's: "
                f"{in_sandbox(h2, b, 'ip', 'neigh', 'show', 'dev', 'eth1')!r}; a -> b "
                f"{pings(h1, a, ip_b2)}, b -> a {pings(h2, b, ip_a)}") from None


def test_a_reused_address_follows_its_new_host() -> None:
    """rm on one host and run at once on another: the address comes back (lowest free) with the
    same MAC (derived from it) behind another VTEP. The old endpoint's withdrawal and the new
    one's record race on every other host; the loser must not be the new container."""
    with logged_lab(3, etcd_members=1, daemon_args=ONE_ETCD) as the_lab:
        h1, h2, h3 = the_lab.hosts
        _net_id, vni = overlay(h1, "ovnet")
        seen_everywhere(the_lab, "ovnet")
        a = run(h1, "a", "ovnet")
        where, cid = h2, run(h2, "m0", "ovnet")
        first_ip = ip_on(h2, cid, "ovnet")
        eventually(lambda: pings(h1, a, first_ip), "a pings m0", timeout=10)
        reused = 0
        for i in range(1, 5):
            client(where).containers.remove(cid, force=True)
            where = h3 if where is h2 else h2
            cid = run(where, f"m{i}", "ovnet")
            ip, mac = ip_on(where, cid, "ovnet"), mac_on(where, cid, "ovnet")
            reused += ip == first_ip
            try:
                eventually(partial(holds_peer, h1, vni, ip, (mac, where.address)),
                           f"h1 holds m{i} at {where.label}", timeout=5)
                eventually(partial(pings, h1, a, ip), f"a pings m{i} ({ip}) on {where.label}",
                           timeout=5)
            except AssertionError as e:
                raise AssertionError(f"{e}: h1's peers {peers_of(h1, vni)}, a's neighbours "
                                     f"{in_sandbox(h1, a, 'ip', 'neigh')!r}") from None
        assert reused, "the address was never handed out again: nothing was tested"


# -- 6. a host killed ------------------------------------------------------------------------

def test_a_killed_host_leaves_every_peer_table(monkeypatch: pytest.MonkeyPatch) -> None:
    with etcd_env(monkeypatch, TTL), logged_lab(3, etcd_members=1, daemon_args=ONE_ETCD) as the_lab:
        h1, h2, h3 = the_lab.hosts
        _net_id, vni = overlay(h1, "ovnet")
        seen_everywhere(the_lab, "ovnet")
        c1, c2, c3 = (run(h, f"c{i + 1}", "ovnet") for i, h in enumerate(the_lab.hosts))
        ip1, ip2, ip3 = ip_on(h1, c1, "ovnet"), ip_on(h2, c2, "ovnet"), ip_on(h3, c3, "ovnet")
        mac3 = mac_on(h3, c3, "ovnet")
        for h in (h1, h2):
            eventually(partial(holds_peer, h, vni, ip3, (mac3, h3.address)),
                       f"{h.label} holds c3", timeout=10)
        eventually(lambda: pings(h1, c1, ip3), "c1 pings c3", timeout=10)
        eventually(lambda: pings(h1, c1, ip2) and pings(h2, c2, ip1), "c1 <-> c2", timeout=10)
        assert resolve(h1, c1, "c3") == [ip3]

        # The machine dies: its daemon without a goodbye, and it falls off the underlay.
        assert h3.daemon is not None
        h3.daemon.kill()
        h3.ns.ip("link", "set", "eth0", "down")
        t0 = time.monotonic()
        for h in (h1, h2):
            eventually(partial(lacks_entries, h, vni, ip3, mac3),
                       f"c3's entries gone from {h.label}", timeout=TTL + 4, interval=0.1)
        took = time.monotonic() - t0
        print(f"the killed host's peers left both other hosts after {took:.1f} s (TTL {TTL} s)")
        assert took <= TTL + 4
        eventually(lambda: resolve(h1, c1, "c3") == [], "c3's name gone on h1", timeout=3)
        # The survivors keep each other.
        assert peers_of(h1, vni).get(ip2) == (mac_on(h2, c2, "ovnet"), h2.address)
        try:
            eventually(lambda: pings(h1, c1, ip2) and pings(h2, c2, ip1),
                       "c1 <-> c2 after h3 died", timeout=5)
        except AssertionError as e:
            raise AssertionError(f"{e}: h1 peers {peers_of(h1, vni)}, h2 peers "
                                 f"{peers_of(h2, vni)}, c1 neighbours "
                                 f"{in_sandbox(h1, c1, 'ip', 'neigh')!r}") from None


# -- 7. etcd: one member lost, all lost, back ------------------------------------------------

def test_etcd_member_loss_and_full_outage() -> None:
    with logged_lab(2, etcd_members=3, daemon_args=THREE_ETCD) as the_lab:
        h1, h2 = the_lab.hosts
        assert the_lab.etcd is not None and h1.daemon is not None and h2.daemon is not None
        net_id, vni = overlay(h1, "ovnet")
        seen_everywhere(the_lab, "ovnet")
        c1 = run(h1, "c1", "ovnet")
        c2 = run(h2, "c2", "ovnet")
        ip1, ip2 = ip_on(h1, c1, "ovnet"), ip_on(h2, c2, "ovnet")
        eventually(lambda: pings(h1, c1, ip2), "c1 pings c2", timeout=10)
        pids = (h1.daemon.proc.pid if h1.daemon.proc else None,
                h2.daemon.proc.pid if h2.daemon.proc else None)

        # One member of three dies: nothing is noticed.
        m0, m1, m2 = the_lab.etcd.members
        m0.kill()
        c3 = run(h2, "c3", "ovnet")
        ip3 = ip_on(h2, c3, "ovnet")
        eventually(lambda: pings(h1, c1, ip3), "c1 pings c3 (one member down)", timeout=10)
        assert pings(h2, c3, ip1)

        # All of etcd down.
        m1.kill()
        m2.kill()
        assert pings(h1, c1, ip2) and pings(h2, c2, ip1) and pings(h1, c1, ip3)
        mounts_before = len(mounts_under(str(h1.daemon.exec_root)))
        ports_before = ovbr_ports(h1, vni)
        code, msg = run_status(h1, "late", "ovnet")
        assert code == 503 and "cluster store" in msg, (code, msg)
        with contextlib.suppress(APIError):  # 404: refused at create, nothing was made
            assert not client(h1).containers.inspect("late")["State"]["Running"]
        with contextlib.suppress(APIError):
            client(h1).containers.remove("late", force=True)
        assert ovbr_ports(h1, vni) == ports_before
        assert len(mounts_under(str(h1.daemon.exec_root))) == mounts_before
        # Local networks and containers still work.
        local = run(h1, "local", "bridge")
        assert client(h1).containers.inspect(local)["State"]["Running"]
        client(h1).containers.remove(local, force=True)
        assert pings(h1, c1, ip2)

        # etcd back: a new overlay container is reachable from the other host, with no
        # daemon restarted.
        for m in (m0, m1, m2):
            m.start()
        the_lab.etcd.wait_ready()

        def late_runs() -> bool:
            code, _ = run_status(h1, "late2", "ovnet")
            if code != 200:
                with contextlib.suppress(APIError):
                    client(h1).containers.remove("late2", force=True)
            return code == 200
        eventually(late_runs, "an overlay run after etcd returned", timeout=20, interval=0.5)
        ip_late = ip_on(h1, "late2", "ovnet")
        eventually(lambda: pings(h2, c2, ip_late), "c2 (h2) pings the new container",
                   timeout=10)
        assert (h1.daemon.proc.pid if h1.daemon.proc else None,
                h2.daemon.proc.pid if h2.daemon.proc else None) == pids
        # The refused run left no address claimed in etcd.
        claimed = {k.rsplit("/", 1)[1] for k in etcd_keys(the_lab, f"{ADDR}{net_id}/")}
        assert claimed == {ip1, ip2, ip3, ip_late}, claimed


def run_status(h: LabHost, name: str, network: str) -> tuple[int, str]:
    """Status of ``docker run`` (create then start); 200 when it runs."""
    body = {"Image": "busybox", "Cmd": ["sleep", "3600"], "HostConfig": {"NetworkMode": network}}
    code, msg = status_of(lambda: client(h).containers.create(body, name=name))
    if code != 200:
        return code, msg
    return status_of(lambda: client(h).containers.start(name))


def ovbr_ports(h: LabHost, vni: int) -> list[str]:
    """The veths in ``h``'s overlay bridge, as ``ip`` lists them."""
    assert h.daemon is not None
    ns = h.daemon.exec_root / "overlay" / f"ov-{vni}"
    out = sh("nsenter", f"--net={ns}", "ip", "-j", "link", "show", "master", "ovbr0").stdout
    return sorted(str(link["ifname"]) for link in json.loads(out or "[]")
                  if not str(link["ifname"]).startswith("vx-"))


# -- 8. daemon restart -------------------------------------------------------------------------

def test_daemon_restart_keeps_overlay_containers_reachable() -> None:
    with logged_lab(2, etcd_members=1, daemon_args=ONE_ETCD) as the_lab:
        h1, h2 = the_lab.hosts
        assert h2.daemon is not None
        _net_id, vni = overlay(h1, "ovnet")
        seen_everywhere(the_lab, "ovnet")
        c1 = run(h1, "c1", "ovnet")
        c2 = run(h2, "c2", "ovnet")
        ip1, ip2 = ip_on(h1, c1, "ovnet"), ip_on(h2, c2, "ovnet")
        eventually(lambda: pings(h1, c1, ip2), "c1 pings c2", timeout=10)
        peers_h2 = peers_of(h2, vni)
        peers_h1 = peers_of(h1, vni)

        h2.daemon.stop()
        # The data plane does not need the daemon.
        assert pings(h1, c1, ip2)
        h2.daemon.start()
        assert client(h2).containers.inspect(c2)["State"]["Running"]
        eventually(lambda: pings(h1, c1, ip2) and pings(h2, c2, ip1),
                   "c1 <-> c2 after h2's restart", timeout=10)
        assert peers_of(h2, vni) == peers_h2 and peers_of(h1, vni) == peers_h1
        assert resolve(h2, c2, "c1") == [ip1] and resolve(h1, c1, "c2") == [ip2]
        # The restarted host still joins new containers to the same overlay.
        c3 = run(h2, "c3", "ovnet")
        ip3 = ip_on(h2, c3, "ovnet")
        eventually(lambda: pings(h1, c1, ip3), "c1 pings c3, run after the restart",
                   timeout=10)
