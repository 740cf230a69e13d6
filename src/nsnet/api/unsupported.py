"""Container options nsnet does not implement: refused with a 400, never silently dropped.

A client that asks for ``--privileged``, a bind mount or a memory limit and gets a 201 believes
it got them; a container that runs without a limit its owner relies on, or with isolation its
owner did not expect, is worse than one that does not run. So every field of Docker's container
``Config`` and ``HostConfig`` that nsnet does not act on is listed here with the values that ask
for nothing: what the docker CLI 28 and docker-py 7 send when the user gave no flag (zero,
empty, null), plus the values that name what nsnet already does (its containers have private
IPC, UTS and PID namespaces, the host's cgroup namespace, no user namespace, json-file logs,
runc). Any other value is refused, naming the field.

Fields nsnet implements (NetworkMode, Dns*, ExtraHosts, Links, AutoRemove, ...) are parsed in
``nsnet.api.containers``; fields that only carry information (``ExposedPorts``, ``ContainerIDFile``,
``ConsoleSize``, ``Attach*``, ``OnBuild``, ``Shell``, ``ArgsEscaped``) are accepted as Docker
accepts them. ``Tty`` and ``OpenStdin``/``StdinOnce`` are implemented (a pty; input through
attach): a container without a TTY still reads an empty stdin, the one gap (see README).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nsnet.errors import Invalid

Check = Callable[[Any], bool]


def _empty(v: Any) -> bool:
    """null, false, 0, "", [] and {}: what a client sends for an option it was not given."""
    return v is None or v is False or v == 0 or v == "" or v == [] or v == {}


def _one_of(*ok: Any) -> Check:
    return lambda v: _empty(v) or v in ok


def _null(v: Any) -> bool:
    """For fields where an empty list means something (moby: [] unmasks every path)."""
    return v is None


def _restart_policy(v: Any) -> bool:
    if _empty(v):
        return True
    return isinstance(v, dict) and v.get("Name") in (None, "", "no") and \
        _empty(v.get("MaximumRetryCount"))


def _log_config(v: Any) -> bool:
    if _empty(v):
        return True
    return isinstance(v, dict) and v.get("Type") in (None, "", "json-file") and \
        _empty(v.get("Config"))


def _healthcheck(v: Any) -> bool:
    if _empty(v):
        return True
    return isinstance(v, dict) and (_empty(v.get("Test")) or v.get("Test") == ["NONE"])


def _stop_signal(v: Any) -> bool:
    return _empty(v) or (isinstance(v, str) and v.upper() in ("SIGTERM", "TERM", "15"))


def _memory_swap(v: Any) -> bool:
    # -1 is "unlimited swap", which is what a container without limits has.
    return _empty(v) or v == -1


def _swappiness(v: Any) -> bool:
    # The docker CLI sends -1 ("inherit from the parent cgroup") when --memory-swappiness is
    # not given.
    return _empty(v) or v == -1


HOST_CONFIG: dict[str, Check] = {
    # Isolation.
    "Privileged": _empty,
    "CapAdd": _empty,
    "CapDrop": _empty,
    "SecurityOpt": _empty,
    "Devices": _empty,
    "DeviceCgroupRules": _empty,
    "DeviceRequests": _empty,
    "PidMode": _one_of("private"),
    "IpcMode": _one_of("private", "shareable"),
    "UTSMode": _empty,
    "UsernsMode": _one_of("host"),
    "CgroupnsMode": _one_of("host"),
    "Cgroup": _empty,
    "CgroupParent": _empty,
    "ReadonlyRootfs": _empty,
    "MaskedPaths": _null,
    "ReadonlyPaths": _null,
    "Sysctls": _empty,
    "GroupAdd": _empty,
    "Runtime": _one_of("runc"),
    "Isolation": _one_of("default"),
    "Init": _empty,
    "Annotations": _empty,
    # Storage.
    "Binds": _empty,
    "Mounts": _empty,
    "VolumesFrom": _empty,
    "VolumeDriver": _empty,
    "Tmpfs": _empty,
    "StorageOpt": _empty,
    "ShmSize": _empty,
    # Lifecycle and logging.
    "RestartPolicy": _restart_policy,
    "LogConfig": _log_config,
    # Resources: a limit that is not enforced is worse than a refusal.
    "Memory": _empty,
    "MemoryReservation": _empty,
    "MemorySwap": _memory_swap,
    "MemorySwappiness": _swappiness,
    "KernelMemory": _empty,
    "KernelMemoryTCP": _empty,
    "OomKillDisable": _empty,
    "OomScoreAdj": _empty,
    "PidsLimit": lambda v: _empty(v) or v == -1,
    "CpuShares": _empty,
    "CpuPeriod": _empty,
    "CpuQuota": _empty,
    "CpuRealtimePeriod": _empty,
    "CpuRealtimeRuntime": _empty,
    "CpusetCpus": _empty,
    "CpusetMems": _empty,
    "CpuCount": _empty,
    "CpuPercent": _empty,
    "NanoCpus": _empty,
    "BlkioWeight": _empty,
    "BlkioWeightDevice": _empty,
    "BlkioDeviceReadBps": _empty,
    "BlkioDeviceWriteBps": _empty,
    "BlkioDeviceReadIOps": _empty,
    "BlkioDeviceWriteIOps": _empty,
    "IOMaximumIOps": _empty,
    "IOMaximumBandwidth": _empty,
    "Ulimits": _empty,
}

CONFIG: dict[str, Check] = {
    "Volumes": _empty,
    "Healthcheck": _healthcheck,
    "StopSignal": _stop_signal,
    "StopTimeout": _null,
}

EXEC_CONFIG: dict[str, Check] = {
    "Privileged": _empty,
}


def refuse_unsupported(body: dict[str, Any], table: dict[str, Check], prefix: str = "") -> None:
    """400 naming the first field whose value asks for something nsnet does not do."""
    for name, ok in table.items():
        if name in body and not ok(body[name]):
            raise Invalid(f"{prefix}{name} is not supported by nsnet "
                          f"(got {_short(body[name])})")


def _short(v: Any) -> str:
    import json

    try:
        text = json.dumps(v)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
