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
import hashlib
import json
import logging
import os
import re
import secrets
import threading
from pathlib import Path

from nsnet.errors import Conflict, Invalid, NotFound, SystemError_
from nsnet.model import Image, now_rfc3339
from nsnet.runtime._fs import remove_tree, write_atomic
from nsnet.runtime.unpack import build_busybox_rootfs, extract_rootfs

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
            size = build_busybox_rootfs(binary, tmp / "rootfs")
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
