"""Descriptor numbers: where select()-based code may run, and where long-lived fds go.

libnftables waits on its netlink socket with select(), and glibc aborts the whole process
("bit out of range 0 - FD_SETSIZE") when that socket's number is 1024 or more. The daemon cannot
keep its own descriptor count under 1024: hostile clients hold API connections, containers hold
resolver sockets and pidfds. So libnftables runs in one thread with a *private* descriptor table
(``own_fd_table``): ``unshare(CLONE_FILES)`` gives the thread a copy of the table, the copies are
closed at once, and from then on every descriptor that thread opens is numbered from 3 upwards
whatever the rest of the daemon holds. Nothing else in the daemon calls select() (a unit test
greps for it; pyroute2 0.7's netlink sockets use poll()).

``raise_fd`` is the older, weaker measure, kept for the descriptors that live as long as a
container: numbering them >= HIGH_FD leaves the low range to short-lived ones, which keeps the
numbers small in ``/proc/<pid>/fd`` listings and in any third-party code that might still select().
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import signal
import socket

HIGH_FD = 2048
CLONE_FILES = 0x00000400

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]


def raise_fd(fd: int) -> int:
    """A CLOEXEC duplicate of ``fd`` numbered >= HIGH_FD; the original is closed."""
    try:
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
    except OSError:
        return fd  # RLIMIT_NOFILE too low: keep the original rather than fail
    os.close(fd)
    return new


def raise_socket(sock: socket.socket) -> socket.socket:
    fd = sock.detach()
    new = raise_fd(fd)
    return socket.socket(fileno=new)


def own_fd_table() -> None:
    """Give the calling thread a descriptor table of its own holding only 0, 1 and 2.

    Must run first thing in a thread made for it, and that thread must never touch a descriptor
    made by another thread (the numbers mean other files there), nor hand one out. Signals are
    blocked in it: a handler running there would write Python's wakeup byte to whatever file has
    that number in the private table.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    if _libc.unshare(CLONE_FILES) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_FILES): {os.strerror(err)}")
    # The copies hold the daemon's files open (a listening socket would outlive its close in the
    # main table): close them. Only this thread's table is affected.
    for name in os.listdir("/proc/thread-self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory's own descriptor, already gone
