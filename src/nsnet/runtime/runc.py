"""The OCI runtime driver: bundles on overlayfs, and runc calls.

Containers are started with ``runc run -d``: no shim process per container. The daemon is a
child subreaper (``become_subreaper``), so when ``runc run -d`` exits, the container's init is
reparented to the daemon, which then learns its exit status with a pidfd (``wait_exit``).

Layout (``cid`` is the container id)::

    <exec_root>/runc/                     runc's state (--root), private to this daemon
    <exec_root>/containers/<cid>/bundle/  config.json, rootfs/ (the overlay mount), pid
    <data_root>/containers/<cid>/         upper/, work/ (the writable layer), stdout.log,
                                          stderr.log

Nothing here forks per operation except runc itself: config.json is written in Python, the
overlay is mounted with mount(2) through ctypes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nsnet.errors import Invalid, SystemError_
from nsnet.fds import raise_fd
from nsnet.runtime._fs import remove_tree, write_atomic
from nsnet.runtime.rootfs_files import ensure_directory
from nsnet.runtime.seccomp import build_profile, kernel_version
from nsnet.runtime.users import UserIds, lookup_user, lookup_user_async

log = logging.getLogger(__name__)

# ``netns_path`` value asking runc for a fresh, empty network namespace of the container's own
# (only ``lo``). None means the daemon's namespace (Docker's "host" mode); a path joins it.
NEW_NETNS: Final = ""

DEFAULT_PATH: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default capability set (moby oci/caps/defaults.go): enough for ping (NET_RAW) and
# for binding low ports, nothing that reaches the host.
DEFAULT_CAPABILITIES: Final = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

_MOUNTS: Final[tuple[dict[str, Any], ...]] = (
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    },
    {
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    },
)

# Docker's list (moby daemon/pkg/oci/defaults.go): files that leak host state or let a
# container poke hardware. /proc/interrupts and the per-CPU thermal_throttle counters are a
# side channel (GHSA-6fw5-f8r9-fgfm), powercap's energy counters another (GHSA-jq35-85cj-fj4p).
_MASKED_PATHS: Final = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

_CPU_SYSFS: Final = "/sys/devices/system/cpu"


def _thermal_throttle_paths() -> tuple[str, ...]:
    """The per-CPU thermal_throttle directories this host has: Docker masks those present,
    and sysfs only has them on some CPUs (Intel's thermal driver)."""
    try:
        names = os.listdir(_CPU_SYSFS)
    except OSError:
        return ()
    cpus = sorted((n for n in names if re.fullmatch(r"cpu\d+", n)), key=lambda n: int(n[3:]))
    return tuple(
        p for p in (f"{_CPU_SYSFS}/{n}/thermal_throttle" for n in cpus) if os.path.isdir(p)
    )


_READONLY_PATHS: Final = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
# Docker sets these in every container with a network namespace of its own (moby 20.10+):
# unprivileged users may ping and bind low ports *inside* the container.
_NETNS_SYSCTLS: Final = {
    "net.ipv4.ping_group_range": "0 2147483647",
    "net.ipv4.ip_unprivileged_port_start": "0",
}

# Files holding a container's environment (config.json) or output (logs): root only, as
# Docker's are (its logs are 0640 root:root under 0710 directories).
_PRIVATE_FILE_MODE: Final = 0o600

# runc's own rule for container ids, which also keeps them safe as path components.
_CID = re.compile(r"[A-Za-z0-9_+\-.]+")

_NOT_RUNNING = ("not running", "does not exist", "stopped")

# ---- syscalls ----------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]  # fmt: skip
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]  # fmt: skip
_PR_SET_CHILD_SUBREAPER = 36
_MNT_DETACH = 2


def become_subreaper(enable: bool = True) -> None:
    """Make orphaned descendants (container inits after ``runc run -d``) our children.

    Without it they go to the host's init and their exit status is lost to us. Call once at
    daemon start, before the first container starts. ``enable=False`` undoes it (tests that
    share a process with others).
    """
    if _libc.prctl(_PR_SET_CHILD_SUBREAPER, int(enable), 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(e)}")


def _overlay_path(p: Path) -> str:
    # mount(2) option strings split on "," and overlay splits lowerdir on ":"; rather than
    # rely on escaping rules that changed across kernels, refuse such paths.
    s = str(p)
    if any(c in s for c in ",:\\"):
        raise Invalid(f"path not usable in an overlay mount: {s}")
    return s


def _mount_overlay(target: Path, lower: Path, upper: Path, work: Path) -> None:
    data = (
        f"lowerdir={_overlay_path(lower)},upperdir={_overlay_path(upper)},"
        f"workdir={_overlay_path(work)}"
    )
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, data.encode()) != 0:
        e = ctypes.get_errno()
        raise SystemError_(f"mount overlay on {target}: {os.strerror(e)}")


def _umount_all(target: Path) -> None:
    """Detach every mount stacked on ``target``; a missing or unmounted path is fine."""
    for _ in range(16):
        if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
            e = ctypes.get_errno()
            if e in (errno.EINVAL, errno.ENOENT):
                return
            raise SystemError_(f"umount {target}: {os.strerror(e)}")
    raise SystemError_(f"umount {target}: still mounted after 16 unmounts")


# ---- the driver --------------------------------------------------------------------------


@dataclass
class ProcessSpec:
    """What to run. ``user`` "" is root. ``tty`` is accepted but the process always runs
    without a terminal (its output goes to the log files), which is what the API needs."""

    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: str = ""
    tty: bool = False


def _error_text(raw: bytes) -> str:
    """runc's error messages from its ``--log-format json`` output (stderr or --log file)."""
    msgs: list[str] = []
    for line in raw.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            msgs.append(line)  # plain text: runc also prints the fatal error bare
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            msgs.append(str(entry.get("msg", "")))
    # The final error usually comes twice (logged, then printed); keep one of each.
    return "; ".join(dict.fromkeys(m for m in msgs if m))


class Runc:
    """runc for one daemon: its own ``--root``, bundles and writable layers."""

    def __init__(
        self,
        exec_root: Path,
        data_root: Path,
        runc_binary: str = "runc",
        cgroup_parent: str = "",
    ) -> None:
        """``cgroup_parent`` "" puts each container in a cgroup below the daemon's own (so a
        supervisor's limits and kill-on-stop cover the containers too); an absolute path such
        as "/nsnet" gives Docker's layout, where containers outlive a daemon stopped by
        systemd."""
        self.exec_root = Path(exec_root)
        self.data_root = Path(data_root)
        self.state_root = self.exec_root / "runc"
        # Resolved once: runc is exec'd on every start, and a PATH search per call adds up.
        self.runc_binary = shutil.which(runc_binary) or runc_binary
        self.cgroup_parent = cgroup_parent.rstrip("/")
        # Names this daemon's cgroups apart from another daemon's with the same container id.
        self._cg_tag = hashlib.sha256(str(self.exec_root).encode()).hexdigest()[:8]
        # Host facts the seccomp profile and masks depend on: read once, not per container.
        uname = os.uname()
        self._machine = uname.machine
        self._kernel = kernel_version(uname.release)
        self._thermal_masks = _thermal_throttle_paths()
        self._background: set[asyncio.Task[Any]] = set()
        self._detached: dict[int, tuple[int, asyncio.Task[int]]] = {}
        for d in (self.state_root, self.exec_root / "containers", self.data_root / "containers"):
            d.mkdir(parents=True, exist_ok=True)

    # ---- paths ---------------------------------------------------------------------------

    @staticmethod
    def _check_id(cid: str) -> None:
        if not _CID.fullmatch(cid) or cid in (".", ".."):
            raise Invalid(f"invalid container id {cid!r}")

    def _container_dir(self, cid: str) -> Path:
        self._check_id(cid)
        return self.exec_root / "containers" / cid

    def bundle_dir(self, cid: str) -> Path:
        return self._container_dir(cid) / "bundle"

    def data_dir(self, cid: str) -> Path:
        self._check_id(cid)
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
            if not path.startswith("/"):
                raise Invalid(f"bind destination must be absolute: {path}")
            if not Path(target).exists():
                raise Invalid(f"bind source does not exist: {target}")
        if process.cwd and not process.cwd.startswith("/"):
            raise Invalid(
                f"the working directory '{process.cwd}' is invalid, it needs to be an absolute path"
            )
        if not process.args:
            raise Invalid("No command specified")
        for d in (rootfs, data / "upper", data / "work"):
            d.mkdir(parents=True, exist_ok=True)
        mounted = False
        if not os.path.ismount(rootfs):
            _mount_overlay(rootfs, Path(rootfs_lower), data / "upper", data / "work")
            mounted = True
        try:
            # On the loop, but it never waits on the container: users.py reads only regular
            # files, without blocking, resolved inside the root.
            proc = self._process_dict(process, lookup_user(rootfs, process.user))
            if process.cwd and process.cwd != "/":
                # Docker creates a missing working directory, owned by the container's user;
                # through fds resolved inside the root, so a planted symlink reaches nothing.
                ensure_directory(rootfs, process.cwd, proc["user"]["uid"], proc["user"]["gid"])
            config = self._config(cid, proc, hostname, netns_path, bind_files, readonly_binds)
            write_atomic(
                bundle / "config.json", json.dumps(config).encode(), mode=_PRIVATE_FILE_MODE
            )
        except BaseException:
            if mounted:
                _umount_all(rootfs)
            raise
        return bundle

    def _process_dict(self, process: ProcessSpec, ids: UserIds) -> dict[str, Any]:
        uid, gid, extra = ids
        user: dict[str, Any] = {"uid": uid, "gid": gid}
        if extra:
            user["additionalGids"] = extra
        env = list(process.env)
        if not any(e.startswith("PATH=") for e in env):
            # runc looks the command up in the process's own PATH; Docker always has one.
            env.insert(0, DEFAULT_PATH)
        caps = list(DEFAULT_CAPABILITIES)
        return {
            "terminal": False,
            "user": user,
            "args": list(process.args),
            "env": env,
            "cwd": process.cwd or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": False,
        }

    def _config(
        self,
        cid: str,
        process: dict[str, Any],
        hostname: str,
        netns_path: str | None,
        bind_files: dict[str, Path],
        readonly_binds: bool,
    ) -> dict[str, Any]:
        namespaces: list[dict[str, str]] = [
            {"type": "pid"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
        ]
        linux: dict[str, Any] = {
            "resources": {
                "devices": [
                    {"allow": False, "access": "rwm"},
                    # Docker's: mknod of any device, opening none beyond runc's defaults.
                    {"allow": True, "type": "c", "access": "m"},
                    {"allow": True, "type": "b", "access": "m"},
                ]
            },
            "cgroupsPath": self.cgroups_path(cid),
            "namespaces": namespaces,
            "maskedPaths": [*_MASKED_PATHS, *self._thermal_masks],
            "readonlyPaths": list(_READONLY_PATHS),
            # Docker's default profile for Docker's default capabilities; the bounding set
            # decides, so a capability granted later widens the filter with it.
            "seccomp": build_profile(
                process["capabilities"]["bounding"], self._machine, self._kernel
            ),
        }
        if netns_path is not None:
            ns = {"type": "network"}
            if netns_path:
                ns["path"] = netns_path
            namespaces.append(ns)
            # Only ever with a namespace of the container's own: in host mode these would
            # change the host.
            linux["sysctl"] = dict(_NETNS_SYSCTLS)
        mounts = [dict(m) for m in _MOUNTS]
        for dest, src in bind_files.items():
            mounts.append(
                {
                    "destination": dest,
                    "type": "bind",
                    "source": str(src),
                    "options": ["rbind", "rprivate", "ro" if readonly_binds else "rw"],
                }
            )
        return {
            "ociVersion": "1.0.2-dev",
            "process": process,
            "root": {"path": "rootfs", "readonly": False},
            "hostname": hostname,
            "mounts": mounts,
            "linux": linux,
        }

    # ---- processes -----------------------------------------------------------------------

    def _base_args(self) -> list[str]:
        return [self.runc_binary, "--root", str(self.state_root)]

    async def _runc(self, *args: str) -> tuple[int, bytes, str]:
        """A short runc command; errors come back as text (its JSON log on stderr)."""
        proc = await asyncio.create_subprocess_exec(
            *self._base_args(),
            "--log-format",
            "json",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out, _error_text(err)

    async def start(self, cid: str) -> int:
        """``runc run -d``; returns the container init's host pid.

        runc hands its own stdout/stderr to the container, so those are the log files, and
        runc's errors go to a ``--log`` file instead. On failure runc has also printed the
        error to its stderr, i.e. into stderr.log: that tail is cut off again, so a failed
        start leaves no runc text in the container's log.
        """
        bundle = self.bundle_dir(cid)
        out_path, err_path = self.log_paths(cid)
        pid_file = bundle / "pid"
        runc_log = bundle / "runc.log"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        with contextlib.suppress(FileNotFoundError):
            runc_log.unlink()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        out_fd = os.open(out_path, flags, _PRIVATE_FILE_MODE)
        try:
            err_fd = os.open(err_path, flags, _PRIVATE_FILE_MODE)
        except BaseException:
            os.close(out_fd)
            raise
        try:
            # A log kept from an older version (or a restart) may have been made 0640.
            os.fchmod(out_fd, _PRIVATE_FILE_MODE)
            os.fchmod(err_fd, _PRIVATE_FILE_MODE)
            err_size = os.fstat(err_fd).st_size
            proc = await asyncio.create_subprocess_exec(
                *self._base_args(),
                "--log",
                str(runc_log),
                "--log-format",
                "json",
                "run",
                "--detach",
                "--pid-file",
                str(pid_file),
                "--bundle",
                str(bundle),
                cid,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
            )
        finally:
            os.close(out_fd)
            os.close(err_fd)
        rc = await proc.wait()
        if rc != 0:
            printed = b""
            with contextlib.suppress(OSError), open(err_path, "rb+") as f:
                f.seek(err_size)
                printed = f.read(1 << 16)
                f.truncate(err_size)
            logged = b""
            with contextlib.suppress(OSError):
                logged = runc_log.read_bytes()
            msg = _error_text(logged) or _error_text(printed) or f"runc run exited with {rc}"
            raise SystemError_(msg)
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError) as e:
            raise SystemError_(f"runc run did not leave a pid for {cid}: {e}") from e

    async def wait_exit(self, pid: int) -> int:
        """Wait for a container init to end and reap it; Docker's exit code (signal N: 128+N).

        The pidfd makes the wait an ordinary readable fd on the loop, so no thread and no
        SIGCHLD handler are involved, and nothing else's children are reaped by mistake.
        When the process is not our child (the daemon restarted and the container was
        reparented to the host's init), its status is not ours to read: we still wait for it
        to end, then report 255, the code Docker also reports when the status is lost.
        Call it once per pid: the first caller reaps, a second would get 255.
        """
        try:
            pidfd = raise_fd(os.pidfd_open(pid))
        except ProcessLookupError:
            return 255
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
                except ChildProcessError:
                    await _wait_readable(loop, pidfd)
                    return 255
                if res is not None:
                    if res.si_code == os.CLD_EXITED:
                        return res.si_status
                    return 128 + res.si_status
                await _wait_readable(loop, pidfd)
        finally:
            os.close(pidfd)

    async def kill(self, cid: str, sig: int) -> None:
        """Signal the container's init; a container already gone is not an error (stop races
        the process's own exit)."""
        self._check_id(cid)
        rc, _, err = await self._runc("kill", cid, str(int(sig)))
        if rc != 0 and not any(s in err for s in _NOT_RUNNING):
            raise SystemError_(f"runc kill {cid}: {err or rc}")

    async def delete(self, cid: str) -> None:
        """Forget the container in runc, unmount its root, remove the bundle. Idempotent: it
        is the undo of start and runs again at reconcile."""
        self._check_id(cid)
        rc, _, err = await self._runc("delete", "--force", cid)
        container_dir = self._container_dir(cid)
        rootfs = container_dir / "bundle" / "rootfs"
        _umount_all(rootfs)
        if os.path.ismount(rootfs):
            # Never rmtree through a mount: it would delete the container's files.
            raise SystemError_(f"{rootfs} is still mounted")
        remove_tree(container_dir)
        if rc != 0 and "does not exist" not in err:
            raise SystemError_(f"runc delete {cid}: {err or rc}")

    def remove_data(self, cid: str) -> None:
        """Drop the writable layer and logs. Idempotent. Unmounts first if delete was skipped:
        removing an upper dir under a live overlay is undefined behaviour for overlayfs."""
        data = self.data_dir(cid)
        _umount_all(self._container_dir(cid) / "bundle" / "rootfs")
        remove_tree(data)

    async def state(self, cid: str) -> dict[str, Any] | None:
        self._check_id(cid)
        rc, out, err = await self._runc("state", cid)
        if rc == 0:
            result: dict[str, Any] = json.loads(out)
            return result
        if "does not exist" in err:
            return None
        raise SystemError_(f"runc state {cid}: {err or rc}")

    async def exec(
        self, cid: str, process: ProcessSpec, detach: bool
    ) -> asyncio.subprocess.Process:
        """``runc exec``. Attached: the returned process's stdout/stderr are pipes carrying the
        command's output (and runc's own error text if the command could not start); its exit
        code is the command's. Detached: returns once the command runs (already waited; a
        failure to start raises SystemError_), and the command is reaped in the background.

        The process description goes through a memfd (``--process /proc/self/fd/N``), so
        there is no temporary file to clean up when the caller walks away.
        """
        if not process.args:
            raise Invalid("No exec command specified")
        if process.cwd and not process.cwd.startswith("/"):
            raise Invalid(
                f"the working directory '{process.cwd}' is invalid, it needs to be an absolute path"
            )
        bundle = self.bundle_dir(cid)
        rootfs = bundle / "rootfs"
        spec = self._process_dict(process, await lookup_user_async(rootfs, process.user))
        memfd = os.memfd_create("nsnet-exec-process", os.MFD_CLOEXEC)
        try:
            os.write(memfd, json.dumps(spec).encode())
            process_arg = f"/proc/self/fd/{memfd}"
            if not detach:
                # --log /dev/null: runc then prints only its final error, as plain text, on
                # stderr (without --log it prints logrus lines with timestamps instead).
                return await asyncio.create_subprocess_exec(
                    *self._base_args(),
                    "--log",
                    "/dev/null",
                    "exec",
                    "--process",
                    process_arg,
                    cid,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    pass_fds=(memfd,),
                )
            token = secrets.token_hex(6)
            pid_file = bundle / f"exec-{token}.pid"
            runc_log = bundle / f"exec-{token}.log"
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._base_args(),
                    "--log",
                    str(runc_log),
                    "--log-format",
                    "json",
                    "exec",
                    "--detach",
                    "--pid-file",
                    str(pid_file),
                    "--process",
                    process_arg,
                    cid,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    pass_fds=(memfd,),
                )
                rc = await proc.wait()
                if rc != 0:
                    logged = b""
                    with contextlib.suppress(OSError):
                        logged = runc_log.read_bytes()
                    raise SystemError_(_error_text(logged) or f"runc exec exited with {rc}")
                pid = int(pid_file.read_text().strip())
            finally:
                for p in (pid_file, runc_log):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
            # Keyed by the runc process the caller holds: its pid is unique while it lives.
            self._detached[id(proc)] = (pid, self._reap_later(pid))
            return proc
        finally:
            os.close(memfd)

    def take_detached(
        self, proc: asyncio.subprocess.Process
    ) -> tuple[int, asyncio.Task[int]] | None:
        """For a detached exec: the command's own pid and a task giving its exit code."""
        return self._detached.pop(id(proc), None)

    def _reap_later(self, pid: int) -> asyncio.Task[int]:
        """A detached exec'd process is reparented to us (the subreaper) when runc exits;
        reap it so it does not linger as a zombie, and keep its code for exec inspect."""

        async def reap() -> int:
            code = await self.wait_exit(pid)
            log.debug("detached exec pid %d exited with %d", pid, code)
            return code

        task = asyncio.get_running_loop().create_task(reap())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def list_ids(self) -> list[str]:
        """Containers runc keeps under our --root, read from its state dir (no fork)."""
        try:
            entries = list(os.scandir(self.state_root))
        except FileNotFoundError:
            return []
        return sorted(
            e.name
            for e in entries
            if e.is_dir(follow_symlinks=False)
            and os.path.exists(os.path.join(e.path, "state.json"))
        )


async def _wait_readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """A pidfd becomes readable when its process exits."""
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)
