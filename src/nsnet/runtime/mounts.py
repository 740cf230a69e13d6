"""A container's root: an overlayfs over its image, mounted and unmounted with mount(2).

Through ctypes rather than ``mount -t overlay``: a fork+exec per container start costs
3-10 ms (docs/architecture.md, costs), the syscall well under one.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import Final

from nsnet.errors import Invalid, SystemError_

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]  # fmt: skip
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_MNT_DETACH: Final = 2
# A path stacked deeper than this is not ours: something mounts on it as fast as we unmount.
_MAX_STACK: Final = 16


def overlay_path(p: Path) -> str:
    """mount(2) option strings split on "," and overlay splits lowerdir on ":"; rather than
    rely on escaping rules that changed across kernels, such paths are refused."""
    s = str(p)
    if any(c in s for c in ",:\\"):
        raise Invalid(f"path not usable in an overlay mount: {s}")
    return s


def mount_overlay(target: Path, lower: Path, upper: Path, work: Path) -> None:
    """``lower`` read-only (the image, shared by its containers), ``upper`` the container's
    writable layer, ``work`` overlayfs's scratch directory on the same filesystem."""
    data = (
        f"lowerdir={overlay_path(lower)},upperdir={overlay_path(upper)},"
        f"workdir={overlay_path(work)}"
    )
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, data.encode()) != 0:
        e = ctypes.get_errno()
        raise SystemError_(f"mount overlay on {target}: {os.strerror(e)}")


def umount_all(target: Path) -> None:
    """Detach every mount stacked on ``target``; a missing or unmounted path is fine, so this
    is safe as an undo and at reconcile."""
    for _ in range(_MAX_STACK):
        if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
            e = ctypes.get_errno()
            if e in (errno.EINVAL, errno.ENOENT):
                return
            raise SystemError_(f"umount {target}: {os.strerror(e)}")
    raise SystemError_(f"umount {target}: still mounted after {_MAX_STACK} unmounts")
