"""Throughput of the embedded resolver's local-answer path, measured with dnsperf.

Run by hand (no root needed):

    .venv/bin/python bench/dns_local.py [--duration 5] [--containers 1000] [--loop uvloop]

The server runs in this process on 127.0.0.1 (a stand-in for a sandbox's 127.0.0.11 socket),
serving one sandbox among ``--containers`` others on a few networks, so the record tables have a
realistic size; dnsperf (Debian package ``dnsperf``) runs as a child process and asks A questions
for local names. docs/architecture.md's figure is ~46,000 q/s at 2 vCPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import sys
import tempfile

from nsnet.dns import DNSServer, Records


def build_records(containers: int, networks: int) -> Records:
    records = Records()
    for n in range(networks):
        records.set_network_name(f"net{n}", f"net{n}")
    for i in range(containers):
        net = i % networks
        records.set_endpoint(
            f"ep{i}",
            f"net{net}",
            f"sb{i}",
            [f"c{i}", f"alias{i}", f"{i:012x}", f"host{i}"],
            f"10.{net}.{(i >> 8) & 0xFF}.{i & 0xFF}",
            None,
        )
    records.set_endpoint("ep-bench", "net0", "bench", ["bench", "client"], "10.0.255.1", None)
    return records


def bind_pair() -> tuple[socket.socket, socket.socket, int]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    # dnsperf sends in bursts; a large receive buffer keeps the kernel from dropping them.
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return udp, tcp, port


async def run(args: argparse.Namespace) -> int:
    records = build_records(args.containers, args.networks)
    server = DNSServer(records, lambda: [])
    udp, tcp, port = bind_pair()
    await server.add_sandbox("bench", udp, tcp, forward=False)

    names = [f"c{i}" for i in range(0, args.containers, args.networks)][:200] or ["bench"]
    with tempfile.NamedTemporaryFile("w", suffix=".dnsperf", delete=False) as f:
        for name in names:
            f.write(f"{name} A\n")
        datafile = f.name
    cmd = [
        "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", datafile,
        "-l", str(args.duration), "-c", str(args.clients), "-q", str(args.outstanding),
    ]  # fmt: skip
    if args.qps:
        cmd += ["-Q", str(args.qps)]
    if args.edns:
        cmd.append("-e")
    print("running:", " ".join(cmd), flush=True)
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
    finally:
        os.unlink(datafile)
        await server.close()
    text = out.decode(errors="replace")
    if args.verbose:
        print(text)
    qps = re.search(r"Queries per second:\s+([\d.]+)", text)
    lost = re.search(r"Queries lost:\s+(\d+)\s+\(([\d.]+)%\)", text)
    sent = re.search(r"Queries sent:\s+(\d+)", text)
    latency = re.search(r"Average Latency \(s\):\s+([\d.]+)", text)
    if not qps:
        print(text)
        return 1
    print(f"loop={args.loop} containers={args.containers} names={len(names)} edns={args.edns}")
    print(f"q/s: {float(qps.group(1)):.0f}")
    if sent:
        print(f"sent: {sent.group(1)}")
    if lost:
        print(f"lost: {lost.group(1)} ({lost.group(2)}%)")
    if latency:
        print(f"average latency: {float(latency.group(1)) * 1000:.2f} ms")
    m = server.metrics()
    print(f"server: queries={m['queries']} noerror={m.get('rcode_NOERROR', 0)}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--containers", type=int, default=1000)
    p.add_argument("--networks", type=int, default=4)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--outstanding", type=int, default=200)
    p.add_argument("--qps", type=int, default=0, help="dnsperf -Q (0: as fast as it can)")
    p.add_argument("--edns", action="store_true", help="send EDNS(0) queries (dnsperf -e)")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    if shutil.which("dnsperf") is None:
        print("dnsperf is not installed (Debian package dnsperf)", file=sys.stderr)
        return 2
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(run(args))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
