"""Real etcd for tests: one member or a cluster, on loopback or inside test namespaces.

Debian's ``etcd`` (3.4) is started with its data in a temporary directory. Where it listens
is the caller's choice, because a daemon under test runs inside a host namespace whose
loopback is its own: integration tests of the client use the root namespace's loopback with
free ports (the default), multihost tests put each member on an underlay address inside a
namespace (``netns=``, started through ``ip netns exec``, which execs etcd in place so the pid
we hold is etcd's own).

Timings are tightened for tests, not for production: a 50 ms heartbeat and 500 ms election
timeout make a cluster elect in well under a second after a member dies, and bring etcd's
minimum lease TTL (1.5 election timeouts, rounded up) down to 1 s, so lease expiry can be
tested in ~2 s.

Readiness is read from etcd's own log ("ready to serve client requests", printed once the
member has joined its cluster), which needs no connection into the namespace. Leaving the
``etcd_cluster`` block kills every member, checks that no etcd with one of its data
directories is still running and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EtcdCluster", "EtcdMember", "EtcdServer", "etcd_cluster", "etcd_processes"]

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
READY = "ready to serve client requests"


@dataclass(frozen=True)
class EtcdMember:
    """Where one member listens; ``netns`` None is the root namespace."""

    name: str
    host: str
    client_port: int
    peer_port: int
    netns: str | None = None

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"


class EtcdServer:
    """One etcd process: start, wait until it serves, stop, kill -9, start again on the same
    data (a member restarting keeps its identity and the cluster's history)."""

    def __init__(self, member: EtcdMember, data_dir: Path, initial_cluster: str,
                 cluster_token: str) -> None:
        self.member = member
        self.data_dir = data_dir
        self.log_path = data_dir.with_suffix(".log")
        self._initial_cluster = initial_cluster
        self._token = cluster_token
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def command(self) -> list[str]:
        m = self.member
        cmd = [
            ETCD, "--name", m.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self._initial_cluster,
            "--initial-cluster-token", self._token, "--initial-cluster-state", "new",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--enable-v2=false", "--logger", "capnslog",
        ]
        return ["ip", "netns", "exec", m.netns, *cmd] if m.netns else cmd

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    def start(self) -> None:
        """Launch without waiting (a cluster member cannot be ready before a quorum is)."""
        if self.running:
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.running:
                raise AssertionError(f"etcd {self.member.name} exited:\n{self.log_tail()}")
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                if READY.encode() in log.read():
                    return
            time.sleep(0.02)
        raise AssertionError(f"etcd {self.member.name} not ready in {timeout}s:\n"
                             f"{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the member dies mid-flight, as on a crash or power loss."""
        self._end(signal.SIGKILL)

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start()
        self.wait_ready(timeout)

    def _end(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@dataclass
class EtcdCluster:
    members: list[EtcdServer]
    root: Path

    @property
    def endpoints(self) -> list[str]:
        return [m.member.endpoint for m in self.members]

    @property
    def url(self) -> str:
        """For ``nsnetd --cluster-store``."""
        return "etcd://" + ",".join(self.endpoints)

    def wait_ready(self, timeout: float = 10.0) -> None:
        for m in self.members:
            if m.running:
                m.wait_ready(timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def etcd_processes(data_root: Path) -> list[int]:
    """Pids of etcd processes whose command line names a data directory under
    ``data_root``: what the leak check looks for."""
    found = []
    marker = str(data_root).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"etcd" in cmdline and marker in cmdline:
            found.append(int(entry))
    return found


def _members(n: int, hosts: Sequence[str] | None,
             netns: Sequence[str | None] | None) -> list[EtcdMember]:
    hosts = list(hosts) if hosts else ["127.0.0.1"] * n
    spaces = list(netns) if netns else [None] * n
    if len(hosts) != n or len(spaces) != n:
        raise ValueError(f"{n} members need {n} hosts and {n} namespaces")
    members = []
    for i, (host, ns) in enumerate(zip(hosts, spaces, strict=True)):
        shared = hosts.count(host) > 1 or (ns is None and host.startswith("127."))
        client, peer = (free_port(), free_port()) if shared else (2379, 2380)
        members.append(EtcdMember(f"m{i}", host, client, peer, ns))
    return members


@contextlib.contextmanager
def etcd_cluster(n: int = 1, *, hosts: Sequence[str] | None = None,
                 netns: Sequence[str | None] | None = None,
                 timeout: float = 15.0) -> Iterator[EtcdCluster]:
    """``n`` etcd members started together and ready; killed and leak-checked on exit.

    ``hosts`` and ``netns`` (one per member) choose where each listens; by default every
    member is on 127.0.0.1 in the root namespace with free ports.
    """
    root = Path(tempfile.mkdtemp(prefix="nsnet-etcd-"))
    members = _members(n, hosts, netns)
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    token = f"nsnet-test-{os.getpid()}-{root.name}"
    cluster = EtcdCluster([EtcdServer(m, root / m.name, initial, token) for m in members], root)
    try:
        for s in cluster.members:
            s.start()
        cluster.wait_ready(timeout)
        yield cluster
    finally:
        for s in cluster.members:
            s.kill()
        left = etcd_processes(root)
        shutil.rmtree(root, ignore_errors=True)
        if left:
            raise AssertionError(f"etcd processes left behind: {left}")
