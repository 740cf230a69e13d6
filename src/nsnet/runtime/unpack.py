"""Image root trees, made from a tarball (``docker import``) or from the host's busybox.

The tarball is the image's, so hostile: every member is created through descriptors resolved
inside the new root (``rootfs_files``), never by a host path the archive could redirect with a
symlink it planted earlier; what the archive gets wrong is a 400 for the import, not a daemon
error. See ``extract_rootfs`` for what is kept and what is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
import zlib
from pathlib import Path

from nsnet.errors import Invalid, SystemError_
from nsnet.runtime._fs import lexical_relpath
from nsnet.runtime.rootfs_files import makedirs_in_root, open_in_root, open_root

log = logging.getLogger("nsnet.runtime.images")

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def build_busybox_rootfs(binary: Path, rootfs: Path) -> int:
    """A root made of the host's busybox and its applets, for ``busybox:latest`` without a
    registry; returns its size as ``_tree_size`` counts it."""
    applets = subprocess.run(
        [str(binary), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    rootfs.mkdir(mode=0o755)
    for d in ("bin", "etc", "proc", "sys", "dev", "root", "var", "usr", "usr/bin", "sbin",
              "usr/sbin", "home"):  # fmt: skip
        (rootfs / d).mkdir(mode=0o755, exist_ok=True)
    (rootfs / "root").chmod(0o700)
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp").chmod(0o1777)
    shutil.copyfile(binary, rootfs / "bin" / "busybox")  # copies the content: cp -L
    (rootfs / "bin" / "busybox").chmod(0o755)
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            os.symlink("busybox", rootfs / "bin" / applet)
    etc = rootfs / "etc"
    (etc / "passwd").write_text(_PASSWD)
    (etc / "group").write_text(_GROUP)
    for name in ("hosts", "resolv.conf", "hostname"):
        (etc / name).write_text("")
    for p in (etc / "passwd", etc / "group", etc / "hosts", etc / "resolv.conf",
              etc / "hostname"):  # fmt: skip
        p.chmod(0o644)
    return _tree_size(rootfs)


def _tree_size(root: Path) -> int:
    """Bytes of regular files, each inode once (what Docker's "Size" means for one layer)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
# The archive contradicts itself (a file where a later member needs a directory, a symlink
# loop on a member's path): the image's fault, so a 400, not a daemon error.
_ARCHIVE_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ELOOP,
                             errno.EXDEV, errno.ENAMETOOLONG})  # fmt: skip

# (st_dev, st_ino) of a directory the import made, with the member whose mode it gets.
_DirModes = dict[tuple[int, int], tarfile.TarInfo]


def extract_rootfs(tar_path: Path, dest: Path) -> int:
    """Unpack a rootfs tarball into ``dest`` (created here); returns the image size.

    Our own extractor rather than ``TarFile.extractall``: every path is resolved inside
    ``dest`` with container semantics (a member below a symlink lands where the container
    would see it, never outside), members that climb out with ".." are skipped, device nodes
    are skipped (a daemon should not mint devices from user input), while modes, setuid bits,
    owners (when root) and absolute symlinks are kept as a rootfs needs them.

    Nothing is ever done through a path the tarball can redirect: parents are resolved by the
    kernel inside the root (``rootfs_files``), each member is created, owned and dated through
    its parent's fd and its own name or fd, never following a symlink in last position. The
    directory modes, applied last, go to the directories this import made, found again by
    inode in a walk that does not follow links: a member that later turns ``x/`` into
    ``x -> /host/file`` (or swaps a parent of ``x/sub/``) gets nothing of the host's chmodded.
    """
    dest.mkdir(mode=0o755)
    as_root = os.geteuid() == 0
    dir_modes: _DirModes = {}
    size = 0
    member: tarfile.TarInfo | None = None
    root_fd = open_root(dest)
    try:
        try:
            # Not stream mode ("r|*"): it takes a truncated gzip/xz stream for a short archive,
            # where GzipFile/LZMAFile raise EOFError. Members are still read front to back.
            with tarfile.open(tar_path, "r:*") as tf:
                for member in tf:
                    size += _extract_member(tf, member, root_fd, dir_modes, as_root, tar_path)
        except _TAR_ERRORS as e:
            raise Invalid(f"invalid tar archive {tar_path.name}: {e}") from e
        except OSError as e:
            if e.errno in _ARCHIVE_ERRNOS:
                name = member.name if member is not None else "?"
                raise Invalid(f"cannot extract {name!r} from {tar_path.name}: {e.strerror}") from e
            raise SystemError_(f"cannot extract {tar_path.name}: {e}") from e
        if dir_modes:
            _apply_dir_modes(root_fd, dir_modes)
    finally:
        os.close(root_fd)
    return size


def _extract_member(tf: tarfile.TarFile, member: tarfile.TarInfo, root_fd: int,
                    dir_modes: _DirModes, as_root: bool, tar_path: Path) -> int:
    """Create one member; returns the bytes of regular file data it added."""
    rel = lexical_relpath(member.name)
    if rel is None:
        log.warning("import %s: skipping %r: outside the root", tar_path, member.name)
        return 0
    if rel == "":
        if member.isdir():
            dir_modes[_ident(os.fstat(root_fd))] = member
        return 0
    if member.ischr() or member.isblk():
        return 0
    if not (member.isdir() or member.isreg() or member.issym() or member.islnk()
            or member.isfifo()):  # fmt: skip
        log.warning("import %s: skipping %r: unsupported type", tar_path, member.name)
        return 0
    parent_rel, _, base = rel.rpartition("/")
    parent, _ = makedirs_in_root(root_fd, parent_rel)
    try:
        return _create(tf, member, parent, base, root_fd, dir_modes, as_root, tar_path)
    finally:
        os.close(parent)


def _create(tf: tarfile.TarFile, member: tarfile.TarInfo, parent: int, base: str,
            root_fd: int, dir_modes: _DirModes, as_root: bool, tar_path: Path) -> int:
    times = (member.mtime, member.mtime)
    mode = member.mode & 0o7777
    if member.isdir():
        try:
            st: os.stat_result | None = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            _clear(parent, base, dir_modes)
            os.mkdir(base, 0o700, dir_fd=parent)
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent)  # fmt: skip
        try:
            if as_root:
                os.fchown(fd, member.uid, member.gid)
            dir_modes[_ident(os.fstat(fd))] = member
        finally:
            os.close(fd)
        return 0
    if member.islnk():
        return _hard_link(member, parent, base, root_fd, dir_modes, tar_path)
    _clear(parent, base, dir_modes)
    if member.issym():
        os.symlink(member.linkname, base, dir_fd=parent)
        if as_root:
            os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        os.utime(base, times, dir_fd=parent, follow_symlinks=False)
        return 0
    if member.isreg():
        src = tf.extractfile(member)
        assert src is not None
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent)  # fmt: skip
        with open(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            _own_and_date(fd, member, mode, times, as_root)
        return member.size
    # A FIFO: opened for reading with O_NONBLOCK, which returns at once (no writer needed).
    os.mkfifo(base, 0o600, dir_fd=parent)
    fd = os.open(base, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        _own_and_date(fd, member, mode, times, as_root)
    finally:
        os.close(fd)
    return 0


def _own_and_date(fd: int, member: tarfile.TarInfo, mode: int, times: tuple[float, float],
                  as_root: bool) -> None:  # fmt: skip
    if as_root:
        os.fchown(fd, member.uid, member.gid)
    os.fchmod(fd, mode)  # after chown, which drops setuid
    os.utime(fd, times)


def _hard_link(member: tarfile.TarInfo, parent: int, base: str, root_fd: int,
               dir_modes: _DirModes, tar_path: Path) -> int:
    """A hard link to a member already inside the root (resolved in it, last link kept)."""
    link_rel = lexical_relpath(member.linkname)
    if not link_rel:
        log.warning("import %s: skipping hard link %r -> %r: outside the root",
                    tar_path, member.name, member.linkname)  # fmt: skip
        return 0
    src_rel, _, src_base = link_rel.rpartition("/")
    try:
        src_parent = open_in_root(root_fd, src_rel, os.O_PATH | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        src_parent = -1
    try:
        if src_parent >= 0:
            _clear(parent, base, dir_modes)
            os.link(src_base, base, src_dir_fd=src_parent, dst_dir_fd=parent,
                    follow_symlinks=False)  # fmt: skip
            return 0
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        pass  # missing, or a directory (the kernel refuses those with EPERM)
    finally:
        if src_parent >= 0:
            os.close(src_parent)
    log.warning("import %s: skipping hard link %r -> %r: no such file",
                tar_path, member.name, member.linkname)  # fmt: skip
    return 0


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _apply_dir_modes(root_fd: int, dir_modes: _DirModes) -> None:
    """Directory modes and times, last and bottom-up: a read-only directory must not block its
    own contents, and writing into a directory would bump the mtime we set. ``fwalk`` never
    follows a symlink and hands each directory over as an fd, so what is chmodded is the
    directory the walk stands in, inside the root."""
    for _top, _dirs, _files, dfd in os.fwalk(".", topdown=False, dir_fd=root_fd):
        member = dir_modes.get(_ident(os.fstat(dfd)))
        if member is None:
            continue
        os.fchmod(dfd, member.mode & 0o7777)
        with contextlib.suppress(OSError, OverflowError, ValueError):
            os.utime(dfd, (member.mtime, member.mtime))


def _clear(parent: int, base: str, dir_modes: _DirModes) -> None:
    """Make room for a member; a later member replaces an earlier one, as tar does. The
    directories removed are forgotten, so their mode cannot land on a later inode."""
    try:
        st = os.stat(base, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(base, dir_fd=parent)
        return
    dir_modes.pop(_ident(st), None)
    for _top, _dirs, _files, dfd in os.fwalk(base, dir_fd=parent):
        dir_modes.pop(_ident(os.fstat(dfd)), None)
    shutil.rmtree(base, dir_fd=parent)
