"""No descriptor number can abort the daemon (issue 8, item 6).

libnftables waits on its netlink socket with select(); glibc aborts the process ("bit out of
range 0 - FD_SETSIZE") when that socket's number is 1024 or more. These tests make a hostile
client and a hostile container push the daemon past 1,024 open descriptors (idle API
connections, a flood of DNS questions whose upstream never answers) and then check that ``run``
and ``exec`` still work, and that the daemon's descriptor count stays bounded.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from helpers import exec_, run, sandbox, wait_for

from nsnet.testing.hosts import Daemon, TestHost, daemon_host

pytestmark = pytest.mark.root

BLACKHOLE_PORT = 5397
MAX_CONNECTIONS = 1080
IDLE_CONNECTIONS = 1100

# Reads and drops every datagram: an upstream that never answers.
BLACKHOLE = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("127.0.0.1", {BLACKHOLE_PORT}))
print("ready", flush=True)
while True:
    s.recv(65535)
"""

# Sends ``count`` questions for distinct names the resolver must forward, as fast as it can.
FLOOD = """
import os, socket, struct, sys
count = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.11", 53))
for i in range(count):
    name = b"".join(bytes([len(p)]) + p for p in (b"q%d" % i, b"flood", b"example")) + b"\\0"
    msg = struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\\0\\1\\0\\1"
    try:
        s.send(msg)
    except OSError:
        pass
print("sent", flush=True)
"""


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_idle(path: str, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        out.append(s)
    return out


def read_reply(s: socket.socket, timeout: float) -> bytes:
    """Everything the daemon sends before it closes (or the timeout passes)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


@pytest.fixture
def fd_daemon() -> Iterator[tuple[Daemon, subprocess.Popen[str]]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE_CONNECTIONS + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, IDLE_CONNECTIONS + 200), hard))
    conf = f"nameserver 127.0.0.1:{BLACKHOLE_PORT}\n"
    try:
        with daemon_host(resolv_conf=conf) as d:
            hole = subprocess.Popen(["ip", "netns", "exec", d.host.name, sys.executable, "-c",
                                     BLACKHOLE], stdout=subprocess.PIPE, text=True)
            try:
                assert hole.stdout is not None and hole.stdout.readline().strip() == "ready"
                yield d, hole
            finally:
                hole.kill()
                hole.wait()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def restart(d: Daemon, *args: str) -> None:
    d.stop()
    d.extra_args = list(args)
    d.start()


def test_idle_connections_and_dns_flood_cannot_kill_run_or_exec(
        fd_daemon: tuple[Daemon, subprocess.Popen[str]]) -> None:
    d, _ = fd_daemon
    restart(d, "--api-max-connections", str(MAX_CONNECTIONS))
    assert d.proc is not None
    pid = d.proc.pid
    c = d.client()
    c.networks.create({"Name": "flood"})
    flooder = run(c, network="flood", name="flooder")
    base = fd_count(pid)

    # 1,100 idle API connections take the low descriptor numbers; those past the limit are
    # told so and closed.
    idle = open_idle(str(d.socket), IDLE_CONNECTIONS)
    try:
        # connect() returns once queued: wait until the daemon has taken them all.
        assert wait_for(lambda: fd_count(pid) >= base + MAX_CONNECTIONS - 5, timeout=20)
        time.sleep(0.3)
        rejected = [r for r in (read_reply(s, 0.5) for s in idle[-(IDLE_CONNECTIONS -
                                                                     MAX_CONNECTIONS):]) if r]
        assert len(rejected) >= IDLE_CONNECTIONS - MAX_CONNECTIONS - 5, len(rejected)
        head, _, body = rejected[-1].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), head
        assert json.loads(body) == {"message": "too many connections"}
        # Make room for this test's own client; over 1,024 descriptors stay open in the daemon.
        for s in idle[:40]:
            s.close()
        assert wait_for(lambda: fd_count(pid) <= base + MAX_CONNECTIONS - 35, timeout=10)
        assert fd_count(pid) > 1024 + 16

        # A container floods the resolver with names only the (silent) upstream could answer.
        flood = subprocess.run(["nsenter", f"--net={sandbox(c, flooder)}", sys.executable,
                                "-c", FLOOD, "3000"], capture_output=True, text=True, timeout=60)
        assert flood.stdout.strip() == "sent", flood.stderr

        # The sandbox start runs libnftables (select()) with all of that open.
        other = run(c, network="flood", name="other")
        code, out, _ = exec_(c, other, ["echo", "still here"])
        assert (code, out.strip()) == (0, "still here")
        code, out, _ = exec_(c, flooder, ["echo", "flooder"])
        assert (code, out.strip()) == (0, "flooder")
        # Bounded: the API limit, the resolver's upstream pool, and a little slack.
        assert fd_count(pid) < base + MAX_CONNECTIONS + 150, fd_count(pid)
        assert d.proc.poll() is None
    finally:
        for s in idle:
            s.close()
    assert wait_for(lambda: fd_count(pid) < base + 60, timeout=10), fd_count(pid)
    c.containers.remove(other, force=True)
    c.containers.remove(flooder, force=True)


def test_slow_and_idle_clients_are_cut_off(
        fd_daemon: tuple[Daemon, subprocess.Popen[str]]) -> None:
    d, _ = fd_daemon
    restart(d, "--api-header-timeout", "2", "--api-body-timeout", "2")
    assert d.proc is not None
    pid = d.proc.pid
    base = fd_count(pid)
    t = time.monotonic()
    silent = open_idle(str(d.socket), 20)
    slow_headers, slow_body = open_idle(str(d.socket), 2)
    try:
        slow_headers.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n")
        slow_body.sendall(b"POST /networks/create HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        assert wait_for(lambda: fd_count(pid) >= base + 20, timeout=1.5), (base, fd_count(pid))
        for s in [*silent, slow_headers]:
            assert read_reply(s, 6) == b""
        # The body that stops half-way is answered 408 within the body timeout, then closed.
        reply = read_reply(slow_body, 6)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["message"]
        assert 1.5 < time.monotonic() - t < 6
        assert wait_for(lambda: fd_count(pid) <= base + 2, timeout=5), fd_count(pid)
        # A client that keeps up is served as before.
        assert d.client().ping()
    finally:
        for s in [*silent, slow_headers, slow_body]:
            s.close()


# Holds 1,100 descriptors, then writes a table inside a namespace through libnftables.
NFT_PROBE = """
import os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
assert max(held) > 1024
from nsnet.kernel.nft import run_in_namespace
run_in_namespace(sys.argv[1], "add table ip nsnet-probe\\n")
print("ok", flush=True)
"""


def test_libnftables_with_over_1024_descriptors_open() -> None:
    host = TestHost.create()
    try:
        p = subprocess.run([sys.executable, "-c", NFT_PROBE, host.path], capture_output=True,
                           text=True, timeout=60)
        assert (p.returncode, p.stdout.strip()) == (0, "ok"), p.stderr[-500:]
        tables = [t["table"]["name"] for t in host.nft_json("list", "tables")
                  if "table" in t]  # type: ignore[index]
        assert tables == ["nsnet-probe"]
    finally:
        host.destroy()
