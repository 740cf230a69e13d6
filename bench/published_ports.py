"""Published ports (issue 12): what ``-p`` adds to ``run``, and whether 1,000 published ports
slow the next start down.

    .venv/bin/python bench/published_ports.py        # BENCH_PORTS=1000 by default

Two figures, each a median over interleaved samples so the machine's drift hits both sides:

- ``run -p`` minus ``run`` (create + start through the API, one TCP port published): the
  target is at most 2 ms more;
- a start with one port when BENCH_PORTS ports are published (held by containers with ten
  ports each, the same number of map elements and sockets as that many containers) against
  the same start with none published: the target is at most 10% slower.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from nsnet.client.api import Client
from nsnet.testing.hosts import daemon_host

SAMPLES = 21


def body(ports: dict[int, int] | None) -> dict[str, object]:
    b: dict[str, object] = {"Image": "busybox", "Cmd": ["sleep", "3600"],
                            "HostConfig": {"NetworkMode": "benchP"}}
    if ports:
        b["ExposedPorts"] = {f"{cp}/tcp": {} for cp in ports}
        b["HostConfig"] = {"NetworkMode": "benchP", "PortBindings": {
            f"{cp}/tcp": [{"HostIp": "", "HostPort": str(hp)}] for cp, hp in ports.items()}}
    return b


def run_ms(c: Client, ports: dict[int, int] | None) -> tuple[float, str]:
    t = time.perf_counter()
    cid = str(c.containers.create(body(ports))["Id"])
    c.containers.start(cid)
    return (time.perf_counter() - t) * 1000, cid


def sample(c: Client, ports: dict[int, int] | None) -> float:
    ms, cid = run_ms(c, ports)
    c.containers.remove(cid, force=True)
    return ms


def main() -> int:
    total = int(os.environ.get("BENCH_PORTS", "1000"))
    results: dict[str, object] = {}
    with daemon_host(prefix="nsbenchp") as d:
        c = d.client()
        c.networks.create({"Name": "benchP", "IPAM": {"Config": [{"Subnet": "10.190.0.0/16"}]}})
        for _ in range(3):  # warm-up: first namespace, first nft change, first socket
            sample(c, {80: 20080})
            sample(c, None)
        plain: list[float] = []
        pub: list[float] = []
        for _ in range(SAMPLES):
            plain.append(sample(c, None))
            pub.append(sample(c, {80: 20080}))
        extra = statistics.median(pub) - statistics.median(plain)
        print(f"run     median {statistics.median(plain):7.2f} ms\n"
              f"run -p  median {statistics.median(pub):7.2f} ms  (+{extra:.2f} ms)"
              f"  {'ok' if extra <= 2 else 'OVER target 2 ms'}")
        results["run_ms"] = round(statistics.median(plain), 3)
        results["run_p_ms"] = round(statistics.median(pub), 3)

        first = [sample(c, {80: 20080}) for _ in range(SAMPLES)]
        held: list[str] = []
        port = 30000
        t0 = time.perf_counter()
        while port < 30000 + total:
            ports = {1000 + i: port + i for i in range(min(10, 30000 + total - port))}
            held.append(run_ms(c, ports)[1])
            port += len(ports)
        print(f"published {total} ports on {len(held)} containers in "
              f"{time.perf_counter() - t0:.1f} s")
        at_scale = [sample(c, {80: 20080}) for _ in range(SAMPLES)]
        ratio = statistics.median(at_scale) / statistics.median(first)
        print(f"start with 1 port: {statistics.median(first):.2f} ms with none published, "
              f"{statistics.median(at_scale):.2f} ms with {total}: {ratio:.3f}x"
              f"  {'ok' if ratio <= 1.10 else 'OVER target 1.10x'}")
        results["first_start_ms"] = round(statistics.median(first), 3)
        results[f"start_at_{total}_ports_ms"] = round(statistics.median(at_scale), 3)
        results["ports_scale_ratio"] = round(ratio, 3)
        for cid in held:
            c.containers.remove(cid, force=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
