"""Small helpers for integration tests: run a container, exec in it, read the kernel."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from nsnet.client.api import Client, frames_text
from nsnet.client.errors import APIError
from nsnet.testing.hosts import Daemon, sh


def run(c: Client, image: str = "busybox", cmd: list[str] | None = None, *,
        network: str | None = None, name: str | None = None, ip: str | None = None,
        aliases: list[str] | None = None, start: bool = True, **extra: Any) -> str:
    body: dict[str, Any] = {"Image": image, "Cmd": cmd or ["sleep", "3600"]}
    hc: dict[str, Any] = extra.pop("HostConfig", {})
    if network:
        hc["NetworkMode"] = network
        ep: dict[str, Any] = {}
        if ip:
            ep["IPAMConfig"] = {"IPv4Address": ip}
        if aliases:
            ep["Aliases"] = aliases
        body["NetworkingConfig"] = {"EndpointsConfig": {network: ep}}
    if hc:
        body["HostConfig"] = hc
    body.update(extra)
    cid = str(c.containers.create(body, name=name)["Id"])
    if start:
        c.containers.start(cid)
    return cid


def exec_(c: Client, cid: str, cmd: list[str]) -> tuple[int, str, str]:
    e = c.containers.exec_create(cid, cmd)
    out, err = frames_text(c.containers.exec_start(e["Id"]))
    code = c.containers.exec_inspect(e["Id"])["ExitCode"]
    return int(code), out.decode(errors="replace"), err.decode(errors="replace")


def ip_of(c: Client, cid: str, net: str) -> str:
    return str(c.containers.inspect(cid)["NetworkSettings"]["Networks"][net]["IPAddress"])


def sandbox(c: Client, cid: str) -> str:
    return str(c.containers.inspect(cid)["NetworkSettings"]["SandboxKey"])


def in_sandbox(c: Client, cid: str, *cmd: str, check: bool = False,
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a host tool (dig, ip, nft) inside a container's namespace: an independent reader."""
    return sh("nsenter", f"--net={sandbox(c, cid)}", *cmd, check=check, timeout=timeout)


def links_in(path: str) -> list[dict[str, Any]]:
    out = sh("nsenter", f"--net={path}", "ip", "-j", "addr", "show").stdout
    return json.loads(out or "[]")  # type: ignore[no-any-return]


def wait_for(pred: Any, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def api_error(fn: Any, *args: Any, **kw: Any) -> APIError:
    try:
        fn(*args, **kw)
    except APIError as e:
        return e
    raise AssertionError(f"{getattr(fn, '__name__', fn)} did not fail")


def host_link(d: Daemon, name: str) -> dict[str, Any] | None:
    p = d.host.ip("-j", "addr", "show", "dev", name, check=False)
    if p.returncode != 0:
        return None
    data = json.loads(p.stdout or "[]")
    return data[0] if data else None


# A TCP server on port 80 in a namespace that answers with the client address it sees, and
# the client that reads it: who a container's peer sees it as (masquerade, hairpin, NAT).
SERVE = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(8)
print("ready", flush=True)
while True:
    conn, peer = s.accept(); conn.sendall(f"from {peer[0]}".encode()); conn.close()
"""
ASK = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(s.recv(100).decode())
except OSError as e:
    print("failed", e)
"""


def serve(procs: list[subprocess.Popen[str]], ns_path: str) -> None:
    p = subprocess.Popen(["nsenter", f"--net={ns_path}", sys.executable, "-c", SERVE],
                         stdout=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"


def ask(ns_path: str, ip: str, port: int) -> str:
    return sh("nsenter", f"--net={ns_path}", sys.executable, "-c", ASK, ip,
              str(port)).stdout.strip()
