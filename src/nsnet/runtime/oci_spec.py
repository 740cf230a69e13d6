"""A container's OCI ``config.json``, as a pure function of what to run and the host's facts.

Everything here is data in, dict out: no file is read, nothing is mounted, no runc is called,
so the whole confinement a container gets (capabilities, namespaces, masked and read-only
paths, the seccomp profile, sysctls, device rules, bind mounts) is unit tested without root
(``tests/unit/test_runtime_oci_spec.py``). The two facts that come from the host (its machine
and kernel, for the seccomp profile, and the thermal_throttle directories it has, for the
masks) are read once by ``Runc`` and handed in as ``HostFacts``.

The defaults are Docker's (moby ``oci/defaults.go`` and ``oci/caps/defaults.go``), so a
program behaves as it does under ``docker run`` without extra flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nsnet.errors import Invalid
from nsnet.runtime.seccomp import build_profile

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

MOUNTS: Final[tuple[dict[str, Any], ...]] = (
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
MASKED_PATHS: Final = (
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

READONLY_PATHS: Final = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# Docker sets these in every container with a network namespace of its own (moby 20.10+):
# unprivileged users may ping and bind low ports *inside* the container.
NETNS_SYSCTLS: Final = {
    "net.ipv4.ping_group_range": "0 2147483647",
    "net.ipv4.ip_unprivileged_port_start": "0",
}

# Docker's: mknod of any device, opening none beyond runc's defaults.
_DEVICE_RULES: Final = (
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
)


@dataclass
class ProcessSpec:
    """What to run. ``user`` "" is root. ``tty``: the process gets a terminal (runc hands
    its pty master to the daemon over a console socket, runtime/console.py)."""

    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: str = ""
    tty: bool = False


@dataclass(frozen=True)
class HostFacts:
    """What the spec needs to know about the host: the seccomp profile depends on the
    machine and kernel, and Docker masks only the thermal_throttle directories present."""

    machine: str
    kernel: tuple[int, int]
    thermal_masks: tuple[str, ...] = ()


def check_cwd(cwd: str) -> None:
    """Docker's wording for a relative working directory (runc would refuse it later, with
    a message no script looks for)."""
    if cwd and not cwd.startswith("/"):
        raise Invalid(f"the working directory '{cwd}' is invalid, it needs to be an absolute path")


def check_bind_destination(dest: str) -> None:
    """A bind destination is a path inside the container, so it must be absolute."""
    if not dest.startswith("/"):
        raise Invalid(f"bind destination must be absolute: {dest}")


def check_command(process: ProcessSpec, missing: str = "No command specified") -> None:
    """What runc would refuse about the process, refused first with Docker's 400 wording and
    nothing made yet."""
    check_cwd(process.cwd)
    if not process.args:
        raise Invalid(missing)


def process_dict(
    process: ProcessSpec, uid: int, gid: int, extra_gids: Sequence[int]
) -> dict[str, Any]:
    """``config.json``'s ``process`` (also ``runc exec --process``): the ids come from the
    container's own user database, looked up by the caller."""
    user: dict[str, Any] = {"uid": uid, "gid": gid}
    if extra_gids:
        user["additionalGids"] = list(extra_gids)
    env = list(process.env)
    if not any(e.startswith("PATH=") for e in env):
        # runc looks the command up in the process's own PATH; Docker always has one.
        env.insert(0, DEFAULT_PATH)
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "terminal": process.tty,
        "user": user,
        "args": list(process.args),
        "env": env,
        "cwd": process.cwd or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": False,
    }


def bind_mounts(bind_files: Mapping[str, Path | str], readonly: bool) -> list[dict[str, Any]]:
    """The sandbox's /etc files bound over the container's: rprivate, so a mount made on the
    host later never propagates into the container."""
    return [
        {
            "destination": dest,
            "type": "bind",
            "source": str(src),
            "options": ["rbind", "rprivate", "ro" if readonly else "rw"],
        }
        for dest, src in bind_files.items()
    ]


def config_dict(
    process: dict[str, Any],
    *,
    hostname: str,
    cgroups_path: str,
    netns_path: str | None,
    host: HostFacts,
    bind_files: Mapping[str, Path | str] | None = None,
    readonly_binds: bool = False,
) -> dict[str, Any]:
    """The whole ``config.json`` for ``runc run``; ``process`` is ``process_dict``'s result.

    ``netns_path``: a path joins that namespace, None shares the daemon's (host mode),
    NEW_NETNS ("") has runc make an empty one. Only a namespace of the container's own gets
    the sysctls: in host mode they would change the host.
    """
    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
    ]
    linux: dict[str, Any] = {
        "resources": {"devices": [dict(r) for r in _DEVICE_RULES]},
        "cgroupsPath": cgroups_path,
        "namespaces": namespaces,
        "maskedPaths": [*MASKED_PATHS, *host.thermal_masks],
        "readonlyPaths": list(READONLY_PATHS),
        # Docker's default profile for Docker's default capabilities; the bounding set
        # decides, so a capability granted later widens the filter with it.
        "seccomp": build_profile(process["capabilities"]["bounding"], host.machine, host.kernel),
    }
    if netns_path is not None:
        ns = {"type": "network"}
        if netns_path:
            ns["path"] = netns_path
        namespaces.append(ns)
        linux["sysctl"] = dict(NETNS_SYSCTLS)
    return {
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname,
        "mounts": [dict(m) for m in MOUNTS] + bind_mounts(bind_files or {}, readonly_binds),
        "linux": linux,
    }
