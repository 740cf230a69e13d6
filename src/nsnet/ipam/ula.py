"""The default IPv6 pool: a ULA /48 derived from the engine's ID, cut into /64s (Docker 27+).

An ``--ipv6`` network without an IPv6 subnet gets the first free /64 of this /48. Docker takes
the 40 low bits of the first 8 bytes of SHA-256(engine ID) as the RFC 4193 Global ID, so two
hosts almost never pick the same prefix (their containers could then route to each other
through a VPN or an overlay without clashing) and one host always picks the same one (its
networks keep their prefix across a reinstall that keeps the data root). The engine ID is the
UUID kept in ``<data-root>/engine-id``, the file and format dockerd uses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

ULA_FILE = "engine-id"
ULA_SIZE = 64


def ula_base(host_id: str) -> ipaddress.IPv6Network:
    """``fdXX:XXXX:XXXX::/48`` for ``host_id``: fd00::/8 plus a 40-bit Global ID."""
    digest = hashlib.sha256(host_id.encode()).digest()
    gid = int.from_bytes(digest[:8], "big") & ((1 << 40) - 1)
    addr = int(ipaddress.IPv6Address("fd00::")) + (gid << 80)
    return ipaddress.IPv6Network((addr, 48))


def first_free_64(base: ipaddress.IPv6Network,
                  used: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
                  ) -> ipaddress.IPv6Network | None:
    """The lowest /64 of ``base`` that overlaps no used IPv6 subnet, or None when all 65,536
    are taken. Skips a whole used block at once, so a /52 in use costs one step, not 4,096."""
    taken = sorted((int(u.network_address), int(u.broadcast_address))
                   for u in used if u.version == 6)
    step = 1 << (128 - ULA_SIZE)
    lo = int(base.network_address)
    end = int(base.broadcast_address)
    for start, stop in taken:
        if stop < lo:
            continue
        if start > lo + step - 1:
            break
        lo = max(lo, (stop // step + 1) * step)
    if lo > end:
        return None
    return ipaddress.IPv6Network((lo, ULA_SIZE))


def load_or_create_engine_id(data_root: Path) -> str:
    """The engine's ID from ``<data-root>/engine-id``, made (a random UUID, mode 0600) on
    first use; written to a temporary name and renamed so a crash never leaves half an ID,
    which would move every later default IPv6 prefix."""
    path = data_root / ULA_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    new = str(uuid.uuid4())
    tmp = data_root / (ULA_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, new.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return new
