"""``--user`` for a container: names looked up in the container's own /etc/passwd and /etc/group.

Those files belong to the container, which can turn them into a FIFO (an open for reading
waits for a writer forever), a device node, a huge file, or a symlink it swaps while we read.
They are read only through ``rootfs_files.read_regular``: resolved by the kernel inside the
container's root, regular files only, opened without waiting, at most ``DB_LIMIT`` bytes. So
a lookup never waits on the container, and a bad file fails that one request with a 400.

``lookup_user_async`` also moves the read off the event loop with a timeout, for callers on the
loop that can await (exec); the disk read of a capped regular file is the only wait left.
"""

from __future__ import annotations

import asyncio
import os
from typing import Final

from nsnet.errors import Invalid, SystemError_
from nsnet.runtime.rootfs_files import UnsafeFile, open_root, read_regular

# Docker has no limit; a passwd file of 1 MiB holds some 20,000 users.
DB_LIMIT: Final = 1 << 20
LOOKUP_TIMEOUT: Final = 10.0

UserIds = tuple[int, int, list[int]]


def _read_db(root_fd: int, rel: str) -> list[list[str]]:
    """Entries of a passwd-style file as the container sees it; [] when it has none."""
    try:
        raw = read_regular(root_fd, rel, DB_LIMIT)
    except UnsafeFile as e:
        raise Invalid(f"cannot read the container's {e}") from e
    except OSError as e:
        raise Invalid(f"cannot read the container's /{rel}: {e.strerror}") from e
    if raw is None:
        return []
    text = raw.decode("utf-8", "replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def lookup_user(rootfs: str | os.PathLike[str], user: str) -> UserIds:
    """Docker's ``--user`` forms: "", "uid", "uid:gid", "name", "name:group".

    A numeric uid absent from /etc/passwd is allowed (gid 0), as in Docker; names must exist.
    Supplementary groups come from /etc/group, as runc's own user lookup would give them.
    """
    if not user:
        return 0, 0, []
    root_fd = open_root(rootfs)
    try:
        return _lookup(root_fd, user)
    finally:
        os.close(root_fd)


def _lookup(root_fd: int, user: str) -> UserIds:
    name, _, group = user.partition(":")
    passwd = _read_db(root_fd, "etc/passwd")
    entry: list[str] | None = None
    for row in passwd:
        if len(row) >= 4 and (row[2] == name if name.isdigit() else row[0] == name):
            entry = row
            break
    if name.isdigit():
        uid = int(name)
    elif entry is None:
        raise Invalid(f"unable to find user {name}: no matching entries in passwd file")
    elif entry[2].isdigit():
        uid = int(entry[2])
    else:
        raise Invalid(f"unable to find user {name}: invalid uid in passwd file")
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    groups = _read_db(root_fd, "etc/group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            match = [g for g in groups if len(g) >= 3 and g[0] == group and g[2].isdigit()]
            if not match:
                raise Invalid(f"unable to find group {group}: no matching entries in group file")
            gid = int(match[0][2])
    extra: list[int] = []
    if entry is not None:
        for g in groups:
            if len(g) >= 4 and g[2].isdigit() and entry[0] in g[3].split(","):
                gid_g = int(g[2])
                if gid_g != gid and gid_g not in extra:
                    extra.append(gid_g)
    return uid, gid, extra


async def lookup_user_async(rootfs: str | os.PathLike[str], user: str,
                            timeout: float = LOOKUP_TIMEOUT) -> UserIds:  # fmt: skip
    """``lookup_user`` in a worker thread; a lookup that hangs anyway fails this request only."""
    if not user:
        return 0, 0, []
    try:
        return await asyncio.wait_for(asyncio.to_thread(lookup_user, rootfs, user), timeout)
    except TimeoutError as e:
        raise SystemError_(f"looking up user {user!r} in the container timed out") from e
