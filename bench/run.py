"""nsnet benchmark: API-level latencies of the networking operations, in one run.

Runs a daemon in a throwaway host namespace (like the tests) and times, through the API socket:
network create / rm, container run (create + start), connect, disconnect, and connect again with
many containers on the host, so the scale ratio comes from one run on one noisy machine.

    make bench                       # BENCH_SCALE=1000 by default
    BENCH_SCALE=200 make bench       # quicker
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import dns.message
import dns.rdatatype
import overlay_convergence
import overlay_dataplane
import overlay_scale
import published_ports

from nsnet.client.api import Client
from nsnet.kernel.netns import NamespaceThread
from nsnet.testing.hosts import Daemon, daemon_host

N = 20
TARGETS_MS = {"network create": 5, "network rm": 5, "connect": 8, "disconnect": 5, "run": 100}


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))]


def run_body(net: str) -> dict[str, object]:
    return {"Image": "busybox", "Cmd": ["sleep", "3600"],
            "HostConfig": {"NetworkMode": net}}


def start_container(c: Client, net: str, name: str) -> str:
    cid = c.containers.create(run_body(net), name=name)["Id"]
    c.containers.start(cid)
    return str(cid)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def daemon_pid(d: Daemon) -> int:
    """nsnetd runs under nsenter, which execs it: the Popen pid is the daemon."""
    assert d.proc is not None
    return d.proc.pid


def dnsperf(c: Client, cid: str, names: list[str], seconds: int = 5) -> dict[str, float]:
    """dnsperf inside a container's namespace against its resolver, Docker's way to measure."""
    sandbox = c.containers.inspect(cid)["NetworkSettings"]["SandboxKey"]
    with tempfile.NamedTemporaryFile("w", suffix=".q", delete=False) as f:
        for n in names:
            f.write(f"{n} A\n")
        qfile = f.name
    try:
        out = subprocess.run(["nsenter", f"--net={sandbox}", "dnsperf", "-s", "127.0.0.11",
                              "-p", "53", "-d", qfile, "-l", str(seconds), "-c", "4", "-q",
                              "500"], capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        os.unlink(qfile)

    def grab(label: str) -> float:
        m = re.search(label + r"\s*([0-9.]+)", out)
        return float(m.group(1)) if m else float("nan")

    return {"qps": grab("Queries per second:"), "lost": grab("Queries lost:"),
            "sent": grab("Queries sent:"), "avg_latency_ms": grab(r"Average Latency \(s\):") * 1000}


def resolve_delay_ms(ns: NamespaceThread, sandbox: str, name: str, expect: str) -> float:
    """Time until ``name`` answers ``expect`` at 127.0.0.11, asked from inside ``sandbox``."""
    sock = ns.socket(sandbox, socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    q = dns.message.make_query(name, dns.rdatatype.A).to_wire()
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < 2:
            sock.sendto(q, ("127.0.0.11", 53))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            r = dns.message.from_wire(data)
            if any(expect in rr.to_text() for rr in r.answer):
                return (time.perf_counter() - t0) * 1000
        return float("inf")
    finally:
        sock.close()


def docker_dns(names: int = 20) -> dict[str, float] | None:
    """The same dnsperf run against Docker's embedded DNS, when a Docker daemon is here.

    Needs a local busybox image in Docker (nothing is pulled). Traffic stays inside the
    container's namespace (127.0.0.11). None when there is no usable Docker daemon.
    """
    sock = "/var/run/docker.sock"
    if not os.path.exists(sock) or shutil.which("dnsperf") is None:
        return None
    try:
        import docker
    except ImportError:
        return None
    try:
        dc = docker.DockerClient(base_url=f"unix://{sock}", timeout=30)
        dc.ping()
        dc.images.get("busybox")
    except Exception:  # noqa: BLE001 - no daemon or no image: no comparison
        return None
    net = dc.networks.create(f"nsnet-bench-{os.getpid()}")
    ctrs = []
    try:
        for i in range(names):
            ctrs.append(dc.containers.run("busybox", "sleep 600", detach=True,
                                          network=net.name, name=f"nsbench{os.getpid()}-{i}"))
        asker = ctrs[0]
        asker.reload()
        sandbox = asker.attrs["NetworkSettings"]["SandboxKey"]
        with tempfile.NamedTemporaryFile("w", suffix=".q", delete=False) as f:
            for c in ctrs:
                f.write(f"{c.name} A\n")
            qfile = f.name
        try:
            out = subprocess.run(["nsenter", f"--net={sandbox}", "dnsperf", "-s", "127.0.0.11",
                                  "-p", "53", "-d", qfile, "-l", "5", "-c", "4", "-q", "500"],
                                 capture_output=True, text=True, timeout=120).stdout
        finally:
            os.unlink(qfile)
        qps = re.search(r"Queries per second:\s*([0-9.]+)", out)
        lat = re.search(r"Average Latency \(s\):\s*([0-9.]+)", out)
        return {"qps": float(qps.group(1)) if qps else float("nan"),
                "avg_latency_ms": float(lat.group(1)) * 1000 if lat else float("nan")}
    finally:
        for c in ctrs:
            c.remove(force=True)
        net.remove()


def report(name: str, values: list[float]) -> dict[str, float]:
    med = statistics.median(values)
    p99 = pct(values, 99)
    target = TARGETS_MS.get(name)
    mark = "" if target is None else ("  ok" if med <= target else f"  OVER target {target} ms")
    print(f"{name:<28} median {med:8.2f} ms   p99 {p99:8.2f} ms   n={len(values)}{mark}")
    return {"median_ms": round(med, 3), "p99_ms": round(p99, 3), "n": len(values)}


def main() -> int:
    scale = int(os.environ.get("BENCH_SCALE", "1000"))
    results: dict[str, object] = {}
    with daemon_host(prefix="nsbench") as d:
        c = d.client()
        # Warm up the paths once (imports, first nft table, first namespace).
        c.networks.remove(c.networks.create({"Name": "warm"})["Id"])

        ids: list[str] = []
        create_ms = [timed(lambda i=i: ids.append(c.networks.create({"Name": f"n{i}"})["Id"]))
                     for i in range(N)]
        rm_ms = [timed(lambda x=x: c.networks.remove(x)) for x in ids]
        results["network create"] = report("network create", create_ms)
        results["network rm"] = report("network rm", rm_ms)

        c.networks.create({"Name": "benchA"})
        c.networks.create({"Name": "benchB"})
        cids: list[str] = []
        run_ms = [timed(lambda i=i: cids.append(start_container(c, "benchA", f"r{i}")))
                  for i in range(N)]
        results["run"] = report("run", run_ms)

        def connect_round() -> tuple[list[float], list[float]]:
            con = [timed(lambda x=x: c.networks.connect("benchB", x)) for x in cids]
            dis = [timed(lambda x=x: c.networks.disconnect("benchB", x)) for x in cids]
            return con, dis

        connect_round()  # warm-up: first use of benchB's paths
        con1, dis1 = connect_round()
        results["connect"] = report("connect", con1)
        results["disconnect"] = report("disconnect", dis1)

        # DNS: a new name answers within 10 ms of run/connect returning (asked from a peer).
        ns = NamespaceThread()
        asker = cids[0]
        asker_ns = c.containers.inspect(asker)["NetworkSettings"]["SandboxKey"]
        delays = []
        for i in range(10):
            t0 = time.perf_counter()
            new = start_container(c, "benchA", f"dnsnew{i}")
            api_ms = (time.perf_counter() - t0) * 1000
            ip = c.containers.inspect(new)["NetworkSettings"]["Networks"]["benchA"]["IPAddress"]
            delays.append(resolve_delay_ms(ns, asker_ns, f"dnsnew{i}", ip))
            c.containers.remove(new, force=True)
            del api_ms
        results["dns name visible after run"] = report("dns name visible after run", delays)
        has_dnsperf = shutil.which("dnsperf") is not None
        rss_before = rss_kib(daemon_pid(d))
        if has_dnsperf:
            perf1 = dnsperf(c, asker, [f"r{i}" for i in range(N)])
            print(f"dns (dnsperf, {N} containers): {perf1['qps']:.0f} q/s, lost "
                  f"{perf1['lost']:.0f}/{perf1['sent']:.0f}, avg latency "
                  f"{perf1['avg_latency_ms']:.2f} ms"
                  f"  {'ok' if perf1['qps'] >= 40000 else 'UNDER target 40000 q/s'}")
            results["dns"] = perf1
            theirs = docker_dns()
            if theirs is None:
                print("no Docker daemon with a busybox image here: no Docker DNS comparison")
            else:
                r = perf1["qps"] / theirs["qps"]
                lower = perf1["avg_latency_ms"] < theirs["avg_latency_ms"]
                print(f"Docker's embedded DNS, same run: {theirs['qps']:.0f} q/s, avg latency "
                      f"{theirs['avg_latency_ms']:.2f} ms; nsnet/Docker {r:.2f}x"
                      f"  {'ok' if r >= 1.25 else 'UNDER target 1.25x'}; latency "
                      f"{'lower' if lower else 'NOT lower'}")
                results["docker_dns"] = theirs
        else:
            print("dnsperf not installed: DNS throughput not measured")

        if scale > N:
            t0 = time.perf_counter()
            extra = 0
            for i in range(scale - N):
                start_container(c, "benchA", f"s{i}")
                extra += 1
            print(f"started {extra} more containers in {time.perf_counter() - t0:.1f} s "
                  f"({N + extra} on the host)")
            # Steady state, not the start storm's tail: the kernel finishes deferred work for
            # every new interface and cgroup (DAD, MLD, cgroup release) in the seconds after.
            time.sleep(10)
            con2, dis2 = connect_round()
            results[f"connect at {N + extra}"] = report(f"connect at {N + extra}", con2)
            results[f"disconnect at {N + extra}"] = report(f"disconnect at {N + extra}", dis2)
            ratio = statistics.median(con2) / statistics.median(con1)
            verdict = "ok" if ratio <= 1.3 else "OVER target 1.3"
            print(f"connect ratio at {N + extra} vs {N} containers: {ratio:.2f}x  {verdict}")
            results["connect_scale_ratio"] = round(ratio, 3)
            rss_after = rss_kib(daemon_pid(d))
            per = (rss_after - rss_before) / extra
            print(f"daemon memory: {rss_before} KiB -> {rss_after} KiB, {per:.1f} KiB per "
                  f"container  {'ok' if per < 20 else 'OVER target 20 KiB'}")
            results["daemon_kib_per_container"] = round(per, 2)
            if has_dnsperf:
                names = [f"s{i}" for i in range(0, extra, max(1, extra // 200))]
                perf2 = dnsperf(c, asker, names)
                r = perf2["qps"] / perf1["qps"]
                print(f"dns (dnsperf, {N + extra} containers): {perf2['qps']:.0f} q/s, lost "
                      f"{perf2['lost']:.0f}/{perf2['sent']:.0f}, {r:.2f}x of the small case"
                      f"  {'ok' if r >= 0.9 else 'UNDER target 0.9x'}")
                results["dns_at_scale"] = perf2
        print(json.dumps(results))
    # Issue 10: the overlay figures, each in a lab of its own (BENCH_HOSTS, BENCH_PER_HOST,
    # BENCH_CONVERGENCE_N size them; see each module's docstring).
    for overlay_bench in (overlay_dataplane, overlay_convergence, overlay_scale):
        overlay_bench.main()
    # Issue 12: "run -p" against "run", and a start with 1,000 ports published.
    published_ports.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
