"""Who may read what under the daemon's roots: root only, but for the API socket.

The data root holds the store (every container's environment, so its secrets), images and
writable layers; the exec root holds bundles (config.json: the environment again), namespace
files, the /etc files of sandboxes and the API socket. The rule is Docker's, made simple:

- data root 0700: nothing in it is for anyone but root;
- exec root 0711: others may pass through it to reach the API socket (0660, group ``nsnet``)
  but not list it; every directory directly inside it is 0700, so passing through leads
  nowhere else;
- files directly inside either root (``nsnet.db``, its ``-wal`` and ``-shm``) 0600;
  config.json and container logs 0600 (written so by the runtime, and fixed here for
  containers of an older run).

Applied at every start, not only when a directory is created: roots left by an older version
(or an operator's ``cp -r``) are tightened before the store is opened.

Why not ``umask(077)`` for the whole daemon: the overlay's upper directory gives the
container's ``/`` its mode and image layers are unpacked by the daemon, so a private umask
would make them 0700 and lock every non-root user out of the container's own files. Modes are
therefore set where the secrets are written, and this module fixes the containers around them.
The container's processes get their umask (0022) from runc, not from the daemon.

Nothing here follows a symlink: each file is opened with O_NOFOLLOW and changed by its fd,
so a link planted in place of a log cannot turn a chmod on to a host file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

DATA_ROOT_MODE: Final = 0o700
EXEC_ROOT_MODE: Final = 0o711
PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600


def _set_mode(path: Path, want_dir: int, want_file: int) -> None:
    """chmod by fd, never through a link; sockets, fifos and devices keep their modes."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        mode, flags = want_dir, flags | os.O_DIRECTORY
    elif stat.S_ISREG(st.st_mode):
        mode = want_file
    else:
        return
    if stat.S_IMODE(st.st_mode) == mode:
        return
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return  # gone, or swapped for a link since the lstat: not ours to change
        raise
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    log.info("tightened %s from %o to %o", path, stat.S_IMODE(st.st_mode), mode)


def secure_roots(data_root: Path, exec_root: Path) -> None:
    """Create both roots if needed, then give them and their direct children private modes.

    Call before the store is opened, so a new database is never visible to others even for
    the moment between its creation and a chmod.
    """
    for root, mode in ((data_root, DATA_ROOT_MODE), (exec_root, EXEC_ROOT_MODE)):
        root.mkdir(mode=mode, parents=True, exist_ok=True)
        # mkdir's mode passes through the umask, and an existing root keeps its old mode.
        _set_mode(root, mode, mode)
        restrict_children(root)


def restrict_children(root: Path) -> None:
    """Directories directly inside ``root`` 0700, regular files 0600; sockets (the API's)
    untouched. Cheap: one level only, never into a container's layers."""
    with contextlib.suppress(FileNotFoundError), os.scandir(root) as entries:
        for entry in entries:
            _set_mode(Path(entry.path), PRIVATE_DIR_MODE, PRIVATE_FILE_MODE)


def restrict_files(paths: Iterable[Path]) -> None:
    """0600 for each existing regular file in ``paths`` (config.json, logs)."""
    for p in paths:
        _set_mode(p, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE)
