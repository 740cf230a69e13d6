"""``com.docker.network.container_iface_prefix``: what a network's interfaces are called
inside the container (the prefix, then the lowest free number: ``eth0``, or ``lan0``).

A driver-independent option, as in libnetwork: the engine names the endpoint, the driver makes
it. Checked at network create, since a bad prefix would only fail at some later ``run``.
"""

from __future__ import annotations

import re

from nsnet.errors import Invalid
from nsnet.model import Network

OPT_IFACE_PREFIX = "com.docker.network.container_iface_prefix"
DEFAULT_PREFIX = "eth"

# Room for up to three digits within the kernel's 15 characters; letters, digits, '_' and
# '-' only, so the name is safe in a /proc/sys path and an nftables rule alike.
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,11}")


def iface_prefix(net: Network) -> str:
    return net.options.get(OPT_IFACE_PREFIX) or DEFAULT_PREFIX


def validate_iface_prefix(net: Network) -> None:
    v = net.options.get(OPT_IFACE_PREFIX)
    if v is None or v == "":
        return
    if _PREFIX.fullmatch(v) is None:
        raise Invalid(f"invalid value {v!r} for option {OPT_IFACE_PREFIX}: 1 to 12 letters, "
                      "digits, '_' or '-', starting with a letter")
