"""Default confinement of a container, checked from inside it (issue 8, item 3).

What Docker gives every container without options: its seccomp profile, its capability set,
masked and read-only /proc and /sys paths, no_new_privs left off. Each check runs the busybox
applet that makes the syscall, so what is measured is the kernel's answer, not our config.
"""

from __future__ import annotations

import os

import pytest
from helpers import exec_, run

from nsnet.client.api import Client, frames_text
from nsnet.runtime.runc import DEFAULT_CAPABILITIES
from nsnet.testing.hosts import Daemon

pytestmark = pytest.mark.root

# Capability numbers from linux/capability.h, to build the mask independently of our code.
_CAP_BITS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}
# `docker run --rm busybox grep Cap /proc/self/status` on Docker 20.10.14+ (no inheritable).
DOCKER_CAP_MASK = 0x00000000A80425FB


def exec_as(c: Client, cid: str, user: str, cmd: list[str]) -> tuple[int, str, str]:
    e = c.containers.exec_create(cid, cmd, user=user)
    out, err = frames_text(c.containers.exec_start(e["Id"]))
    code = int(c.containers.exec_inspect(e["Id"])["ExitCode"])
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def _status(c: Client, cid: str, user: str = "") -> dict[str, str]:
    code, out, err = exec_as(c, cid, user, ["cat", "/proc/self/status"])
    assert code == 0, err
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def test_capabilities_seccomp_and_no_new_privs_as_docker(daemon: Daemon) -> None:
    assert sum(1 << _CAP_BITS[c] for c in DEFAULT_CAPABILITIES) == DOCKER_CAP_MASK
    c = daemon.client()
    cid = run(c)
    st = _status(c, cid)
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(st[field], 16) == DOCKER_CAP_MASK, (field, st[field])
    assert int(st["CapInh"], 16) == 0
    # Mode 2 is a filter; one filter is ours (runc adds none of its own).
    assert st["Seccomp"].strip() == "2"
    assert st["Seccomp_filters"].strip() == "1"
    # Docker leaves no_new_privs off: setuid binaries in images keep working.
    assert st["NoNewPrivs"].strip() == "0"
    # A non-root process keeps no capabilities, and still the same filter.
    nobody = _status(c, cid, "65534")
    assert int(nobody["CapEff"], 16) == 0 and nobody["Seccomp"].strip() == "2"


def test_namespace_and_mount_escapes_fail(daemon: Daemon) -> None:
    # The user namespace is the classic door to the rest (mount, unshare -n ...): refused.
    p = daemon.cli("run", "--rm", "busybox", "unshare", "-Ur", "true", check=False)
    assert p.returncode != 0
    assert "Operation not permitted" in p.stderr + p.stdout
    c = daemon.client()
    cid = run(c)
    for cmd in (
        ["unshare", "-U", "true"],
        ["unshare", "-n", "true"],
        ["unshare", "-m", "true"],
        ["mount", "-t", "tmpfs", "none", "/mnt"],
        ["nsenter", "-t", "1", "-U", "true"],
        ["hostname", "changed"],
    ):
        code, out, err = exec_(c, cid, cmd)
        assert code != 0, cmd
        # EPERM, in the words of each applet (mount says "permission denied").
        assert "not permitted" in out + err or "permission denied" in out + err, (cmd, err)
    # An ordinary fork (glibc tries clone3 first and falls back to clone on ENOSYS).
    code, out, _ = exec_(c, cid, ["sh", "-c", "(echo child) | cat; id -u"])
    assert (code, out) == (0, "child\n0\n")


def test_masked_and_readonly_paths(daemon: Daemon) -> None:
    c = daemon.client()
    cid = run(c)
    # Masked files read as empty (/dev/null over them); masked directories as empty. Not
    # every kernel has every file (this one may lack /proc/kcore): check those it has.
    masked = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts")
              if os.path.exists(p)]
    assert len(masked) >= 2
    for path in masked:
        code, out, err = exec_(c, cid, ["sh", "-c", f"test -e {path} && wc -c < {path}"])
        assert code == 0, (path, err)
        assert out.strip() == "0", (path, out)
    code, out, _ = exec_(c, cid, ["sh", "-c", "ls -A /sys/firmware; ls -A /proc/acpi"])
    assert (code, out) == (0, "")
    # /proc/sys is read-only: even a per-namespace sysctl of the container's own netns.
    code, out, err = exec_(c, cid, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
    assert code != 0 and "Read-only file system" in out + err
    code, out, _ = exec_(c, cid, ["cat", "/proc/sys/net/ipv4/ip_forward"])
    assert (code, out.strip()) == (0, "0")
    # Readable where Docker leaves them readable.
    code, out, _ = exec_(c, cid, ["sh", "-c", "head -1 /proc/cpuinfo; cat /proc/self/cgroup"])
    assert code == 0 and out


def test_ordinary_programs_still_work(daemon: Daemon) -> None:
    c = daemon.client()
    c.networks.create({"Name": "confnet"})
    cid = run(c, network="confnet")
    ping = ["ping", "-c", "1", "-W", "2", "127.0.0.1"]
    checks: list[tuple[str, list[str], str]] = [
        # busybox ping opens a raw socket: NET_RAW.
        ("", ping, "1 packets received"),
        # The container's own umask is Docker's, whatever the daemon's is.
        ("", ["sh", "-c", "umask"], "0022"),
        ("", ["sh", "-c", "touch /tmp/f && stat -c %a /tmp/f"], "644"),
        ("", ["chroot", "/", "true"], ""),
        ("", ["chown", "65534:65534", "/tmp/f"], ""),
        # The engine's /etc files sit in private directories on the host, yet stay readable.
        ("65534:65534", ["cat", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"], "127.0.0.1"),
        ("65534:65534", ["ls", "/", "/bin/sh"], "/bin/sh"),
    ]
    for user, cmd, want in checks:
        code, out, err = exec_as(c, cid, user, cmd)
        assert code == 0, (cmd, out, err)
        assert want in out, (cmd, out)
    code, _, err = exec_(c, cid, ["httpd", "-p", "127.0.0.1:8080", "-h", "/etc"])
    assert code == 0, err
    code, out, err = exec_(c, cid, ["wget", "-q", "-O", "-", "http://127.0.0.1:8080/hostname"])
    assert code == 0 and out.strip() == cid[:12], (out, err)
