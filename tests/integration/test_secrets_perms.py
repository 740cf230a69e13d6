"""Secrets are not world-readable (issue 8, item 4).

A container's environment (``-e PASSWORD=...``) is stored in the SQLite store and in its
bundle's config.json; its output in the log files. A local user without privileges must read
none of it: the test looks for the secret in every file under the data and exec roots, first
as root (to prove it is there to be found), then as nobody.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run, wait_for

from nsnet.client.api import frames_text
from nsnet.testing.hosts import Daemon

pytestmark = pytest.mark.root

SECRET = b"s3cret-b7d1e0"
NOBODY = 65534


def _files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` on its own filesystem (not into the container's overlay
    or the namespace files), links not followed."""
    dev = root.stat().st_dev
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(top, d)).st_dev == dev]
        for f in files:
            p = Path(top, f)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_dev == dev:
                yield p


def _holding_secret(paths: list[Path]) -> list[str]:
    out = []
    for p in paths:
        try:
            if SECRET in p.read_bytes():
                out.append(str(p))
        except OSError:
            continue
    return out


def _as_nobody(paths: list[Path], dirs: list[Path]) -> tuple[list[str], list[str]]:
    """(files whose secret nobody can read, directories nobody can list), from a child that
    has dropped to uid/gid 65534 with no groups."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no Python-level cleanup, only _exit
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            found = _holding_secret(paths)
            listed = []
            for d in dirs:
                try:
                    os.listdir(d)
                    listed.append(str(d))
                except OSError:
                    pass
            os.write(w, ("\n".join(found) + "\0" + "\n".join(listed)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    found, _, listed = data.partition("\0")
    return [x for x in found.split("\n") if x], [x for x in listed.split("\n") if x]


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def _check_modes(d: Daemon, cid: str) -> None:
    assert _mode(d.data_root) == 0o700
    # 0711: members of the nsnet group reach the 0660 socket inside, nobody lists it.
    assert _mode(d.exec_root) == 0o711
    assert _mode(d.socket) == 0o660
    for root in (d.data_root, d.exec_root):
        for child in root.iterdir():
            st = os.lstat(child)
            if stat.S_ISDIR(st.st_mode):
                assert stat.S_IMODE(st.st_mode) == 0o700, child
            elif stat.S_ISREG(st.st_mode):
                assert stat.S_IMODE(st.st_mode) == 0o600, child
    db = sorted(d.data_root.glob("nsnet.db*"))
    assert d.data_root / "nsnet.db" in db
    for p in db:
        assert _mode(p) == 0o600, p
    assert _mode(d.exec_root / "containers" / cid / "bundle" / "config.json") == 0o600
    for log in ("stdout.log", "stderr.log"):
        assert _mode(d.data_root / "containers" / cid / log) == 0o600


def test_secret_env_readable_by_root_only(daemon: Daemon) -> None:
    c = daemon.client()
    c.networks.create({"Name": "secnet"})
    cid = run(c, network="secnet", Env=[f"PASSWORD={SECRET.decode()}"],
              cmd=["sh", "-c", "echo $PASSWORD; echo $PASSWORD >&2; sleep 3600"])
    stdout = daemon.data_root / "containers" / cid / "stdout.log"
    assert wait_for(lambda: SECRET in stdout.read_bytes())
    # The test's temporary directory is private; a real data root's parent is not.
    os.chmod(daemon.root, 0o755)
    roots = [daemon.data_root, daemon.exec_root]
    files = [p for r in roots for p in _files(r)]
    seen_by_root = _holding_secret(files)
    # Where the secret lives (so the check below is not vacuous): the store, the bundle,
    # and the logs.
    assert any(p.endswith("/config.json") for p in seen_by_root), seen_by_root
    assert any("/nsnet.db" in p for p in seen_by_root), seen_by_root
    assert any(p.endswith("/stdout.log") for p in seen_by_root), seen_by_root
    dirs = [*roots, *(p for r in roots for p in r.iterdir() if p.is_dir())]
    found, listed = _as_nobody(files, dirs)
    assert found == [] and listed == []
    _check_modes(daemon, cid)
    # The /etc files bind-mounted into the container stay readable there by anyone.
    etc = daemon.exec_root / "sandboxes" / cid
    for name in ("hosts", "resolv.conf", "hostname"):
        assert _mode(etc / name) == 0o644
    e = c.containers.exec_create(cid, ["cat", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"],
                                 user=f"{NOBODY}:{NOBODY}")
    out, err = frames_text(c.containers.exec_start(e["Id"]))
    assert c.containers.exec_inspect(e["Id"])["ExitCode"] == 0, err
    assert b"nameserver" in out and cid[:12].encode() in out


def test_roots_of_an_older_run_are_tightened_at_start(daemon: Daemon) -> None:
    c = daemon.client()
    cid = run(c, Env=[f"PASSWORD={SECRET.decode()}"], cmd=["sh", "-c", "echo x; sleep 3600"])
    daemon.stop()  # the container keeps running; the next daemon adopts it
    # What an older nsnet (or a careless operator) left: everything readable.
    loose = [
        *daemon.data_root.glob("nsnet.db*"),
        daemon.exec_root / "containers" / cid / "bundle" / "config.json",
        daemon.data_root / "containers" / cid / "stdout.log",
        daemon.data_root / "containers" / cid / "stderr.log",
    ]
    for p in loose:
        os.chmod(p, 0o644)
    for root in (daemon.data_root, daemon.exec_root):
        os.chmod(root, 0o755)
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink():
                os.chmod(child, 0o755)
    daemon.start()
    assert c.containers.inspect(cid)["State"]["Running"]
    _check_modes(daemon, cid)
