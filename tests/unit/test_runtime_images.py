"""ImageStore: import, tag rules, lookups and removal, on a tmp dir (no root needed)."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
from pathlib import Path

import pytest

from nsnet.errors import Conflict, Invalid, NotFound
from nsnet.runtime.images import ImageStore, normalize_reference


def _add(tf: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
         mode: int = 0o644, linkname: str = "") -> None:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.mtime = 1_700_000_000
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


def make_tar(path: Path, compression: str = "", variant: bytes = b"") -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        _add(tf, "bin", tarfile.DIRTYPE, mode=0o755)
        _add(tf, "bin/tool", data=b"#!/bin/sh\necho tool\n" + variant, mode=0o4755)
        _add(tf, "etc", tarfile.DIRTYPE, mode=0o755)
        _add(tf, "etc/deep", tarfile.DIRTYPE, mode=0o700)
        _add(tf, "etc/deep/nested", tarfile.DIRTYPE, mode=0o555)
        _add(tf, "etc/deep/nested/file.txt", data=b"hello")
        _add(tf, "etc/link", tarfile.SYMTYPE, linkname="deep/nested/file.txt")
        _add(tf, "etc/hard", tarfile.LNKTYPE, linkname="etc/deep/nested/file.txt")
        # An absolute symlink is normal in a rootfs: it means the container's /etc.
        _add(tf, "etc/escape", tarfile.SYMTYPE, linkname="/etc")
        # Writing through it must stay inside the root.
        _add(tf, "etc/escape/through.txt", data=b"inside")
        _add(tf, "../evil", data=b"evil")
        _add(tf, "bin/../../evil2", data=b"evil")
        _add(tf, "etc/hardevil", tarfile.LNKTYPE, linkname="../../outside")
        _add(tf, "dev", tarfile.DIRTYPE, mode=0o755)
        _add(tf, "dev/null", tarfile.CHRTYPE, mode=0o666)
        _add(tf, "/abs.txt", data=b"reroot")
        _add(tf, "./tmp", tarfile.DIRTYPE, mode=0o1777)
    data = buf.getvalue()
    if compression == "gz":
        data = gzip.compress(data)
    elif compression == "xz":
        data = lzma.compress(data)
    path.write_bytes(data)
    return path


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "data" / "images")


def test_import_layout_and_safety(store: ImageStore, tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "a.tar")
    image = store.import_tar(tar, "bb")
    assert image.id == "sha256:" + hashlib.sha256(tar.read_bytes()).hexdigest()
    assert image.repo_tags == ["bb:latest"]
    root = store.rootfs(image)
    assert root == store.root / image.id[7:] / "rootfs"
    assert (store.root / image.id[7:] / "image.json").is_file()

    assert (root / "etc/deep/nested/file.txt").read_bytes() == b"hello"
    assert stat.S_IMODE((root / "etc/deep/nested").stat().st_mode) == 0o555
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "bin/tool").stat().st_mode) == 0o4755
    assert os.readlink(root / "etc/link") == "deep/nested/file.txt"
    assert (root / "etc/hard").stat().st_ino == (root / "etc/deep/nested/file.txt").stat().st_ino
    assert os.readlink(root / "etc/escape") == "/etc"
    # The member below the absolute symlink landed in the image's /etc, not the host's.
    assert (root / "etc/through.txt").read_bytes() == b"inside"
    assert not Path("/etc/through.txt").exists()
    assert (root / "abs.txt").read_bytes() == b"reroot"
    assert not (root / "dev/null").exists()
    for name in ("evil", "evil2", "outside"):
        assert not (store.root / name).exists()
        assert not (tmp_path / name).exists()
        assert not (tmp_path / "data" / name).exists()
    assert not (root / "etc/hardevil").exists()
    # Size counts regular file bytes once per inode.
    assert image.size == len(b"#!/bin/sh\necho tool\n") + len(b"hello") + len(b"inside") + 6
    # Nothing half-made left behind.
    assert sorted(p.name for p in store.root.iterdir()) == [image.id[7:]]


@pytest.mark.parametrize("compression", ["gz", "xz"])
def test_import_compressed(store: ImageStore, tmp_path: Path, compression: str) -> None:
    image = store.import_tar(make_tar(tmp_path / f"a.tar.{compression}", compression), None)
    assert image.repo_tags == []
    assert (store.rootfs(image) / "etc/deep/nested/file.txt").read_bytes() == b"hello"


def test_invalid_tar(store: ImageStore, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tarball at all" * 100)
    with pytest.raises(Invalid, match="invalid tar archive"):
        store.import_tar(bad, "bad")
    truncated = tmp_path / "trunc.tar.gz"
    data = make_tar(tmp_path / "full.tar.gz", "gz").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(Invalid):
        store.import_tar(truncated, "bad")
    assert list(store.root.iterdir()) == []
    assert store.list() == []


def test_reference_normalisation() -> None:
    assert normalize_reference("bb") == "bb:latest"
    assert normalize_reference("bb:1.2") == "bb:1.2"
    assert normalize_reference("docker.io/library/busybox:1") == "busybox:1"
    assert normalize_reference("docker.io/busybox") == "busybox:latest"
    assert normalize_reference("index.docker.io/foo/bar") == "foo/bar:latest"
    assert normalize_reference("localhost:5000/foo") == "localhost:5000/foo:latest"
    assert normalize_reference("quay.io/a/b:x") == "quay.io/a/b:x"
    for bad in ("BusyBox", "bb:", "a b", "bb@sha256:00", ":tag"):
        with pytest.raises(Invalid):
            normalize_reference(bad)


def test_tags_and_resolve(store: ImageStore, tmp_path: Path) -> None:
    a = store.import_tar(make_tar(tmp_path / "a.tar", variant=b"a"), "bb")
    b = store.import_tar(make_tar(tmp_path / "b.tar", variant=b"b"), "other:v1")
    hex_a = a.id[7:]
    assert store.resolve("bb").id == a.id
    assert store.resolve("bb:latest").id == a.id
    assert store.resolve("docker.io/library/bb:latest").id == a.id
    assert store.resolve(a.id).id == a.id
    assert store.resolve(hex_a).id == a.id
    assert store.resolve("sha256:" + hex_a[:10]).id == a.id
    # Shortest unambiguous prefix.
    common = ""
    for x, y in zip(hex_a, b.id[7:], strict=True):
        if x != y:
            break
        common += x
    assert store.resolve(hex_a[: len(common) + 1]).id == a.id
    if common:
        with pytest.raises(NotFound):
            store.resolve(common)
    assert store.resolve("other:v1").id == b.id
    with pytest.raises(NotFound) as e:
        store.resolve("other")
    assert e.value.message == "No such image: other:latest"
    with pytest.raises(NotFound) as e:
        store.resolve("busybox")
    assert e.value.message == "No such image: busybox:latest"

    # Retagging moves the tag (Docker behaviour); re-importing the same bytes is a no-op.
    again = store.import_tar(tmp_path / "b.tar", "bb")
    assert again.id == b.id
    assert store.resolve("bb").id == b.id
    assert store.resolve(hex_a).repo_tags == []
    assert sorted(store.resolve(b.id).repo_tags) == ["bb:latest", "other:v1"]

    # The index is rebuilt from disk.
    reopened = ImageStore(store.root)
    assert {i.id for i in reopened.list()} == {a.id, b.id}
    assert reopened.resolve("bb").id == b.id
    assert reopened.resolve("other:v1").id == b.id


def test_remove_semantics(store: ImageStore, tmp_path: Path) -> None:
    img = store.import_tar(make_tar(tmp_path / "a.tar"), "x")
    store.tag("x", "y:2")
    short = img.id[7:19]
    # By id with two tags: Docker refuses without force.
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        store.remove(short, force=False, in_use=False)
    # By tag with another tag left: only untag.
    assert store.remove("x", force=False, in_use=True) == [{"Untagged": "x:latest"}]
    assert store.resolve(img.id).repo_tags == ["y:2"]
    # Last tag, image used by a container, no force: conflict with Docker's wording.
    with pytest.raises(Conflict) as e:
        store.remove("y:2", force=False, in_use=True)
    assert e.value.message == (
        'conflict: unable to remove repository reference "y:2" (must force)'
        f" - container is using its referenced image {short}"
    )
    # Forced while in use: untagged, files kept (the container's overlay needs them).
    assert store.remove("y:2", force=True, in_use=True) == [{"Untagged": "y:2"}]
    assert store.rootfs(img).is_dir()
    with pytest.raises(Conflict, match="cannot be forced"):
        store.remove(img.id, force=True, in_use=True)
    # Dangling and unused: deleted by id.
    assert store.remove(img.id, force=False, in_use=False) == [{"Deleted": img.id}]
    assert not (store.root / img.id[7:]).exists()
    with pytest.raises(NotFound):
        store.resolve(img.id)

    img2 = store.import_tar(make_tar(tmp_path / "b.tar", variant=b"2"), "z")
    store.tag(img2.id, "w")
    assert store.remove(img2.id[7:12], force=True, in_use=False) == [
        {"Untagged": "z:latest"},
        {"Untagged": "w:latest"},
        {"Deleted": img2.id},
    ]
    img3 = store.import_tar(make_tar(tmp_path / "c.tar", variant=b"3"), "solo")
    assert store.remove("solo", force=False, in_use=False) == [
        {"Untagged": "solo:latest"},
        {"Deleted": img3.id},
    ]
    assert store.list() == []
    assert list(store.root.iterdir()) == []
    with pytest.raises(NotFound, match="No such image: solo:latest"):
        store.remove("solo", force=True, in_use=False)


def test_refuses_hex_repository_name(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="64-byte hexadecimal"):
        store.import_tar(make_tar(tmp_path / "a.tar"), "a" * 64)
