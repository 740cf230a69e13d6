"""``resolv.conf``: the host's read into nameservers, search domains and options, and written.

The host's file is read in three places: a container's own resolv.conf starts from it, the
embedded resolver forwards to its nameservers, and a container on the default bridge gets them
directly. They must agree on what the file says, so the grammar is here, once, pure and
importable from any layer (``read`` is the one function that touches the disk).

What is kept of glibc's grammar is what Docker keeps: ``nameserver`` lines in order (the
address as written, so nsnet's ``ip:port`` form survives), the last ``search`` line, every
``options`` line's words; comments start with ``#`` or ``;``. ``domain`` is ignored, as
nsnet always has (Docker writes only ``search`` too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# systemd-resolved's stub: a host whose resolv.conf names only this one has its real list in
# SYSTEMD_RESOLVED_CONF (Docker reads that file instead, and so does the resolver's forwarder).
SYSTEMD_RESOLVED_STUB: Final = "127.0.0.53"
SYSTEMD_RESOLVED_CONF: Final = Path("/run/systemd/resolve/resolv.conf")
MAX_NAMESERVERS: Final = 3  # glibc's MAXNS; Docker's maxExtDNS


@dataclass(frozen=True)
class ResolvConf:
    """What a resolv.conf says, in file order."""

    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def parse(text: str) -> ResolvConf:
    """Never fails: a line it does not know is skipped, as the C library does."""
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith(("#", ";")):
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            servers.append(parts[1])
        elif parts[0] == "search":
            search = parts[1:]
        elif parts[0] == "options":
            options.extend(parts[1:])
    return ResolvConf(tuple(servers), tuple(search), tuple(options))


def read(path: Path) -> ResolvConf:
    """The file at ``path``; an unreadable or missing one says nothing (no nameservers), which
    every caller treats as "no host resolvers" rather than as an error."""
    try:
        text = path.read_text()
    except OSError:
        return ResolvConf()
    return parse(text)


def render(
    nameservers: Sequence[str],
    search: Sequence[str] = (),
    options: Sequence[str] = (),
    comments: Sequence[str] = (),
) -> str:
    """Lines in the order the C library reads them; empty sections are left out and each
    comment becomes a ``# ...`` line at the end."""
    lines = [f"nameserver {s}" for s in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    lines += [f"# {c}" for c in comments]
    return "\n".join(lines) + "\n"


def upstreams(host: ResolvConf, resolved: ResolvConf | None = None) -> list[str]:
    """The servers to forward to: the host's, or systemd-resolved's real list when the host
    names only the stub (which a sandbox could reach, but whose answers we would forward to
    ourselves); at most three."""
    servers = list(host.nameservers)
    if behind_resolved_stub(host) and resolved is not None and resolved.nameservers:
        servers = list(resolved.nameservers)
    return servers[:MAX_NAMESERVERS]


def behind_resolved_stub(host: ResolvConf) -> bool:
    """Whether the real list is in SYSTEMD_RESOLVED_CONF (read it only then)."""
    return host.nameservers == (SYSTEMD_RESOLVED_STUB,)


def read_upstreams(path: Path, resolved_path: Path = SYSTEMD_RESOLVED_CONF) -> list[str]:
    """``upstreams`` of the host file at ``path``, reading systemd-resolved's list only when
    needed."""
    host = read(path)
    return upstreams(host, read(resolved_path) if behind_resolved_stub(host) else None)
