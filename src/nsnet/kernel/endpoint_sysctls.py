"""Per-endpoint sysctls: the ``com.docker.network.endpoint.sysctls`` driver option.

moby's format is a comma-separated list of ``net.X.Y.IFNAME.Z=V``, ``IFNAME`` (or ``ifname``,
since the docker CLI lowercases driver options) standing for the endpoint's interface, whose
name the user cannot know beforehand. nsnet takes the ``ipv4`` and ``ipv6`` families (moby's
``mpls`` needs a module this host may lack) and only keys of that one interface: anything else
would let a container's user reach settings of the whole namespace, or, through ``..`` or a
``/``, files outside ``/proc/sys/net``. The check is pure and runs before anything is made
(a 400); the write happens inside the sandbox, where ``/proc/sys/net`` is its own.
"""

from __future__ import annotations

import os
import re

from nsnet.errors import Invalid

OPT_SYSCTLS = "com.docker.network.endpoint.sysctls"

_LEAF = re.compile(r"[a-z0-9_]{1,64}")
_VALUE = re.compile(r"[0-9A-Za-z_.:\- ]{1,64}")
_GROUPS = ("conf", "neigh")


def parse_endpoint_sysctls(value: str) -> list[tuple[str, str, str, str]]:
    """``(family, group, leaf, value)`` for each item, or ``Invalid`` naming the first bad one
    in moby's words (with what nsnet takes beyond them)."""
    out: list[tuple[str, str, str, str]] = []
    for item in value.split(","):
        key, eq, val = item.partition("=")
        parts = key.strip().split(".", 4)
        ok = (eq == "=" and len(parts) == 5 and parts[0] == "net"
              and parts[1] in ("ipv4", "ipv6") and parts[2] in _GROUPS
              and parts[3] in ("IFNAME", "ifname") and _LEAF.fullmatch(parts[4]) is not None
              and _VALUE.fullmatch(val.strip()) is not None)
        if not ok:
            raise Invalid(f"invalid endpoint settings: unrecognised network interface sysctl "
                          f"'{item}'; represent 'net.X.Y.ethN.Z=V' as 'net.X.Y.IFNAME.Z=V', "
                          f"'X' must be 'ipv4' or 'ipv6', 'Y' 'conf' or 'neigh'")
        out.append((parts[1], parts[2], parts[4], val.strip()))
    return out


def sysctl_paths(ifname: str, value: str) -> list[tuple[str, str]]:
    """``(path under /proc/sys, value)`` for the interface, in the order given."""
    if not ifname or "/" in ifname or ifname in (".", ".."):
        raise Invalid(f"invalid interface name {ifname!r}")
    return [(f"net/{fam}/{group}/{ifname}/{leaf}", val)
            for fam, group, leaf, val in parse_endpoint_sysctls(value)]


def write_sysctls(paths: list[tuple[str, str]], root: str = "/proc/sys") -> None:
    """Write them; run inside the sandbox (``Namespaces.call_in``): /proc/sys/net is the
    opener's namespace's. A key the kernel lacks is the user's error, said as such."""
    for rel, val in paths:
        try:
            # Never O_CREAT: outside /proc a missing key must not become a new file.
            fd = os.open(f"{root}/{rel}", os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                os.write(fd, val.encode())
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise Invalid(f"sysctl {rel.replace('/', '.')} does not exist") from None
        except OSError as e:
            raise Invalid(f"cannot set sysctl {rel.replace('/', '.')}={val}: "
                          f"{e.strerror}") from None
