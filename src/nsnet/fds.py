"""Keep long-lived file descriptors out of the select() range.

pyroute2 0.7 waits on its netlink sockets with select(), which aborts the process (glibc's
FD_SETSIZE check) once a descriptor number reaches 1024. Each running container holds a few
descriptors in the daemon for its whole life (resolver sockets, a pidfd), so with a few hundred
containers the short-lived netlink sockets would be handed numbers above 1024. Moving the
long-lived ones to numbers >= HIGH_FD keeps the low range free for the ones select() sees.
"""

from __future__ import annotations

import fcntl
import os
import socket

HIGH_FD = 2048


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
