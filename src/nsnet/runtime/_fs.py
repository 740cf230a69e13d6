"""Path handling for trees we do not trust (image root filesystems).

An image's rootfs is written by whoever made the tarball, and a running container can rewrite its
own upper layer. Any symlink in there means "relative to the container's /", so following one
with the host's path resolution could reach the host's files. Everything here resolves paths
the way the kernel would inside the container (``chroot`` semantics) and never leaves the root.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

_MAX_SYMLINKS = 40  # the kernel's own limit (MAXSYMLINKS)


def split_clean(path: str) -> list[str]:
    """Components of ``path`` with "", "." removed; ".." kept for the caller to judge."""
    return [p for p in path.split("/") if p not in ("", ".")]


def lexical_relpath(name: str) -> str | None:
    """A tar-style member name as a path relative to the root, or None when it climbs out.

    Leading "/" is dropped (GNU tar and Docker both re-root absolute member names); ".." is
    folded lexically like Go's ``filepath.Clean`` and anything that would end above the root is
    refused, as Docker's untar does.
    """
    out: list[str] = []
    for part in split_clean(name):
        if part == "..":
            if not out:
                return None
            out.pop()
        else:
            out.append(part)
    return "/".join(out)


def resolve_in_root(root: Path, rel: str, follow_final: bool = True) -> Path:
    """Host path of ``rel`` as the container would see it, clamped inside ``root``.

    Symlinks met on the way are expanded against ``root`` (absolute targets restart at
    ``root``, ".." stops at it). Components that do not exist are taken literally, so the result
    is also the right place to create something. With ``follow_final`` False a symlink in last
    position is returned itself (for lstat, unlink, hard links).
    """
    parts = deque(split_clean(rel))
    resolved: list[str] = []
    links = 0
    while parts:
        name = parts.popleft()
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        if not parts and not follow_final:
            resolved.append(name)
            break
        current = os.path.join(root, *resolved, name)
        try:
            st = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(name)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(name)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", str(current))
        target = os.readlink(current)
        if target.startswith("/"):
            resolved = []
        parts.extendleft(reversed(split_clean(target)))
    return Path(root, *resolved)


def _chmod_and_retry(func: Callable[..., Any], path: str, _exc: object) -> None:
    # A tarball may hold directories without the write bit; as non-root that blocks rmtree.
    parent = os.path.dirname(path)
    try:
        os.chmod(parent, 0o700)
        func(path)
    except FileNotFoundError:
        pass


def remove_tree(path: Path) -> None:
    """rmtree that tolerates a missing path and read-only directories inside."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    shutil.rmtree(path, onerror=_chmod_and_retry)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Readers (another daemon, runc) must never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with open(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
