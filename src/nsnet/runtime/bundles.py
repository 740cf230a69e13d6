"""Where a container's files live, and how its OCI bundle is made.

Layout (``cid`` is the container id)::

    <exec_root>/containers/<cid>/bundle/  config.json, rootfs/ (the overlay mount), pid
    <data_root>/containers/<cid>/         upper/, work/ (the writable layer), stdout.log,
                                          stderr.log

The bundle lives under the exec root (it goes with the daemon's run state), the writable
layer and the logs under the data root (they outlive a reboot, as Docker's do). A container id
is checked against runc's own rule before it becomes a path component, so no id names a path
outside these directories.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Final

from nsnet.errors import Invalid, SystemError_
from nsnet.runtime._fs import remove_tree, write_atomic
from nsnet.runtime.mounts import mount_overlay, umount_all
from nsnet.runtime.oci_spec import (
    HostFacts,
    ProcessSpec,
    check_bind_destination,
    check_command,
    config_dict,
    process_dict,
)
from nsnet.runtime.rootfs_files import ensure_directory
from nsnet.runtime.users import lookup_user

# Files holding a container's environment (config.json) or output (logs): root only, as
# Docker's are (its logs are 0640 root:root under 0710 directories).
PRIVATE_FILE_MODE: Final = 0o600

# runc's own rule for container ids, which also keeps them safe as path components.
_CID = re.compile(r"[A-Za-z0-9_+\-.]+")


def check_id(cid: str) -> None:
    """runc's rule for a container id, which also keeps it safe as a path component."""
    if not _CID.fullmatch(cid) or cid in (".", ".."):
        raise Invalid(f"invalid container id {cid!r}")


class Bundles:
    """The bundles and writable layers of one daemon's containers."""

    def __init__(
        self, exec_root: Path, data_root: Path, cgroup_parent: str, facts: HostFacts
    ) -> None:
        self.exec_root = Path(exec_root)
        self.data_root = Path(data_root)
        self.cgroup_parent = cgroup_parent.rstrip("/")
        self.facts = facts
        # Names this daemon's cgroups apart from another daemon's with the same container id.
        self._cg_tag = hashlib.sha256(str(self.exec_root).encode()).hexdigest()[:8]
        for d in (self.exec_root / "containers", self.data_root / "containers"):
            d.mkdir(parents=True, exist_ok=True)

    # ---- paths ---------------------------------------------------------------------------

    def container_dir(self, cid: str) -> Path:
        check_id(cid)
        return self.exec_root / "containers" / cid

    def bundle_dir(self, cid: str) -> Path:
        return self.container_dir(cid) / "bundle"

    def data_dir(self, cid: str) -> Path:
        check_id(cid)
        return self.data_root / "containers" / cid

    def log_paths(self, cid: str) -> tuple[Path, Path]:
        d = self.data_dir(cid)
        return d / "stdout.log", d / "stderr.log"

    def private_files(self) -> list[Path]:
        """config.json and logs of every container on disk (its environment and its output),
        for the daemon to make root-only at start (nsnet.file_modes)."""
        out: list[Path] = []
        for base, names in (
            (self.exec_root / "containers", ("bundle/config.json",)),
            (self.data_root / "containers", ("stdout.log", "stderr.log")),
        ):
            with contextlib.suppress(FileNotFoundError):
                out += [base / cid / n for cid in os.listdir(base) for n in names]
        return out

    def cgroups_path(self, cid: str) -> str:
        if self.cgroup_parent:
            return f"{self.cgroup_parent}/{self._cg_tag}-{cid}"
        return f"nsnet-{self._cg_tag}-{cid}"

    # ---- bundle --------------------------------------------------------------------------

    def prepare(
        self,
        cid: str,
        rootfs_lower: Path,
        process: ProcessSpec,
        hostname: str,
        netns_path: str | None,
        bind_files: dict[str, Path],
        readonly_binds: bool = False,
    ) -> Path:
        """Mount the container's root and write its config.json; returns the bundle.

        ``netns_path``: a path joins that namespace (the engine made it and its interfaces);
        None shares the daemon's (host mode); NEW_NETNS ("") has runc make an empty one.
        ``bind_files`` are bind-mounted over the container's files, so the engine must
        rewrite them in place (truncate and write), never by rename, to be seen inside.
        """
        bundle = self.bundle_dir(cid)
        rootfs = bundle / "rootfs"
        data = self.data_dir(cid)
        for path, target in bind_files.items():
            check_bind_destination(path)
            if not Path(target).exists():
                raise Invalid(f"bind source does not exist: {target}")
        check_command(process)
        for d in (rootfs, data / "upper", data / "work"):
            d.mkdir(parents=True, exist_ok=True)
        mounted = False
        if not os.path.ismount(rootfs):
            mount_overlay(rootfs, Path(rootfs_lower), data / "upper", data / "work")
            mounted = True
        try:
            # On the loop, but it never waits on the container: users.py reads only regular
            # files, without blocking, resolved inside the root.
            uid, gid, extra = lookup_user(rootfs, process.user)
            proc = process_dict(process, uid, gid, extra)
            if process.cwd and process.cwd != "/":
                # Docker creates a missing working directory, owned by the container's user;
                # through fds resolved inside the root, so a planted symlink reaches nothing.
                ensure_directory(rootfs, process.cwd, proc["user"]["uid"], proc["user"]["gid"])
            config = config_dict(
                proc,
                hostname=hostname,
                cgroups_path=self.cgroups_path(cid),
                netns_path=netns_path,
                host=self.facts,
                bind_files=bind_files,
                readonly_binds=readonly_binds,
            )
            write_atomic(
                bundle / "config.json", json.dumps(config).encode(), mode=PRIVATE_FILE_MODE
            )
        except BaseException:
            if mounted:
                umount_all(rootfs)
            raise
        return bundle

    def remove_bundle(self, cid: str) -> None:
        """Unmount the root and remove the bundle; never through a mount, which would
        delete the container's files. Idempotent."""
        container_dir = self.container_dir(cid)
        rootfs = container_dir / "bundle" / "rootfs"
        umount_all(rootfs)
        if os.path.ismount(rootfs):
            raise SystemError_(f"{rootfs} is still mounted")
        remove_tree(container_dir)

    def remove_data(self, cid: str) -> None:
        """Drop the writable layer and logs. Idempotent. Unmounts first if delete was skipped:
        removing an upper dir under a live overlay is undefined behaviour for overlayfs."""
        data = self.data_dir(cid)
        umount_all(self.container_dir(cid) / "bundle" / "rootfs")
        remove_tree(data)
