"""Overlay at scale on one machine: hosts x containers, reachability, daemon memory and CPU.

A lab of BENCH_HOSTS hosts (one etcd member, one nsnetd each with the cluster flags), one
overlay network, BENCH_PER_HOST containers started on every host at once (one client thread
per host, as independent machines would). Then:

- the full mesh: every host's overlay namespace must hold a permanent neighbour entry for
  every remote container (read back with ``ip -j neigh`` in that namespace, not from the
  daemon), timed from the last start returning;
- reachability: every container sends ICMP echoes to BENCH_SAMPLE random containers on other
  hosts, from a raw socket opened in its own namespace (``overlay_probe.probe_pairs``);
- memory: VmRSS of each nsnetd against one single-host daemon (no cluster flags) running
  BENCH_PER_HOST containers on a bridge network, measured in the same run (target <= 1.5x);
- CPU: each daemon's user+system time over the start storm; the lab daemon's excess over the
  single-host one, divided by the remote endpoints it programmed, is the cost of one remote
  peer (watch event, decode, two netlink requests, the DNS table);
- etcd: bytes per endpoint and address record as stored (``etcdctl get -w json``), and the
  database size, for the design note's arithmetic at 1,000 hosts;
- the removal storm: every container removed at once, timed until no host holds an entry.

    .venv/bin/python bench/overlay_scale.py                       # 10 hosts x 50 (issue 10)
    BENCH_HOSTS=4 BENCH_PER_HOST=10 .venv/bin/python bench/overlay_scale.py
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import resource
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from foreign_leaks import foreign_leaks_tolerated
from overlay_convergence import ARGS, client, container_body, make_overlay, overlay_ns
from overlay_probe import icmp_socket, probe_pairs

from nsnet.client.api import Client
from nsnet.kernel.netns import NamespaceThread
from nsnet.testing.hosts import Daemon, daemon_host, sh
from nsnet.testing.multihost import Lab, LabHost, lab

HOSTS = int(os.environ.get("BENCH_HOSTS", "10"))
PER_HOST = int(os.environ.get("BENCH_PER_HOST", "50"))
SAMPLE = int(os.environ.get("BENCH_SAMPLE", "5"))
TARGET_RSS_RATIO = 1.5
SETTLE_S = 5.0
IDLE_S = 5.0
EXTRA = 50  # containers started on h1 alone to price a remote peer on the others
MESH_TIMEOUT_S = 120.0
SUBNET = "10.88.0.0/16"
CLK_TCK = os.sysconf("SC_CLK_TCK")


NEIGH_SYSCTL = "/proc/sys/net/ipv4/neigh/default/gc_thresh{}"
NEIGH_RAISED = {2: 8192, 3: 16384}


@contextlib.contextmanager
def neighbour_room() -> Iterator[dict[int, int]]:
    """Room in the kernel's ARP table for the run; the old limits come back after.

    The IPv4 neighbour table is one per kernel, shared by every namespace, and its hard
    limit (gc_thresh3, 1024 by default) counts every container's dynamic entries: ten
    simulated hosts x 50 containers each talking to 5 others and answering 5 hold ~5,000,
    and past 1,024 new entries fail ("neighbor table overflow", the echo is discarded
    before it leaves). On real machines each host has its own table; this lab puts ten in
    one kernel, so the limit is raised for the run (never lowered) and the overflow count
    is reported. The overlay's own peer entries are permanent and do not count.
    """
    old = {i: int(Path(NEIGH_SYSCTL.format(i)).read_text()) for i in NEIGH_RAISED}
    try:
        for i, v in NEIGH_RAISED.items():
            if v > old[i]:
                Path(NEIGH_SYSCTL.format(i)).write_text(str(v))
        yield old
    finally:
        for i, v in old.items():
            Path(NEIGH_SYSCTL.format(i)).write_text(str(v))


def arp_table_fulls() -> int:
    """Times any namespace failed to add an ARP entry for a full table (all CPUs)."""
    lines = Path("/proc/net/stat/arp_cache").read_text().splitlines()
    col = lines[0].split().index("table_fulls")
    return sum(int(line.split()[col], 16) for line in lines[1:])


def proc_status_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pid_of(d: Daemon | None) -> int:
    """nsnetd runs under nsenter, which execs it: the Popen pid is the daemon."""
    assert d is not None and d.proc is not None
    return d.proc.pid


def start_many(c: Client, net: str, prefix: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        cid = c.containers.create(container_body(net, None), name=f"{prefix}{i}")["Id"]
        c.containers.start(cid)
        ids.append(str(cid))
    return ids


def remove_all(c: Client, ids: list[str]) -> None:
    for cid in ids:
        c.containers.remove(cid, force=True)


# ---- the single-host reference -----------------------------------------------------------


def single_host(n: int) -> dict[str, float]:
    """One daemon, no cluster, ``n`` containers on a bridge network: RSS and CPU."""
    mine: set[str] = set()
    with foreign_leaks_tolerated(lambda: mine), daemon_host(prefix="nsbsc") as d:
        mine.add(d.host.name)
        c = d.client()
        c.networks.create({"Name": "brscale"})
        pid = pid_of(d)
        rss0, cpu0 = proc_status_kib(pid), cpu_s(pid)
        t = time.perf_counter()
        ids = start_many(c, "brscale", "s", n)
        wall = time.perf_counter() - t
        cpu1 = cpu_s(pid)
        time.sleep(SETTLE_S)
        rss1 = proc_status_kib(pid)
        remove_all(c, ids)
    return {"rss_idle_kib": rss0, "rss_kib": rss1, "cpu_s": round(cpu1 - cpu0, 3),
            "wall_s": round(wall, 2)}


# ---- the lab ----------------------------------------------------------------------------


def permanent_neighbours(h: LabHost, vni: int) -> int:
    p = sh("nsenter", f"--net={overlay_ns(h, vni)}", "ip", "-j", "-4", "neigh", "show",
           "dev", f"vx-{vni}", "nud", "permanent", check=False)
    return len(json.loads(p.stdout or "[]")) if p.returncode == 0 else -1


def wait_mesh(the_lab: Lab, vni: int, want: int | None, timeout: float) -> float | None:
    """Seconds until every host's overlay holds exactly ``want`` peer entries (None: one
    per container running on the other hosts, asked of their daemons); None if not within
    ``timeout`` (the counts are printed then)."""
    t = time.perf_counter()
    counts: list[int] = []
    if want is None:
        running = [len(client(h).containers.list()) for h in the_lab.hosts]
        wanted = [sum(running) - r for r in running]
    else:
        wanted = [want] * len(the_lab.hosts)
    while time.perf_counter() - t < timeout:
        counts = [permanent_neighbours(h, vni) for h in the_lab.hosts]
        if counts == wanted:
            return time.perf_counter() - t
        time.sleep(0.1)
    print(f"  mesh not complete after {timeout:.0f} s: entries per host {counts}, want "
          f"{wanted}")
    return None


def etcd_records(the_lab: Lab, prefix: str) -> dict[str, float]:
    """Count and mean stored size (key + value bytes) of the records under ``prefix``."""
    assert the_lab.etcd is not None and the_lab.etcd_ns is not None
    p = sh("etcdctl", "--endpoints", ",".join(the_lab.etcd.endpoints), "get", prefix,
           "--prefix", "-w", "json", ns=the_lab.etcd_ns.name)
    kvs = json.loads(p.stdout).get("kvs", [])
    sizes = [len(base64.b64decode(kv["key"])) + len(base64.b64decode(kv.get("value", "")))
             for kv in kvs]
    return {"count": len(sizes), "mean_bytes": round(statistics.mean(sizes), 1) if sizes
            else 0.0}


def etcd_db_bytes(the_lab: Lab) -> int:
    assert the_lab.etcd is not None and the_lab.etcd_ns is not None
    p = sh("etcdctl", "--endpoints", the_lab.etcd.endpoints[0], "endpoint", "status", "-w",
           "json", ns=the_lab.etcd_ns.name)
    return int(json.loads(p.stdout)[0]["Status"]["dbSize"])


def reachability(the_lab: Lab, nst: NamespaceThread,
                 placed: list[tuple[int, str, str]]) -> dict[str, Any]:
    """Every container echoes SAMPLE random containers of other hosts, all at once."""
    rng = random.Random(10)
    socks: dict[str, socket.socket] = {}
    pairs: list[tuple[socket.socket, str]] = []
    try:
        for host_i, sandbox, _ in placed:
            sock = socks[sandbox] = icmp_socket(nst, sandbox)
            remote = [ip for j, _, ip in placed if j != host_i]
            for ip in rng.sample(remote, min(SAMPLE, len(remote))):
                pairs.append((sock, ip))
        t, fulls = time.perf_counter(), arp_table_fulls()
        got = probe_pairs(pairs, timeout=10.0)
        wall, fulls = time.perf_counter() - t, arp_table_fulls() - fulls
    finally:
        for s in socks.values():
            s.close()
    answered = [x for x in got if x is not None]
    return {"pairs": len(pairs), "answered": len(answered), "wall_s": round(wall, 2),
            "arp_table_fulls": fulls,
            "last_reply_after_first_send_ms": round(max(answered), 1) if answered else None}


def remote_peer_cost(the_lab: Lab, vni: int, pids: list[int],
                     ids: list[list[str]]) -> float | None:
    """CPU ms one host spends on one container started on another host (the watch event,
    its decode, the two netlink requests, the DNS table), from hosts that start nothing:
    their CPU over EXTRA starts on h1, less their idle rate (keepalives, node watch) over
    the same time. The containers join ``ids[0]`` and are probed and removed with it."""
    if len(the_lab.hosts) < 2:
        return None
    others = pids[1:]
    t, idle0 = time.perf_counter(), [cpu_s(p) for p in others]
    time.sleep(IDLE_S)
    idle_rate = [(cpu_s(p) - c) / (time.perf_counter() - t) for p, c in zip(others, idle0,
                                                                            strict=True)]
    t, c0 = time.perf_counter(), [cpu_s(p) for p in others]
    ids[0].extend(start_many(client(the_lab.hosts[0]), "ovscale", "extra", EXTRA))
    if wait_mesh(the_lab, vni, None, MESH_TIMEOUT_S) is None:
        return None
    time.sleep(0.5)  # the last events' DNS and log work
    elapsed = time.perf_counter() - t
    per = [(cpu_s(p) - c - r * elapsed) / EXTRA * 1000
           for p, c, r in zip(others, c0, idle_rate, strict=True)]
    return round(statistics.median(per), 3)


def run_lab(nst: NamespaceThread) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t_lab = time.perf_counter()
    mine: set[str] = set()
    with foreign_leaks_tolerated(lambda: mine), \
            lab(HOSTS, daemon_args=ARGS, etcd_members=1) as the_lab:
        mine.update(ns.name for ns in the_lab.all_namespaces())
        out["lab_up_s"] = round(time.perf_counter() - t_lab, 1)
        vni = make_overlay(the_lab, "ovscale", SUBNET)
        pids = [pid_of(h.daemon) for h in the_lab.hosts]
        out["rss_idle_kib"] = [proc_status_kib(p) for p in pids]
        cpu0 = [cpu_s(p) for p in pids]

        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=HOSTS) as pool:
            futs = [pool.submit(start_many, client(h), "ovscale", f"{h.label}c", PER_HOST)
                    for h in the_lab.hosts]
            ids = [f.result() for f in futs]
        out["start_storm_s"] = round(time.perf_counter() - t, 2)
        mesh = wait_mesh(the_lab, vni, (HOSTS - 1) * PER_HOST, MESH_TIMEOUT_S)
        out["mesh_complete_after_last_start_s"] = None if mesh is None else round(mesh, 2)
        out["cpu_s"] = [round(cpu_s(p) - c0, 3) for p, c0 in zip(pids, cpu0, strict=True)]

        time.sleep(SETTLE_S)
        out["rss_kib"] = [proc_status_kib(p) for p in pids]
        out["remote_peer_cpu_ms"] = remote_peer_cost(the_lab, vni, pids, ids)

        placed: list[tuple[int, str, str]] = []
        for i, h in enumerate(the_lab.hosts):
            c = client(h)
            for cid in ids[i]:
                ns = c.containers.inspect(cid)["NetworkSettings"]
                placed.append((i, ns["SandboxKey"], ns["Networks"]["ovscale"]["IPAddress"]))
        out["reachability"] = reachability(the_lab, nst, placed)

        out["etcd_endpoints"] = etcd_records(the_lab, "/nsnet/v1/endpoints/")
        out["etcd_addresses"] = etcd_records(the_lab, "/nsnet/v1/ipam/addr/")
        out["etcd_nodes"] = etcd_records(the_lab, "/nsnet/v1/nodes/")
        out["etcd_db_bytes"] = etcd_db_bytes(the_lab)

        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=HOSTS) as pool:
            for f in [pool.submit(remove_all, client(h), ids[i])
                      for i, h in enumerate(the_lab.hosts)]:
                f.result()
        out["remove_storm_s"] = round(time.perf_counter() - t, 2)
        gone = wait_mesh(the_lab, vni, 0, MESH_TIMEOUT_S)
        out["mesh_empty_after_last_remove_s"] = None if gone is None else round(gone, 2)
    return out


def report(single: dict[str, float], res: dict[str, Any]) -> None:
    rss = res["rss_kib"]
    ratios = [r / single["rss_kib"] for r in rss]
    remote = (HOSTS - 1) * PER_HOST
    cpu_med = statistics.median(res["cpu_s"])
    reach = res["reachability"]
    mesh = res["mesh_complete_after_last_start_s"]
    ep = res["etcd_endpoints"]
    print(f"overlay scale, {HOSTS} hosts x {PER_HOST} containers, one overlay, 1 etcd member:")
    print(f"  lab up (etcd, {HOSTS} daemons)         {res['lab_up_s']:.1f} s")
    print(f"  start storm ({HOSTS * PER_HOST} containers)      {res['start_storm_s']:.1f} s"
          f"  (single host, {PER_HOST} on a bridge: {single['wall_s']:.1f} s)")
    print(f"  full mesh ({remote} entries per host)    "
          f"{'NOT complete' if mesh is None else f'{mesh:.2f} s after the last start'}")
    print(f"  reachability: {reach['answered']}/{reach['pairs']} pairs answered, the last "
          f"{reach['last_reply_after_first_send_ms']} ms after the first echo left "
          f"(one thread sends them all first)  "
          f"{'ok' if reach['answered'] == reach['pairs'] else 'MISSED'}; ARP table full "
          f"{reach['arp_table_fulls']} times")
    print(f"  daemon RSS: single host {single['rss_kib']} KiB ({single['rss_idle_kib']} idle);"
          f" lab hosts median {statistics.median(rss):.0f}, max {max(rss)} KiB "
          f"(idle median {statistics.median(res['rss_idle_kib']):.0f})")
    print(f"  RSS ratio lab/single: median {statistics.median(ratios):.2f}x, max "
          f"{max(ratios):.2f}x  {'ok' if max(ratios) <= TARGET_RSS_RATIO else 'OVER target'}"
          f" {TARGET_RSS_RATIO}x")
    print(f"  daemon CPU over the start storm: single {single['cpu_s']:.2f} s, lab median "
          f"{cpu_med:.2f} s ({remote} remote peers per host)")
    print(f"  CPU per remote peer on a host that starts nothing ({EXTRA} starts on h1, idle "
          f"rate subtracted): {res['remote_peer_cpu_ms']} ms")
    print(f"  etcd: {ep['count']} endpoint records, {ep['mean_bytes']:.0f} B each (key+value);"
          f" {res['etcd_addresses']['count']} address claims, "
          f"{res['etcd_addresses']['mean_bytes']:.0f} B each; node records "
          f"{res['etcd_nodes']['mean_bytes']:.0f} B; db {res['etcd_db_bytes'] / 1e6:.1f} MB")
    gone = res["mesh_empty_after_last_remove_s"]
    print(f"  remove storm {res['remove_storm_s']:.1f} s; every entry gone "
          f"{'NOT within timeout' if gone is None else f'{gone:.2f} s after the last remove'}")
    print(json.dumps({"overlay_scale": {"hosts": HOSTS, "per_host": PER_HOST,
                                        "single": single, **res,
                                        "rss_ratio_max": round(max(ratios), 3)}}))


def main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    t = time.perf_counter()
    single = single_host(PER_HOST)
    nst = NamespaceThread()
    try:
        with neighbour_room() as old:
            res = run_lab(nst)
    finally:
        nst.close()
    print(f"  (ARP table limits gc_thresh2/3 raised from {old[2]}/{old[3]} to "
          f"{NEIGH_RAISED[2]}/{NEIGH_RAISED[3]} for the lab, restored after: one kernel holds "
          f"{HOSTS} hosts' tables here)")
    report(single, res)
    print(f"  (whole scale run {time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
