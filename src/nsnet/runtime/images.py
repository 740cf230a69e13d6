"""Images: root filesystems on disk, named the way Docker names them.

Layout under ``root`` (``<data-root>/images``)::

    <hex id>/image.json   Image.to_dict()
    <hex id>/rootfs/      the unpacked tree, used read-only as an overlayfs lower layer

An image directory appears by an atomic rename of a fully written temporary directory, so a
crash never leaves a half-unpacked image under a real id; leftovers (``.tmp-*``, ``.del-*``)
are swept at start. The tag index lives in memory and is rebuilt from the ``image.json`` files
at start: there are few images, and this keeps the files the only truth.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import json
import logging
import lzma
import os
import re
import secrets
import shutil
import stat
import subprocess
import tarfile
import threading
import zlib
from pathlib import Path

from nsnet.errors import Conflict, Invalid, NotFound, SystemError_
from nsnet.model import Image, now_rfc3339
from nsnet.runtime._fs import lexical_relpath, remove_tree, write_atomic
from nsnet.runtime.rootfs_files import makedirs_in_root, open_in_root, open_root

log = logging.getLogger(__name__)

BUSYBOX_BINARY = "/usr/bin/busybox"
BUSYBOX_TAG = "busybox:latest"
# Bumped when the busybox rootfs layout changes, so the id (and the image) changes with it.
_BUSYBOX_LAYOUT = b"nsnet busybox rootfs v1\n"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")
# Docker's reference grammar (distribution/reference), trimmed to what we accept.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DEFAULT_DOMAIN = "docker.io"


def normalize_reference(ref: str) -> str:
    """Docker's familiar form: "bb" -> "bb:latest", "docker.io/library/bb:1" -> "bb:1".

    Raises Invalid with Docker's "invalid reference format" wording for what Docker refuses.
    """
    if "@" in ref:
        raise Invalid(f"invalid reference format: digest references are not supported: {ref}")
    name, tag = ref, "latest"
    colon = ref.rfind(":")
    if colon > ref.rfind("/"):
        name, tag = ref[:colon], ref[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise Invalid("invalid reference format")
    if not name:
        raise Invalid("invalid reference format")
    slash = name.find("/")
    first = name[:slash] if slash >= 0 else ""
    if slash < 0 or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, remainder = _DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[slash + 1 :]
    if domain == "index.docker.io":
        domain = _DEFAULT_DOMAIN
    if remainder.lower() != remainder:
        raise Invalid(f"invalid reference format: repository name ({remainder}) must be lowercase")
    parts = remainder.split("/")
    if not all(_COMPONENT.fullmatch(p) for p in parts):
        raise Invalid("invalid reference format")
    if domain == _DEFAULT_DOMAIN:
        if len(parts) == 2 and parts[0] == "library":
            remainder = parts[1]
        familiar = remainder
    else:
        familiar = f"{domain}/{remainder}"
    return f"{familiar}:{tag}"


def _hex_of(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


class ImageStore:
    """The images of one daemon. Safe to call from several threads (imports run off the loop)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._images: dict[str, Image] = {}  # hex id -> image
        self._tags: dict[str, str] = {}  # "name:tag" -> hex id
        for entry in os.scandir(self.root):
            if entry.name.startswith((".tmp-", ".del-")):
                remove_tree(Path(entry.path))
                continue
            if not _HEX64.fullmatch(entry.name):
                continue
            try:
                data = json.loads(Path(entry.path, "image.json").read_text())
                image = Image.from_dict(data)
            except (OSError, ValueError, TypeError) as e:
                log.warning("ignoring unreadable image %s: %s", entry.name, e)
                continue
            self._images[entry.name] = image
            for tag in image.repo_tags:
                self._tags[tag] = entry.name

    # ---- queries -------------------------------------------------------------------------

    def list(self) -> list[Image]:
        with self._lock:
            return list(self._images.values())

    def rootfs(self, image: Image) -> Path:
        return self.root / _hex_of(image.id) / "rootfs"

    def resolve(self, ref: str) -> Image:
        """Docker's lookup order: full id, then a name, then an unambiguous id prefix."""
        return self._lookup(ref)[0]

    def _lookup(self, ref: str) -> tuple[Image, str | None]:
        """The image and, when ``ref`` named it by tag, that normalised tag."""
        ref = ref.strip()
        with self._lock:
            if ref.startswith("sha256:"):
                image = self._by_prefix(ref[len("sha256:") :])
                if image is None:
                    raise NotFound(f"No such image: {ref}")
                return image, None
            if _HEX64.fullmatch(ref):
                if ref in self._images:
                    return self._images[ref], None
                raise NotFound(f"No such image: {ref}")
            try:
                normalised: str | None = normalize_reference(ref)
            except Invalid:
                normalised = None
            if normalised is not None and normalised in self._tags:
                return self._images[self._tags[normalised]], normalised
            image = self._by_prefix(ref)
            if image is not None:
                return image, None
        raise NotFound(f"No such image: {normalised or ref}")

    def _by_prefix(self, prefix: str) -> Image | None:
        if not prefix or not _HEX.fullmatch(prefix):
            return None
        if prefix in self._images:
            return self._images[prefix]
        found = [h for h in self._images if h.startswith(prefix)]
        # Docker treats an ambiguous prefix as no match at all.
        return self._images[found[0]] if len(found) == 1 else None

    # ---- tags ----------------------------------------------------------------------------

    def _save(self, image: Image) -> None:
        path = self.root / _hex_of(image.id) / "image.json"
        write_atomic(path, json.dumps(image.to_dict(), indent=1).encode())

    def _set_tag(self, hex_id: str, tag: str) -> None:
        """Point ``tag`` at ``hex_id``, taking it from any other image as Docker does."""
        old = self._tags.get(tag)
        if old == hex_id:
            return
        if old is not None and old in self._images:
            previous = self._images[old]
            previous.repo_tags = [t for t in previous.repo_tags if t != tag]
            self._save(previous)
        image = self._images[hex_id]
        image.repo_tags.append(tag)
        self._save(image)
        self._tags[tag] = hex_id

    def tag(self, ref: str, repo_tag: str) -> Image:
        """``docker tag``: the engine gets it for free with the same rules as import."""
        tag = normalize_reference(repo_tag)
        with self._lock:
            image = self.resolve(ref)
            self._check_tag_name(tag)
            self._set_tag(_hex_of(image.id), tag)
            return image

    @staticmethod
    def _check_tag_name(tag: str) -> None:
        name = tag.rsplit(":", 1)[0]
        if _HEX64.fullmatch(name):
            raise Invalid(
                f"invalid repository name ({name}), cannot specify 64-byte hexadecimal strings"
            )

    # ---- creation ------------------------------------------------------------------------

    def _install(self, tmp: Path, image: Image, tag: str | None) -> Image:
        """Move a finished temporary directory into place (or drop it if someone beat us)."""
        hex_id = _hex_of(image.id)
        with self._lock:
            if hex_id in self._images:
                remove_tree(tmp)
            else:
                write_atomic(tmp / "image.json", json.dumps(image.to_dict(), indent=1).encode())
                os.rename(tmp, self.root / hex_id)
                self._images[hex_id] = image
            if tag is not None:
                self._set_tag(hex_id, tag)
            return self._images[hex_id]

    def _tmpdir(self) -> Path:
        tmp = self.root / f".tmp-{secrets.token_hex(8)}"
        tmp.mkdir(mode=0o700)
        return tmp

    def ensure_busybox(self) -> Image:
        """A usable image without any registry: Debian's static busybox plus a minimal /etc."""
        with self._lock:
            if BUSYBOX_TAG in self._tags:
                return self._images[self._tags[BUSYBOX_TAG]]
        binary = Path(os.path.realpath(BUSYBOX_BINARY))
        if not binary.is_file():
            raise SystemError_(f"{BUSYBOX_BINARY} is missing (install busybox-static)")
        digest = hashlib.sha256()
        with open(binary, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
        digest.update(_BUSYBOX_LAYOUT)
        image_id = "sha256:" + digest.hexdigest()
        with self._lock:
            if _hex_of(image_id) in self._images:
                self._set_tag(_hex_of(image_id), BUSYBOX_TAG)
                return self._images[_hex_of(image_id)]
        tmp = self._tmpdir()
        try:
            size = _build_busybox_rootfs(binary, tmp / "rootfs")
            image = Image(id=image_id, repo_tags=[], created=now_rfc3339(), size=size)
            return self._install(tmp, image, BUSYBOX_TAG)
        except BaseException:
            remove_tree(tmp)
            raise

    def import_tar(self, tar_path: Path, repo_tag: str | None) -> Image:
        """``docker import``: the id is the tarball's sha256, as Docker's is for a one-layer
        import, so importing the same bytes twice yields the same image."""
        tag = normalize_reference(repo_tag) if repo_tag else None
        if tag is not None:
            self._check_tag_name(tag)
        try:
            with open(tar_path, "rb") as f:
                image_id = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError as e:
            raise Invalid(f"cannot read {tar_path}: no such file") from e
        with self._lock:
            hex_id = _hex_of(image_id)
            if hex_id in self._images:
                if tag is not None:
                    self._set_tag(hex_id, tag)
                return self._images[hex_id]
        tmp = self._tmpdir()
        try:
            size = extract_rootfs(tar_path, tmp / "rootfs")
            image = Image(id=image_id, repo_tags=[], created=now_rfc3339(), size=size)
            return self._install(tmp, image, tag)
        except BaseException:
            remove_tree(tmp)
            raise

    # ---- removal -------------------------------------------------------------------------

    def remove(self, ref: str, force: bool, in_use: bool) -> builtins.list[dict[str, str]]:
        """``docker rmi``, following moby's image_delete.go.

        ``in_use`` means some container (running or stopped) has this image as its overlay
        lower layer. Its files then cannot go, whatever ``force`` says: deleting them would pull
        files out from under the container. With ``force`` we untag and keep the image
        (dangling, like Docker leaves an image a running container uses); it can be removed by
        id once no container uses it.
        """
        with self._lock:
            image, by_tag = self._lookup(ref)
            hex_id = _hex_of(image.id)
            short = hex_id[:12]
            records: builtins.list[dict[str, str]] = []
            if by_tag is not None:
                if in_use and not force and len(image.repo_tags) <= 1:
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{ref}" (must force)'
                        f" - container is using its referenced image {short}"
                    )
                self._untag(image, by_tag)
                records.append({"Untagged": by_tag})
                if image.repo_tags:
                    return records
            else:
                if len(image.repo_tags) > 1 and not force:
                    raise Conflict(
                        f"conflict: unable to delete {short} (must be forced)"
                        " - image is referenced in multiple repositories"
                    )
                if in_use and not force:
                    raise Conflict(
                        f"conflict: unable to delete {short} (must be forced)"
                        " - image is being used by a container"
                    )
                if in_use and not image.repo_tags:
                    raise Conflict(
                        f"conflict: unable to delete {short} (cannot be forced)"
                        " - image is being used by a container"
                    )
                for t in list(image.repo_tags):
                    self._untag(image, t)
                    records.append({"Untagged": t})
            if in_use:
                return records
            del self._images[hex_id]
            trash = self.root / f".del-{hex_id}-{secrets.token_hex(4)}"
            os.rename(self.root / hex_id, trash)
        remove_tree(trash)
        records.append({"Deleted": image.id})
        return records

    def _untag(self, image: Image, tag: str) -> None:
        image.repo_tags = [t for t in image.repo_tags if t != tag]
        self._tags.pop(tag, None)
        self._save(image)


# ---- building rootfs trees ---------------------------------------------------------------

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def _build_busybox_rootfs(binary: Path, rootfs: Path) -> int:
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
