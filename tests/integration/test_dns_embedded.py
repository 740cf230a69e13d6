"""The embedded DNS at 127.0.0.11 in real sandboxes: names, scoping, upstreams, robustness.

Upstreams are small DNS servers the tests start on loopback inside the test host namespace;
no real resolver is ever contacted.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import exec_, in_sandbox, ip_of, run, sandbox, wait_for

from nsnet.testing.hosts import Daemon, daemon_host, sh

pytestmark = pytest.mark.root

FAKE = str(Path(__file__).with_name("fake_dns.py"))


def dig(c: object, cid: str, *args: str) -> subprocess.CompletedProcess[str]:
    return in_sandbox(c, cid, "dig", "+time=2", "+tries=1", "@127.0.0.11", *args)  # type: ignore[arg-type]


def short(c: object, cid: str, *args: str) -> list[str]:
    return sorted(dig(c, cid, "+short", *args).stdout.split())


def status(c: object, cid: str, *args: str) -> str:
    out = dig(c, cid, *args).stdout
    for line in out.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return "NONE:" + out[-200:]


class Upstreams:
    """Fake upstream DNS servers on 127.0.0.1 inside the test host."""

    def __init__(self, host_ns: str) -> None:
        self.host_ns = host_ns
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, port: int, *args: str) -> None:
        p = subprocess.Popen(["ip", "netns", "exec", self.host_ns, sys.executable, FAKE,
                              str(port), *args], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        self.procs.append(p)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def dnsd() -> Iterator[tuple[Daemon, Upstreams]]:
    # The first upstream is dead (nothing listens there): the resolver must fail over.
    conf = "nameserver 127.0.0.1:5399\nnameserver 127.0.0.1:5300\nsearch corp.test\n"
    with daemon_host(resolv_conf=conf) as d:
        ups = Upstreams(d.host.name)
        try:
            ups.start(5300, "outside.example=203.0.113.7")
            yield d, ups
        finally:
            ups.stop()


def test_names_aliases_ptr_and_scoping(dnsd: tuple[Daemon, Upstreams]) -> None:
    d, _ = dnsd
    c = d.client()
    c.networks.create({"Name": "front"})
    c.networks.create({"Name": "back"})
    web = run(c, network="front", name="web", aliases=["www", "shared"], Hostname="webhost")
    web2 = run(c, network="front", name="web2", aliases=["shared"])
    db = run(c, network="back", name="db")
    cli = run(c, network="front", name="cli")
    wip, w2ip = ip_of(c, web, "front"), ip_of(c, web2, "front")
    for name in ("web", "www", web[:12], "webhost", "web.front", "WEB"):
        assert short(c, cli, name) == [wip], name
    # AAAA for a known name with no IPv6: NOERROR, no data. MX likewise.
    assert status(c, cli, "web", "AAAA") == "NOERROR" and short(c, cli, "web", "AAAA") == []
    assert status(c, cli, "web", "MX") == "NOERROR"
    # A shared alias answers with both addresses, in varying order (round robin).
    assert short(c, cli, "shared") == sorted([wip, w2ip])
    orders = {tuple(dig(c, cli, "+short", "shared").stdout.split()) for _ in range(12)}
    assert len(orders) == 2
    # TTL 600 like Docker.
    answer = dig(c, cli, "+noall", "+answer", "web").stdout.split()
    assert answer[1] == "600"
    # PTR gives the container's name.
    assert dig(c, cli, "+short", "-x", wip).stdout.strip() == "web.front."
    # Isolation holds in DNS: db is on another network.
    assert status(c, cli, "db") == "NXDOMAIN"
    assert status(c, db, "web") == "NXDOMAIN"
    # From inside the container: busybox's resolver (resolv.conf) and nslookup at :53.
    code, out, _ = exec_(c, cli, ["ping", "-c1", "-W2", "www"])
    assert code == 0 and wip in out
    code, out, _ = exec_(c, cli, ["nslookup", "www", "127.0.0.11"])
    assert code == 0 and wip in out
    code, out, _ = exec_(c, cli, ["cat", "/etc/resolv.conf"])
    assert "nameserver 127.0.0.11" in out and "search corp.test" in out and "ndots:0" in out


def test_connect_disconnect_update_answers_at_once(dnsd: tuple[Daemon, Upstreams]) -> None:
    d, _ = dnsd
    c = d.client()
    c.networks.create({"Name": "a"})
    c.networks.create({"Name": "b"})
    asker = run(c, network="a", name="asker")
    mover = run(c, network="b", name="mover")
    assert status(c, asker, "mover") == "NXDOMAIN"
    c.networks.connect("a", "mover", {"Aliases": ["m2"]})
    assert short(c, asker, "mover") == [ip_of(c, mover, "a")]
    assert short(c, asker, "m2") == [ip_of(c, mover, "a")]
    code, out, _ = exec_(c, mover, ["cat", "/etc/hosts"])
    assert ip_of(c, mover, "a") in out
    c.networks.disconnect("a", "mover")
    assert status(c, asker, "mover") == "NXDOMAIN"
    code, out, _ = exec_(c, mover, ["cat", "/etc/hosts"])
    assert code == 0
    assert ip_of(c, mover, "b") in out and out.count("\t" + mover[:12]) == 1
    # A container joining later resolves at once (no cache, no delay).
    late = run(c, network="a", name="late")
    assert short(c, asker, "late") == [ip_of(c, late, "a")]


def test_upstream_forwarding_failover_and_internal(dnsd: tuple[Daemon, Upstreams]) -> None:
    d, ups = dnsd
    c = d.client()
    c.networks.create({"Name": "out"})
    c.networks.create({"Name": "inner", "Internal": True})
    x = run(c, network="out", name="x")
    t = time.monotonic()
    assert short(c, x, "outside.example") == ["203.0.113.7"]
    assert time.monotonic() - t < 2, "the dead first upstream must fail over quickly"
    assert status(c, x, "nosuch.example") == "NXDOMAIN"
    # TCP too.
    assert sorted(dig(c, x, "+tcp", "+short", "outside.example").stdout.split()) == \
        ["203.0.113.7"]
    i = run(c, network="inner", name="i")
    assert status(c, i, "outside.example") == "SERVFAIL"
    assert short(c, i, "i") == [ip_of(c, i, "inner")]
    # --dns per container overrides the host's upstreams.
    ups.start(5301, "outside.example=198.51.100.9")
    y = run(c, network="out", name="y", HostConfig={"NetworkMode": "out",
                                                   "Dns": ["127.0.0.1:5301"]})
    assert short(c, y, "outside.example") == ["198.51.100.9"]
    text = sh("curl", "-s", "--unix-socket", str(d.socket), "http://x/metrics").stdout
    assert "nsnet_dns_queries_total" in text and 'rcode="NXDOMAIN"' in text
    assert "nsnet_dns_upstream_seconds_bucket" in text


def test_default_bridge_links_and_own_port_53(dnsd: tuple[Daemon, Upstreams]) -> None:
    d, _ = dnsd
    c = d.client()
    target = run(c, name="target")
    linker = run(c, name="linker", HostConfig={"Links": ["target:tgt"]})
    code, out, _ = exec_(c, linker, ["cat", "/etc/resolv.conf"])
    # Default bridge: no embedded DNS; the host's loopback servers are dropped.
    assert "127.0.0.11" not in out and "127.0.0.1" not in out
    code, out, _ = exec_(c, linker, ["cat", "/etc/hosts"])
    assert f"{ip_of(c, target, 'bridge')}\ttgt target" in out
    code, out, _ = exec_(c, linker, ["ping", "-c1", "-W2", "tgt"])
    assert code == 0
    # A container can run its own server on port 53; 127.0.0.11 still answers.
    c.networks.create({"Name": "n53"})
    srv = run(c, cmd=["httpd", "-f", "-p", "53", "-h", "/etc"], network="n53", name="own53")
    assert wait_for(lambda: ":53 " in exec_(c, srv, ["netstat", "-tln"])[1])
    code, out, _ = exec_(c, srv, ["wget", "-qO-", f"http://{ip_of(c, srv, 'n53')}:53/hostname"])
    assert code == 0 and out.strip() == srv[:12]
    assert short(c, srv, "own53") == [ip_of(c, srv, "n53")]
    assert dig(c, srv, "+tcp", "+short", "own53").stdout.split() == [ip_of(c, srv, "n53")]


def test_resolver_survives_garbage(dnsd: tuple[Daemon, Upstreams]) -> None:
    d, _ = dnsd
    c = d.client()
    c.networks.create({"Name": "f"})
    victim = run(c, network="f", name="victim")
    other = run(c, network="f", name="other")
    rnd = random.Random(7)
    packets = []
    for _ in range(400):
        kind = rnd.random()
        if kind < 0.3:
            packets.append(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 600))))
        elif kind < 0.6:
            # A valid header with a truncated or looping question.
            packets.append(bytes([rnd.getrandbits(8), 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]) +
                           bytes([0xC0, 12]) * rnd.randint(1, 5))
        else:
            packets.append(bytes([1, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]) +
                           bytes([63]) + b"a" * 63 + bytes([63]) + b"b" * 200)
    script = (
        "import socket,sys,pickle\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "for p in pickle.load(sys.stdin.buffer):\n"
        "    s.sendto(p,('127.0.0.11',53))\n"
        "t=socket.socket(); t.connect(('127.0.0.11',53)); t.sendall(b'\\x00\\x05junk!')\n"
        "t.close()\n"
    )
    import pickle

    subprocess.run(["nsenter", f"--net={sandbox(c, victim)}", sys.executable, "-c", script],
                   input=pickle.dumps(packets), check=True, timeout=60)
    assert short(c, victim, "other") == [ip_of(c, other, "f")]
    assert short(c, other, "victim") == [ip_of(c, victim, "f")]
    assert d.proc is not None and d.proc.poll() is None
