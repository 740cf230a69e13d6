"""Hostile image tarballs never change anything outside the image.

Each case is a tarball written to attack the importer: absolute names, "..", symlinks and hard
links that point out, a symlinked parent directory, device nodes, FIFOs, setuid files, and the
same name repeated with different types (the classic "directory now, symlink later" trick
against a final chmod pass). After each import, a canary file and a canary directory outside
the image must keep their mode, owner, content and mtime, and nothing may appear next to them.
A seeded property test then throws random member sequences over the same building blocks.

Runs as root or not; as root the owner checks bite (a chown through a link would show).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsnet.errors import Invalid
from nsnet.runtime.images import ImageStore

DIR, REG, SYM, LNK, FIFO, CHR, BLK = (tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE,
                                      tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE,
                                      tarfile.BLKTYPE)  # fmt: skip
EVIL_MODE = 0o6777
EVIL_MTIME = 42
CANARY_MTIME = 1_000_000_000
CANARY_OWNER = (4321, 4321)
CLIMB = "../" * 24  # more ".." than the importer's tree is deep


@dataclass(frozen=True)
class M:
    """One tar member; ``@`` in name or link stands for the absolute path of the outside dir."""

    name: str
    kind: bytes = REG
    mode: int = EVIL_MODE
    link: str = ""
    data: bytes = b"pwned\n"


def _tar(members: list[M], out: Path, path: Path) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            info = tarfile.TarInfo(m.name.replace("@", str(out)))
            info.type = m.kind
            info.mode = m.mode
            info.mtime = EVIL_MTIME
            info.uid = info.gid = 0
            info.linkname = m.link.replace("@", str(out))
            if m.kind == REG:
                info.size = len(m.data)
                tf.addfile(info, io.BytesIO(m.data))
            else:
                tf.addfile(info)
    path.write_bytes(buf.getvalue())
    return path


def _make_canaries(out: Path) -> None:
    """outside/canary (file), outside/dir/{sub/, sub/file, file}: the host's files."""
    out.mkdir()
    (out / "canary").write_bytes(b"host file\n")
    (out / "dir" / "sub").mkdir(parents=True)
    (out / "dir" / "sub" / "file").write_bytes(b"host nested\n")
    (out / "dir" / "file").write_bytes(b"host dir file\n")
    for p in (out / "canary", out / "dir" / "sub" / "file", out / "dir" / "file"):
        p.chmod(0o644)
    for p in (out / "dir" / "sub", out / "dir"):
        p.chmod(0o755)
    for p in (out / "canary", out / "dir" / "sub" / "file", out / "dir" / "file",
              out / "dir" / "sub", out / "dir", out):  # fmt: skip
        if os.geteuid() == 0:
            os.chown(p, *CANARY_OWNER)
        os.utime(p, (CANARY_MTIME, CANARY_MTIME))


def _snapshot(top: Path) -> dict[str, tuple[object, ...]]:
    """Every path under ``top`` (and itself) with type, mode, owner, mtime and content."""
    snap: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(top):
        for name in [".", *dirs, *files]:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            content = Path(p).read_bytes() if stat.S_ISREG(s.st_mode) else b""
            snap[os.path.relpath(p, top)] = (s.st_mode, s.st_uid, s.st_gid, s.st_mtime_ns,
                                             s.st_size, content)  # fmt: skip
    return snap


# The hostile cases. "@" is the outside directory (absolute), so "@/canary" is the host file.
CASES: dict[str, list[M]] = {
    # The first trick: a directory's mode is applied at the end through the path, which
    # a later member has turned into a symlink to a host file.
    "dir-then-symlink-to-file": [M("x", DIR), M("x", SYM, link="@/canary")],
    "dir-then-symlink-to-dir": [M("d", DIR), M("d", SYM, link="@/dir")],
    # ... and the nested form: d/sub/ is re-resolved through d -> host dir at the end.
    "nested-dir-under-replaced-parent": [M("d", DIR, 0o755), M("d/sub", DIR),
                                         M("d", SYM, link="@/dir")],
    "absolute-names": [M("@/canary"), M("@/dir/sub", DIR), M("@/dir/new"),
                       M("@/dir/fifo", FIFO)],
    "dotdot-names": [M(CLIMB + "@/canary"[1:]), M("a/" + CLIMB + "@/dir/sub"[1:], DIR),
                     M("./../" + "@/dir/file"[1:])],
    "relative-symlink-out": [M("up", SYM, link=CLIMB + "@"[1:]), M("up/canary"),
                             M("up/dir", DIR), M("up/dir/sub", DIR), M("up/dir/new")],
    "absolute-symlink-out": [M("abs", SYM, link="@"), M("abs/canary"), M("abs/dir/sub", DIR),
                             M("abs/dir/fifo", FIFO), M("abs/dir/sub/file")],
    "symlinked-parent-directory": [M("p", SYM, link="@/dir"), M("p/sub", DIR),
                                   M("p/sub/file"), M("p/newdir", DIR), M("p/fifo", FIFO),
                                   M("p/file", SYM, link="/etc/passwd")],
    "symlink-to-root": [M("r", SYM, link="/"), M("r" + "@/canary"), M("r" + "@/dir", DIR),
                        M("r" + "@/dir/sub", DIR)],
    "dangling-symlink-parent": [M("g", SYM, link="@/dir/missing"), M("g/deep/er", DIR),
                                M("g/deep/er/file")],
    "symlink-replaced-by-file": [M("c", SYM, link="@/canary"), M("c"),
                                 M("e", SYM, link="@/dir"), M("e", DIR)],
    "hardlink-escapes": [M("h1", LNK, link=CLIMB + "@/canary"[1:]), M("h2", LNK, link="@/canary"),
                         M("s", SYM, link="@"), M("h3", LNK, link="s/canary"),
                         M("h4", LNK, link="s/dir/sub/file"), M("s2", SYM, link="@/canary"),
                         M("h5", LNK, link="s2"), M("h5/x", REG), M("h6", LNK, link="s/dir")],
    "hardlink-then-write": [M("f", REG, 0o644, data=b"mine"), M("h", LNK, link="f"),
                            M("l", SYM, link="@/canary"), M("hl", LNK, link="l"), M("hl")],
    "device-nodes": [M("dev/sda", BLK), M("dev/mem", CHR), M("@/canary", CHR),
                     M("s", SYM, link="@/dir"), M("s/sub", BLK), M("s/dev", CHR)],
    "fifos": [M("f", FIFO), M("f", SYM, link="@/canary"), M("f", FIFO),
              M("s", SYM, link="@/dir"), M("s/file", FIFO), M("s/sub", FIFO)],
    "setuid-files": [M("suid", REG, 0o6755, data=b"#!/bin/sh\n"), M("l", SYM, link="@/canary"),
                     M("l", REG, 0o4777), M("t", SYM, link="@/dir/file"), M("t/x", REG)],
    "repeated-types": [M("x", REG), M("x", DIR), M("x/y", DIR), M("x", SYM, link="@/dir"),
                       M("x/y", DIR), M("x/sub", DIR), M("x", FIFO), M("x", LNK, link="x"),
                       M("x", DIR), M("x/y", DIR), M("x", SYM, link="@/dir/sub"),
                       M("z", DIR), M("z/w", DIR), M("z", SYM, link="@/dir"),
                       M("z", REG), M("z", SYM, link="@/dir")],
    "root-member-and-dotdot": [M(".", DIR, 0o755), M("..", SYM, link="@"), M("../x", DIR),
                               M("./..", DIR), M("a/..", DIR, 0o755)],
    "symlink-loop": [M("a", SYM, link="b"), M("b", SYM, link="a"), M("a/x")],
    "file-as-parent": [M("f", REG), M("f/x", REG)],
    "dotdot-symlink-chain": [M("l1", SYM, link="../.."), M("l1/l2", SYM, link="../../.."),
                             M("l1/l2/x", DIR), M("l3", SYM, link="l1/l2/" + CLIMB),
                             M("l3/canary")],
}


@pytest.fixture
def world(tmp_path: Path) -> tuple[ImageStore, Path]:
    out = tmp_path / "outside"
    _make_canaries(out)
    return ImageStore(tmp_path / "data" / "images"), out


def _import_and_check(store: ImageStore, out: Path, members: list[M], tar: Path) -> None:
    before = _snapshot(out)
    _tar(members, out, tar)
    try:
        image = store.import_tar(tar, None)
    except Invalid:
        # A self-contradicting archive may be refused, but then nothing is left behind.
        assert [p.name for p in store.root.iterdir()] == []
    else:
        assert [p.name for p in store.root.iterdir()] == [image.id[7:]]
    assert _snapshot(out) == before


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_tarball_leaves_host_alone(world: tuple[ImageStore, Path], tmp_path: Path,
                                           case: str) -> None:  # fmt: skip
    store, out = world
    _import_and_check(store, out, CASES[case], tmp_path / f"{case}.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data", f"{case}.tar", "outside"])


def test_hostile_members_land_inside(world: tuple[ImageStore, Path], tmp_path: Path) -> None:
    """The kept-but-rerooted members are where the container will see them, modes intact."""
    store, out = world
    members = (CASES["symlinked-parent-directory"] + CASES["setuid-files"]
               + [M("x", DIR), M("x", SYM, link="@/canary"), M("x", DIR, 0o2750)])
    image = store.import_tar(_tar(members, out, tmp_path / "t.tar"), None)
    root = store.rootfs(image)
    inner = root / str(out)[1:] / "dir"  # p -> @/dir, resolved in the image's root
    assert (inner / "sub" / "file").read_bytes() == b"pwned\n"
    assert stat.S_IMODE((inner / "sub").lstat().st_mode) == EVIL_MODE
    assert stat.S_ISFIFO((inner / "fifo").lstat().st_mode)
    assert stat.S_IMODE((root / "suid").lstat().st_mode) == 0o6755
    assert stat.S_IMODE((root / "l").lstat().st_mode) == 0o4777
    x = (root / "x").lstat()
    assert stat.S_ISDIR(x.st_mode) and stat.S_IMODE(x.st_mode) == 0o2750
    assert x.st_mtime == EVIL_MTIME


# ---- property test -----------------------------------------------------------------------

_NAMES = ["x", "x/y", "d", "d/sub", "d/sub/file", "l", "l/canary", "l/dir/sub", "@/canary",
          CLIMB + "@/dir"[1:]]
_LINKS = ["@", "@/canary", "@/dir", "@/dir/sub", CLIMB + "@"[1:], "x", "d/sub", "/", ".."]
_member = st.builds(
    M,
    name=st.sampled_from(_NAMES),
    kind=st.sampled_from([DIR, REG, SYM, LNK, FIFO, CHR]),
    mode=st.sampled_from([EVIL_MODE, 0o755, 0o000, 0o1777]),
    link=st.sampled_from(_LINKS),
)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(members=st.lists(_member, min_size=1, max_size=12))
def test_random_hostile_tarballs(members: list[M]) -> None:
    with tempfile.TemporaryDirectory(prefix="nsnet-hostile-") as tmp:
        base = Path(tmp)
        out = base / "outside"
        _make_canaries(out)
        store = ImageStore(base / "data" / "images")
        _import_and_check(store, out, members, base / "t.tar")
        assert sorted(p.name for p in base.iterdir()) == ["data", "outside", "t.tar"]
