"""Throwaway "host" namespaces with a daemon inside, and the leak checks that follow them.

Privileged tests never touch the machine's own network: each test host is a network namespace
made here, the daemon runs inside it (``nsenter --net``, so its mounts stay visible to the leak
check), and its data and exec roots live in a temporary directory.

The leak checks that follow every test (``nsnet.testing.leaks``) look only at what this run
made: namespaces noted when made here, links tagged as nsnet's, the test's own directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nsnet.client.api import Client
from nsnet.testing.leaks import (
    LeakSnapshot,
    cgroups_of,
    check_leaks,
    links_added,
    mounts_under,
    note_link,
    note_namespace,
)

__all__ = ["Daemon", "LeakSnapshot", "TestHost", "cgroups_of", "check_leaks", "daemon_host",
           "mounts_under", "ns_inode", "sh"]

VENV_BIN = Path(sys.executable).parent


def sh(*args: str, check: bool = True, ns: str | None = None, timeout: float = 60,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool, inside the named namespace ``ns`` when given. A namespace made here
    (``ip netns add NAME``), or a link made in the machine's own namespace (``ip link add``
    without ``ns``), is noted as this run's, so the leak checks look for it."""
    cmd = list(args)
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    elif args[:3] == ("ip", "netns", "add") and len(args) > 3:
        note_namespace(args[3])  # this run's: the leak check looks for it
    else:
        for name in links_added(args):  # in the machine's namespace: looked for likewise
            note_link(name)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


@dataclass
class TestHost:
    """One namespace standing in for a machine."""

    __test__ = False  # not a pytest test class, whatever its name

    name: str
    path: str = ""

    @classmethod
    def create(cls, prefix: str = "nsnt") -> TestHost:
        name = f"{prefix}-{secrets.token_hex(3)}"
        sh("ip", "netns", "add", name)  # noted for the leak check (see sh)
        sh("ip", "link", "set", "lo", "up", ns=name)
        return cls(name=name, path=f"/run/netns/{name}")

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", *args, ns=self.name, check=check)

    def ip_json(self, *args: str) -> list[dict[str, object]]:
        out = sh("ip", "-j", *args, ns=self.name).stdout
        return json.loads(out or "[]")  # type: ignore[no-any-return]

    def nft_json(self, *args: str) -> list[dict[str, object]]:
        p = sh("nft", "-j", *args, ns=self.name, check=False)
        if p.returncode != 0:
            return []
        return json.loads(p.stdout or '{"nftables": []}')["nftables"]  # type: ignore[no-any-return]

    def pids(self) -> list[int]:
        """Processes whose network namespace is this host's (daemon, host-mode containers)."""
        ino = ns_inode(self.path)
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino == ino:
                    out.append(int(d))
            except OSError:
                continue
        return out

    def destroy(self) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        sh("ip", "netns", "del", self.name, check=False)


@dataclass
class Daemon:
    host: TestHost
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    resolv_conf: Path = field(default_factory=Path)
    extra_args: list[str] = field(default_factory=list)

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "run"

    @property
    def socket(self) -> Path:
        return self.exec_root / "nsnet.sock"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["NSNET_HOST"] = f"unix://{self.socket}"
        env["DOCKER_HOST"] = f"unix://{self.socket}"
        env.pop("DOCKER_CONTEXT", None)
        return env

    def client(self) -> Client:
        return Client(f"unix://{self.socket}")

    def start(self, crash_at: str | None = None) -> None:
        """Start and wait for the API; ``crash_at`` arms a test crash point
        (nsnet.engine.crashpoints): the daemon SIGKILLs itself when it gets there."""
        self.exec_root.mkdir(parents=True, exist_ok=True)
        cmd = ["nsenter", f"--net={self.host.path}", str(VENV_BIN / "nsnetd"),
               "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
               "--resolv-conf", str(self.resolv_conf), "--log-level", "debug",
               *self.extra_args]
        env = dict(os.environ)
        env.pop("NSNET_TEST_CRASH_AT", None)
        if crash_at:
            env["NSNET_TESTING"] = "1"
            env["NSNET_TEST_CRASH_AT"] = crash_at
        with open(self.root / "nsnetd.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nsnetd exited at start: {self.log_tail()}")
            if self.socket.exists():
                try:
                    self.client().ping()
                    return
                except Exception:  # noqa: BLE001 - not ready yet
                    pass
            time.sleep(0.05)
        raise AssertionError(f"nsnetd did not come up: {self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = (self.root / "nsnetd.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs (containers keep running, as after a crash)."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def wait_crashed(self, timeout: float = 20) -> int:
        """Wait for the daemon to die by itself (at an armed crash point); its exit status."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"nsnetd did not crash: {self.log_tail()}") from None
        self.proc = None
        return code

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def remove_everything(self) -> None:
        """Through the API, as a user would: containers, then user networks."""
        c = self.client()
        for ctr in c.containers.list(all=True):
            with contextlib.suppress(Exception):
                c.containers.remove(ctr["Id"], force=True)
        for net in c.networks.list():
            if net["Name"] not in ("bridge", "host", "none"):
                with contextlib.suppress(Exception):
                    c.networks.remove(net["Id"])

    def cli(self, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([str(VENV_BIN / "nsnet"), *args], capture_output=True, text=True,
                           env=self.env, timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"nsnet {' '.join(args)} failed ({p.returncode}): "
                                 f"{p.stderr.strip()}\n{p.stdout}")
        return p

    def docker(self, *args: str, check: bool = True, timeout: float = 60,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        docker = shutil.which("docker") or "/usr/local/bin/docker"
        p = subprocess.run([docker, *args], capture_output=True, text=True, env=self.env,
                           timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({p.returncode}): "
                                 f"{p.stderr.strip()}\n{p.stdout}")
        return p


@contextlib.contextmanager
def daemon_host(prefix: str = "nsnt", resolv_conf: str | None = None) -> Iterator[Daemon]:
    """A test host with a running daemon; everything is removed and leak-checked after."""
    before = LeakSnapshot.take()
    root = Path(tempfile.mkdtemp(prefix="nsnet-test-"))
    host = TestHost.create(prefix)
    resolv = root / "resolv.conf"
    resolv.write_text(resolv_conf if resolv_conf is not None else
                      "nameserver 192.0.2.53\nsearch example.test\n")
    d = Daemon(host=host, root=root, resolv_conf=resolv)
    failed = True
    try:
        d.start()
        yield d
        failed = False
    finally:
        log_text = d.log_tail(80)
        try:
            if d.proc is not None:
                with contextlib.suppress(Exception):
                    d.remove_everything()
                d.stop()
        finally:
            _force_cleanup(d)
            host.destroy()
            problems = check_leaks(before, root, [host])
            shutil.rmtree(root, ignore_errors=True)
        if problems and not failed:
            raise AssertionError("leak check failed:\n" + "\n".join(problems) +
                                 "\n--- daemon log ---\n" + log_text)


def _force_cleanup(d: Daemon) -> None:
    """Backstop for a failed test: what the API could not remove still must not leak."""
    runc_root = d.exec_root / "runc"
    if runc_root.exists():
        p = sh("runc", "--root", str(runc_root), "list", "-q", check=False)
        for cid in p.stdout.split():
            sh("runc", "--root", str(runc_root), "delete", "-f", cid, check=False)
    for m in sorted(mounts_under(str(d.root)), key=len, reverse=True):
        sh("umount", "-l", m, check=False)
    for cg in cgroups_of(d.exec_root):
        with contextlib.suppress(OSError):
            os.rmdir(cg)
