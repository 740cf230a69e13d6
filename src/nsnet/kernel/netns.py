"""Network namespaces without forks and without moving the event loop.

Rule 1 of docs/architecture.md: the asyncio loop and its executor threads never change namespace.
Work in a namespace goes through a socket *opened* there. One dedicated thread (``_ns_thread``) is
the only thread that ever calls setns(2); it enters a namespace, opens what it was asked to open and
goes back to the daemon's own namespace before it takes the next job. ``unshare(CLONE_NEWNET)`` in
that thread plus a bind mount costs ~1 ms, where ``ip netns add`` forks and costs 4-10 ms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]

T = TypeVar("T")


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def enter_netns(fd: int) -> None:
    """setns(2) the calling thread into the network namespace ``fd`` refers to.

    Only for threads made to move (``NamespaceThread`` and the nftables thread), never for the
    loop or its executor (DESIGN rule 1).
    """
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


class NamespaceThread:
    """The single thread allowed to switch network namespace.

    It remembers the daemon's own namespace at construction and always returns to it, so a
    failure inside a job cannot leave the thread stranded elsewhere.
    """

    def __init__(self) -> None:
        self._home_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nsnet-netns")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        os.close(self._home_fd)

    def _go_home(self) -> None:
        _check(_libc.setns(self._home_fd, CLONE_NEWNET), "setns(home)")

    def call_in(self, ns_path: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with the thread inside ``ns_path``; blocks the caller (jobs are ~1 ms)."""

        def job() -> T:
            fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _check(_libc.setns(fd, CLONE_NEWNET), f"setns({ns_path})")
            finally:
                os.close(fd)
            try:
                return fn()
            finally:
                self._go_home()

        return self._pool.submit(job).result()

    def create(self, ns_path: str) -> None:
        """Make a new namespace and pin it with a bind mount on ``ns_path``."""

        def job() -> None:
            Path(ns_path).touch(exist_ok=True)
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            try:
                src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
                _check(_libc.mount(src, ns_path.encode(), None, MS_BIND, None),
                       f"bind mount {ns_path}")
            finally:
                self._go_home()

        try:
            self._pool.submit(job).result()
        except BaseException:
            remove(ns_path)
            raise

    def remove(self, ns_path: str) -> None:
        """Unpin ``ns_path`` (see ``remove``); a method so callers need only the thread."""
        remove(ns_path)

    def iproute(self, ns_path: str) -> IPRoute:
        """A netlink socket bound inside ``ns_path``, usable from any thread afterwards."""
        return self.call_in(ns_path, IPRoute)

    def socket(self, ns_path: str, family: int, kind: int) -> socket.socket:
        return self.call_in(ns_path, lambda: socket.socket(family, kind))


def remove(ns_path: str) -> None:
    """Unpin a namespace: the kernel reaps it (and its links) once nothing holds it.

    Idempotent: a missing or unmounted path is fine.
    """
    rc = _libc.umount2(ns_path.encode(), MNT_DETACH)
    if rc != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {ns_path}: {os.strerror(err)}")
    try:
        os.unlink(ns_path)
    except FileNotFoundError:
        pass


def is_namespace(ns_path: str) -> bool:
    """True when ``ns_path`` is a live pinned namespace (not just a leftover file)."""
    try:
        return os.stat(ns_path).st_ino != os.stat(os.path.dirname(ns_path) or "/").st_ino and \
            _is_nsfs(ns_path)
    except OSError:
        return False


def _is_nsfs(path: str) -> bool:
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4 and parts[4] == real and " nsfs " in line:
                    return True
    except OSError:
        return False
    return False
