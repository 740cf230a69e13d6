"""``--user`` lookups in a container's root that the container controls.

The container can make /etc/passwd a FIFO (a plain open waits for a writer forever and froze the
daemon's event loop), a device node, a huge file, or swap /etc for a symlink to a host directory
between our check and our read. Each case must answer at once, from inside the root only.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from nsnet.errors import Invalid, SystemError_
from nsnet.runtime import users
from nsnet.runtime.users import lookup_user, lookup_user_async

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:other,app\n"
HOST_PASSWD = "hostonly:x:4242:4242::/:/bin/sh\n"


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


def _lookup_in_thread(root: Path, user: str, wait: float = 3.0) -> object:
    """The lookup's result or exception; fails (after unblocking it) if it does not return."""
    box: list[object] = []

    def run() -> None:
        try:
            box.append(lookup_user(root, user))
        except Exception as e:  # noqa: BLE001 - handed back to the test
            box.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(wait)
    if t.is_alive():
        # Let the blocked open(2) of the FIFO return, so the thread ends.
        fd = os.open(root / "etc" / "passwd", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail(f"lookup of {user!r} blocked for {wait}s")
    return box[0]


def test_lookup_forms(tmp_path: Path) -> None:
    root = _root(tmp_path)
    assert lookup_user(root, "") == (0, 0, [])
    assert lookup_user(root, "app") == (1000, 1000, [10, 29])
    assert lookup_user(root, "app:wheel") == (1000, 10, [29])
    assert lookup_user(root, "1000") == (1000, 1000, [10, 29])
    assert lookup_user(root, "4000:7") == (4000, 7, [])
    with pytest.raises(Invalid, match="unable to find user nobody"):
        lookup_user(root, "nobody")
    with pytest.raises(Invalid, match="unable to find group nogroup"):
        lookup_user(root, "app:nogroup")


def test_fifo_passwd_answers_at_once(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "etc" / "passwd").unlink()
    os.mkfifo(root / "etc" / "passwd")
    started = time.monotonic()
    result = _lookup_in_thread(root, "app")
    assert isinstance(result, Invalid)
    assert "/etc/passwd is not a regular file" in str(result)
    assert time.monotonic() - started < 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_device_passwd_is_never_opened(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "etc" / "group").unlink()
    os.mknod(root / "etc" / "group", stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero
    result = _lookup_in_thread(root, "1000")
    assert isinstance(result, Invalid)
    assert "/etc/group is not a regular file" in str(result)


def test_oversized_passwd_is_refused_not_truncated(tmp_path: Path) -> None:
    root = _root(tmp_path)
    padding = ("#" * 1023 + "\n") * 1100  # 1.1 MiB of comments
    (root / "etc" / "passwd").write_text(padding + "late:x:777:777::/:/bin/sh\n")
    with pytest.raises(Invalid, match="larger than"):
        lookup_user(root, "late")


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    root = _root(tmp_path)
    host = tmp_path / "host"
    host.mkdir()
    (host / "passwd").write_text(HOST_PASSWD)
    (root / "etc" / "passwd").unlink()
    # Absolute: the container's /host/passwd, which does not exist in its root.
    (root / "etc" / "passwd").symlink_to(host / "passwd")
    with pytest.raises(Invalid, match="unable to find user hostonly"):
        lookup_user(root, "hostonly")
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to("../" * 12 + str(host / "passwd")[1:])
    with pytest.raises(Invalid, match="unable to find user hostonly"):
        lookup_user(root, "hostonly")
    # A symlink that stays inside is followed, as the container would.
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "real").write_text(PASSWD)
    (root / "etc" / "passwd").symlink_to("/etc/real")
    assert lookup_user(root, "app")[0] == 1000


_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _exchange(a: Path, b: Path) -> None:
    at_fdcwd = -100
    if _libc.renameat2(at_fdcwd, bytes(a), at_fdcwd, bytes(b), _RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def test_swapped_etc_never_reads_the_host(tmp_path: Path) -> None:
    """A live container swaps /etc (a directory) with a symlink to a host directory as fast
    as it can while we look users up: no lookup may ever see the host's passwd."""
    root = _root(tmp_path)
    host = tmp_path / "host"
    host.mkdir()
    (host / "passwd").write_text(HOST_PASSWD)
    (host / "group").write_text("")
    (root / "etc.swap").symlink_to(host)  # the host's path, followed with host semantics
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            _exchange(root / "etc", root / "etc.swap")

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    leaked = 0
    deadline = time.monotonic() + 2.0
    try:
        for _ in range(20_000):
            if time.monotonic() > deadline:
                break
            try:
                lookup_user(root, "hostonly")
                leaked += 1
            except Invalid:
                pass
    finally:
        stop.set()
        t.join(5)
    assert leaked == 0


def test_async_lookup_times_out_on_this_request_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _root(tmp_path)
    release = threading.Event()

    def hung(rootfs: Path, user: str) -> object:
        release.wait(5)  # a read that hangs, e.g. on a stuck disk
        return 0, 0, []

    async def scenario() -> None:
        monkeypatch.setattr(users, "lookup_user", hung)
        with pytest.raises(SystemError_, match="timed out"):
            await lookup_user_async(root, "app", timeout=0.2)
        monkeypatch.undo()
        release.set()
        # The loop was never blocked, and the next lookup is served.
        assert await lookup_user_async(root, "app") == (1000, 1000, [10, 29])

    asyncio.run(scenario())
