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
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from nsnet.client.api import Client
from nsnet.testing.hosts import daemon_host

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

        con1, dis1 = connect_round()
        results["connect"] = report("connect", con1)
        results["disconnect"] = report("disconnect", dis1)

        if scale > N:
            t0 = time.perf_counter()
            extra = 0
            for i in range(scale - N):
                start_container(c, "benchA", f"s{i}")
                extra += 1
            print(f"started {extra} more containers in {time.perf_counter() - t0:.1f} s "
                  f"({N + extra} on the host)")
            con2, dis2 = connect_round()
            results[f"connect at {N + extra}"] = report(f"connect at {N + extra}", con2)
            results[f"disconnect at {N + extra}"] = report(f"disconnect at {N + extra}", dis2)
            ratio = statistics.median(con2) / statistics.median(con1)
            verdict = "ok" if ratio <= 1.3 else "OVER target 1.3"
            print(f"connect ratio at {N + extra} vs {N} containers: {ratio:.2f}x  {verdict}")
            results["connect_scale_ratio"] = round(ratio, 3)
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
