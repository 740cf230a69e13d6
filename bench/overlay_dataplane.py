"""Overlay throughput: nsnet's data plane against a hand-built VXLAN pair, side by side.

Two lab hosts (nsnet.testing.multihost) on one underlay switch. The reference is the thinnest
VXLAN Linux offers: a point-to-point device (``remote`` set, learning off) in each host's own
namespace, iperf3 between the hosts' overlay addresses. nsnet's path is what a container gets:
a veth into the overlay namespace's bridge, the VXLAN device born in that namespace from the
host's netlink socket, permanent neighbour and FDB entries, iperf3 between two "container"
namespaces. Same MTU (1450) on both. Rounds alternate so drift on a noisy machine hits both.

    .venv/bin/python bench/overlay_dataplane.py            # 3 rounds of 3 s each
    ROUNDS=5 BENCH_SECONDS=5 .venv/bin/python bench/overlay_dataplane.py

Target (issue 10): nsnet >= 0.95x the hand-built pair.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from nsnet.kernel.netns import NamespaceThread
from nsnet.kernel.vxlan import DEFAULT_MTU
from nsnet.testing.hosts import sh
from nsnet.testing.multihost import LabHost, LabOverlay, lab

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "3"))
TARGET = 0.95
REF_VNI, REF_PORT = 100, 4790  # the reference pair's own port: it never meets nsnet's socket


def hand_built_pair(a: LabHost, b: LabHost) -> tuple[str, str]:
    """``vxref`` in each host namespace pointing at the other; their overlay addresses."""
    ips = ("10.98.0.1", "10.98.0.2")
    for h, peer, ip in ((a, b, ips[0]), (b, a, ips[1])):
        sh("ip", "-n", h.ns.name, "link", "add", "vxref", "mtu", str(DEFAULT_MTU), "type",
           "vxlan", "id", str(REF_VNI), "local", h.address, "remote", peer.address, "dstport",
           str(REF_PORT), "nolearning")
        sh("ip", "-n", h.ns.name, "addr", "add", f"{ip}/24", "dev", "vxref")
        sh("ip", "-n", h.ns.name, "link", "set", "vxref", "up")
    return ips


def iperf(server_ns: str, client_ns: str, server_ip: str) -> float:
    """Gbit/s of one TCP iperf3 run from ``client_ns`` to a server in ``server_ns``."""
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B",
                            server_ip], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            p = sh("iperf3", "-J", "-c", server_ip, "-t", str(SECONDS), ns=client_ns,
                   check=False, timeout=SECONDS + 30)
            try:
                out = json.loads(p.stdout)
                return float(out["end"]["sum_received"]["bits_per_second"]) / 1e9
            except (ValueError, KeyError):
                pass  # not listening yet ("unable to connect"), or worse
            if time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 failed: {p.stdout[-300:]} {p.stderr[-300:]}")
            time.sleep(0.1)
    finally:
        srv.kill()
        srv.wait()


def main() -> int:
    if not shutil.which("iperf3"):
        print("iperf3 not installed (make system-deps): overlay throughput not measured")
        return 0
    nst = NamespaceThread()
    try:
        with lab(2, daemons=False) as the_lab:
            h1, h2 = the_lab.hosts
            ref_ips = hand_built_pair(h1, h2)
            ov = LabOverlay(the_lab, nst, vni=4096)
            try:
                c1, c2 = ov.attach(h1, 1), ov.attach(h2, 2)
                ov.program()
                ref: list[float] = []
                ours: list[float] = []
                for _ in range(ROUNDS):
                    ref.append(iperf(h1.ns.name, h2.ns.name, ref_ips[0]))
                    ours.append(iperf(c1.ns.name, c2.ns.name, c1.ip))
            finally:
                ov.close()
    finally:
        nst.close()
    r, o = statistics.median(ref), statistics.median(ours)
    ratio = o / r
    verdict = "OK" if ratio >= TARGET else f"BELOW TARGET {TARGET}"
    print(f"overlay TCP, MTU {DEFAULT_MTU}, {ROUNDS} x {SECONDS} s, medians:")
    print(f"  hand-built VXLAN pair (host to host)  {r:6.2f} Gbit/s  {[round(x, 2) for x in ref]}")
    print(f"  nsnet overlay (container to container) {o:6.2f} Gbit/s  "
          f"{[round(x, 2) for x in ours]}")
    print(f"  ratio {ratio:.3f}  {verdict}")
    print(json.dumps({"overlay_ref_gbps": r, "overlay_nsnet_gbps": o, "overlay_ratio": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
