"""Race-free access to files inside a root we do not trust (an image tree, a container's root).

A container's root is live while it runs: the container can swap any path component for a
symlink between our check and our use, and an image tarball can plant symlinks that point at
the host. Resolving such a path ourselves (lstat, readlink, then open by host path) leaves a
window in which the open follows a link out of the root. Here the kernel resolves instead:
``openat2(2)`` with ``RESOLVE_IN_ROOT`` relative to an ``O_PATH`` fd of the root treats that
fd as "/" for every symlink and "..", exactly as the container sees its files, and fails rather
than escape. ``RESOLVE_NO_MAGICLINKS`` refuses ``/proc/*/fd``-style jumps and ``RESOLVE_NO_XDEV``
refuses to leave the root's mount (no tree of ours has a mount inside it).

Everything then works on fds: a directory fd plus a single name (no "/" in it) for the ``*at``
calls, which never follow a symlink in last position unless asked. Costs: one syscall per open
(~3 µs); ``makedirs_in_root`` adds one per missing component.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Final

from nsnet.runtime._fs import split_clean

RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04
RESOLVE_BENEATH: Final = 0x08
RESOLVE_IN_ROOT: Final = 0x10
IN_ROOT: Final = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV

# openat2 has the same number on every architecture (the unified syscall table, Linux 5.6).
_SYS_OPENAT2: Final = 437
_MAX_SYMLINKS: Final = 40  # the kernel's own limit (MAXSYMLINKS)
# openat2 answers EAGAIN when a rename elsewhere raced its ".." checks; retrying is the fix.
_EAGAIN_RETRIES: Final = 16

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]  # fmt: skip


class UnsafeFile(Exception):
    """A file in the root is not what a plain read may touch (a FIFO, a device, too big)."""


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = IN_ROOT) -> int:
    """The raw syscall; errors come back as the matching OSError subclass."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    raw = os.fsencode(path)
    for _ in range(_EAGAIN_RETRIES):
        fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(raw),
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))  # fmt: skip
        if fd >= 0:
            return int(fd)
        e = ctypes.get_errno()
        if e == errno.EINTR or (e == errno.EAGAIN and not flags & os.O_NONBLOCK):
            continue
        raise OSError(e, os.strerror(e), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def open_root(path: str | os.PathLike[str]) -> int:
    """An O_PATH fd of a root, the anchor for every lookup below (the caller closes it)."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def open_in_root(root_fd: int, rel: str, flags: int, mode: int = 0) -> int:
    """``rel`` opened as the container would see it, never outside ``root_fd``."""
    return openat2(root_fd, "/".join(split_clean(rel)) or ".", flags, mode, IN_ROOT)


def reopen(fd: int, flags: int) -> int:
    """A real fd for the inode an O_PATH fd holds (same inode whatever the path does now)."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)


def read_regular(root_fd: int, rel: str, limit: int) -> bytes | None:
    """The content of a regular file in the root; None when it does not exist.

    Never waits on anything the root's owner controls: the lookup takes an O_PATH fd (opening
    nothing: no FIFO open that waits for a writer, no device driver's open), ``fstat`` must say
    regular file, and the read itself opens with O_NONBLOCK (a write lease held by the
    container makes such an open fail with EWOULDBLOCK instead of waiting up to
    lease-break-time). Larger than ``limit`` raises UnsafeFile rather than read a prefix.
    """
    try:
        path_fd = open_in_root(root_fd, rel, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"/{rel} is not a regular file")
        if st.st_size > limit:
            raise UnsafeFile(f"/{rel} is larger than {limit} bytes")
        try:
            fd = reopen(path_fd, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except BlockingIOError as e:
            raise UnsafeFile(f"/{rel} is locked by a lease") from e
    finally:
        os.close(path_fd)
    try:
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew after the fstat
                raise UnsafeFile(f"/{rel} is larger than {limit} bytes")
    finally:
        os.close(fd)


def makedirs_in_root(root_fd: int, rel: str, mode: int = 0o755) -> tuple[int, bool]:
    """``mkdir -p`` of ``rel`` as the container sees it; an O_PATH fd of the directory and
    whether this call created its last component.

    A missing component is made with ``mkdirat`` in its parent's fd. A dangling symlink on the
    way is followed the way the container would (its target re-read, relative to the root), so
    "lib -> usr/lib" then "lib/x/" makes usr/lib/x inside the root. Something that is neither a
    directory nor a symlink raises NotADirectoryError; a loop raises ELOOP.
    """
    parts = split_clean(rel)
    links = 0
    created_last = False
    for _ in range(_MAX_SYMLINKS + 4096):
        try:
            return open_in_root(root_fd, "/".join(parts), os.O_PATH | os.O_DIRECTORY), created_last
        except FileNotFoundError:
            pass
        # Find the first component that does not resolve, in the deepest parent that does.
        for k in range(len(parts)):
            try:
                os.close(open_in_root(root_fd, "/".join(parts[: k + 1]), os.O_PATH))
            except FileNotFoundError:
                break
        else:
            continue  # it appeared meanwhile: try the whole path again
        parent = open_in_root(root_fd, "/".join(parts[:k]), os.O_PATH | os.O_DIRECTORY)
        try:
            try:
                st = os.stat(parts[k], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                os.mkdir(parts[k], mode, dir_fd=parent)
                created_last = k == len(parts) - 1
                continue
            if not stat.S_ISLNK(st.st_mode):
                continue  # made by someone else in between: resolve again
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel)
            target = os.readlink(parts[k], dir_fd=parent)
        finally:
            os.close(parent)
        base = [] if target.startswith("/") else parts[:k]
        parts = base + split_clean(target) + parts[k + 1 :]
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel)


def ensure_directory(root: str | os.PathLike[str], rel: str, uid: int, gid: int) -> None:
    """Create ``rel`` inside ``root`` if missing and give the new directory to uid:gid.

    Only a directory this call made changes owner, and the chown goes through its fd, so a
    symlink planted on the path chowns nothing of the host's.
    """
    root_fd = open_root(root)
    try:
        fd, created = makedirs_in_root(root_fd, rel)
        try:
            if created:
                dfd = reopen(fd, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fchown(dfd, uid, gid)
                finally:
                    os.close(dfd)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)
