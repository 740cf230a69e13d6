"""Hostile containers and images against a real daemon: none of them may block it or reach the
host's files.

A container owns its root: it can turn /etc/passwd into a FIFO (a plain open waits for a
writer forever), a device node or a huge file, and point its working directory at a host path
through a symlink. An image tarball can turn a directory into a symlink to a host file after
giving the directory a setuid, world-writable mode. Each request must fail alone, with a 4xx,
while the daemon keeps answering everyone else, and canaries outside stay as they were.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest
from helpers import exec_, run

from nsnet.client.api import Client, frames_text
from nsnet.client.errors import APIError, ClientError
from nsnet.testing.hosts import Daemon

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

# A request that has to wait on the container blocked for ever before; this bounds the test.
REQUEST_TIMEOUT = 8.0


def _rootfs(d: Daemon, cid: str) -> Path:
    return d.exec_root / "containers" / cid / "bundle" / "rootfs"


def _unblock_fifo(path: Path) -> None:
    """Open the FIFO for writing, so a reader stuck in open(2) returns (the daemon before the
    fix); a FIFO nobody reads refuses this with ENXIO, which is the good case."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _exec_as(d: Daemon, cid: str, user: str) -> tuple[float, APIError | None]:
    """Start ``id -u`` as ``user``, with a bounded wait; (seconds, the API error if any)."""
    c = Client(f"unix://{d.socket}", timeout=REQUEST_TIMEOUT)
    e = c.containers.exec_create(cid, ["id", "-u"], user=user)
    started = time.monotonic()
    try:
        frames_text(c.containers.exec_start(e["Id"]))
    except APIError as err:
        return time.monotonic() - started, err
    except (ClientError, TimeoutError, OSError) as err:
        pytest.fail(f"exec -u {user} got no answer in {REQUEST_TIMEOUT}s: {err!r}")
    return time.monotonic() - started, None


def _as_root(c: Client, cid: str, script: str) -> int:
    """Set-up inside the container as uid 0, whatever the container's own User is."""
    e = c.containers.exec_create(cid, ["sh", "-c", script], user="0")
    frames_text(c.containers.exec_start(e["Id"]))
    return int(c.containers.exec_inspect(e["Id"])["ExitCode"])


def _still_serving(c: Client, cid: str) -> None:
    """Other requests are answered (runc itself, inside the container, may now fail to exec:
    its init reads the same files, but that only ever stalls that one runc process)."""
    assert c.ping() == "OK"
    assert c.containers.inspect(cid)["State"]["Running"] is True


def _pings_while(d: Daemon, busy: threading.Event) -> list[float]:
    """Round-trip times of /_ping from another client while ``busy`` is set."""
    c = Client(f"unix://{d.socket}", timeout=REQUEST_TIMEOUT)
    times: list[float] = []
    while busy.is_set() and len(times) < 200:
        t = time.monotonic()
        c.ping()
        times.append(time.monotonic() - t)
        time.sleep(0.02)
    return times


def test_fifo_passwd_blocks_neither_exec_nor_start(daemon: Daemon) -> None:
    c = daemon.client()
    cid = run(c, cmd=["sleep", "3600"], User="nobody")
    passwd = _rootfs(daemon, cid) / "etc" / "passwd"
    try:
        assert _as_root(c, cid, "rm /etc/passwd && mkfifo /etc/passwd") == 0
        busy = threading.Event()
        busy.set()
        pings: list[float] = []
        pinger = threading.Thread(target=lambda: pings.extend(_pings_while(daemon, busy)))
        pinger.start()
        try:
            took, err = _exec_as(daemon, cid, "nobody")
        finally:
            busy.clear()
            _unblock_fifo(passwd)
            pinger.join(REQUEST_TIMEOUT + 2)
        assert err is not None and err.status == 400, err
        assert "/etc/passwd is not a regular file" in err.message
        assert took < 2
        assert pings and max(pings) < 1, pings
        _still_serving(c, cid)

        # A restart prepares the bundle on the event loop: same FIFO, same clean answer.
        c.containers.stop(cid, t=0)
        started = time.monotonic()
        try:
            Client(f"unix://{daemon.socket}", timeout=REQUEST_TIMEOUT).containers.start(cid)
        except APIError as e:
            assert e.status == 400 and "not a regular file" in e.message, e
        else:
            pytest.fail("start with a FIFO for /etc/passwd succeeded")
        finally:
            _unblock_fifo(passwd)
        assert time.monotonic() - started < 2
        assert c.ping() == "OK"
    finally:
        c.containers.remove(cid, force=True)


@pytest.mark.parametrize("setup,text", [
    # /dev/zero: the daemon must never open a container's device node, let alone read it.
    ("rm /etc/group && mknod /etc/group c 1 5", "/etc/group is not a regular file"),
    ("head -c 2097152 /dev/zero > /etc/passwd", "/etc/passwd is larger than"),
    ("rm /etc/passwd && ln -s /etc /etc/passwd", "/etc/passwd is not a regular file"),
])  # fmt: skip
def test_bad_user_database_fails_that_request_only(daemon: Daemon, setup: str,
                                                   text: str) -> None:  # fmt: skip
    c = daemon.client()
    cid = run(c, cmd=["sleep", "3600"])
    try:
        assert _as_root(c, cid, setup) == 0
        took, err = _exec_as(daemon, cid, "1000:1000")
        assert err is not None and err.status == 400, err
        assert text in err.message
        assert took < 2
        _still_serving(c, cid)
    finally:
        c.containers.remove(cid, force=True)


def _canary_dir(d: Daemon) -> tuple[Path, tuple[int, int, int, int, list[str]]]:
    canary = d.root / "canary"
    canary.mkdir()
    (canary / "keep").write_text("host\n")
    os.chmod(canary, 0o755)
    os.utime(canary, (1_000_000_000, 1_000_000_000))
    return canary, _state(canary)


def _state(p: Path) -> tuple[int, int, int, int, list[str]]:
    s = os.lstat(p)
    return s.st_mode, s.st_uid, s.st_gid, s.st_mtime_ns, sorted(os.listdir(p))


def test_symlinked_working_dir_is_made_inside_the_root(daemon: Daemon) -> None:
    c = daemon.client()
    canary, before = _canary_dir(daemon)
    cid = run(c, cmd=["sleep", "3600"], User="nobody", WorkingDir="/wd/sub")
    try:
        assert _as_root(c, cid, f"rm -rf /wd && ln -s {canary} /wd") == 0
        c.containers.stop(cid, t=0)
        c.containers.start(cid)  # prepare() creates /wd/sub again, through the symlink
        made = _rootfs(daemon, cid) / str(canary)[1:] / "sub"
        assert made.is_dir() and made.stat().st_uid == 65534
        assert _state(canary) == before
        code, out, _ = exec_(c, cid, ["pwd"])
        assert code == 0 and out.strip() in ("/wd/sub", f"{canary}/sub"), out
    finally:
        c.containers.remove(cid, force=True)


def _hostile_tar(target: Path, canary_dir: Path) -> bytes:
    """x/ (06777) then x -> the host file; d/ and d/sub/ (06777) then d -> the host dir."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, link in [("bin", tarfile.DIRTYPE, ""), ("x", tarfile.DIRTYPE, ""),
                                 ("x", tarfile.SYMTYPE, str(target)),
                                 ("d", tarfile.DIRTYPE, ""), ("d/sub", tarfile.DIRTYPE, ""),
                                 ("d", tarfile.SYMTYPE, str(canary_dir))]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.mtime = kind, 0o6777, link, 42
            tf.addfile(info)
    return buf.getvalue()


def test_hostile_image_import_leaves_host_files_alone(daemon: Daemon) -> None:
    c = daemon.client()
    target = daemon.root / "host-file"
    target.write_text("host\n")
    os.chmod(target, 0o644)
    canary, before = _canary_dir(daemon)
    (canary / "sub").mkdir(mode=0o755)
    before = _state(canary)
    sub_before = _state(canary / "sub")
    file_before = os.lstat(target)
    c.images.import_tar(io.BytesIO(_hostile_tar(target, canary)), "hostile:1")
    after = os.lstat(target)
    assert stat.S_IMODE(after.st_mode) == 0o644
    assert (after.st_uid, after.st_mtime_ns) == (file_before.st_uid, file_before.st_mtime_ns)
    assert target.read_text() == "host\n"
    assert _state(canary) == before
    assert _state(canary / "sub") == sub_before
    c.images.remove("hostile:1")
