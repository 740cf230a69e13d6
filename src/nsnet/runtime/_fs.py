"""Path helpers for trees we own: lexical checks of member names, removal, atomic writes.

Nothing here resolves a path inside a tree we do not trust (an image root, a container's
root): a resolver of our own that lstats and then opens by host path leaves a window in which
the tree's owner swaps a component for a symlink to the host. That is ``rootfs_files``' job,
done by the kernel with ``openat2(RESOLVE_IN_ROOT)``.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def _chmod_and_retry(func: Callable[..., Any], path: str, _exc: object) -> None:
    # A tarball may hold directories without the write bit; as non-root that blocks rmtree.
    parent = os.path.dirname(path)
    try:
        # Only a real directory: chmod follows links, and the tree is a container's layer.
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
        func(path)
    except (FileNotFoundError, NotADirectoryError):
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
