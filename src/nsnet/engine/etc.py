"""A container's ``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/hostname``, Docker's way.

The files live under the exec root and are bind-mounted into the container, so they are
rewritten in place (same inode) when a connect or disconnect changes names or resolvers. What
goes into them depends on the container's networks: on a user-defined network the resolver is
the embedded one at 127.0.0.11, elsewhere the host's nameservers minus loopback ones.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

from nsnet.engine.config import EngineConfig
from nsnet.engine.registry import Registry
from nsnet.errors import NotFound
from nsnet.model import Container

HOSTS_HEADER = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::\tip6-localnet
ff00::\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


class EtcFiles:
    """Renders and writes one container's files; ``on_user_network`` decides the resolver."""

    def __init__(self, config: EngineConfig, registry: Registry,
                 on_user_network: Callable[[Container], bool]) -> None:
        self.config = config
        self.registry = registry
        self.on_user_network = on_user_network

    def dir_of(self, c: Container) -> Path:
        return self.config.exec_root / "sandboxes" / c.id

    def write(self, c: Container, hosts_only: bool = False) -> None:
        etc = self.dir_of(c)
        if not hosts_only:
            etc.mkdir(parents=True, exist_ok=True)
            _write_in_place(etc / "hostname", (c.hostname or c.short_id) + "\n")
            _write_in_place(etc / "resolv.conf", self.resolv_content(c))
        _write_in_place(etc / "hosts", self.hosts_content(c))

    def hosts_content(self, c: Container) -> str:
        if c.network_mode == "host":
            try:
                return self.config.host_hosts.read_text()
            except OSError:
                return HOSTS_HEADER
        lines = [HOSTS_HEADER.rstrip("\n")]
        for link in c.links:
            name, _, alias = link.partition(":")
            try:
                other = self.registry.find_container(name)
            except NotFound:
                continue
            for a in other.attachments:
                if a.endpoint and a.endpoint.ipv4:
                    names = " ".join(dict.fromkeys(x for x in (alias or name, other.name) if x))
                    lines.append(f"{a.endpoint.ipv4}\t{names}")
                    break
        for h in c.extra_hosts:
            host, _, ip = h.partition(":")
            if host and ip:
                lines.append(f"{ip}\t{host}")
        host = c.hostname or c.short_id
        for a in c.attachments:
            ep = a.endpoint
            if ep is None:
                continue
            if ep.ipv4:
                lines.append(f"{ep.ipv4}\t{host}")
            if ep.ipv6:
                lines.append(f"{ep.ipv6}\t{host}")
        return "\n".join(lines) + "\n"

    def host_resolv(self) -> tuple[list[str], list[str], list[str]]:
        servers: list[str] = []
        search: list[str] = []
        options: list[str] = []
        try:
            text = self.config.host_resolv_conf.read_text()
        except OSError:
            text = ""
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
        return servers, search, options

    def resolv_content(self, c: Container) -> str:
        servers, search, options = self.host_resolv()
        if c.dns_search:
            search = [s for s in c.dns_search if s != "."]
        lines: list[str] = []
        if c.network_mode != "host" and self.on_user_network(c):
            lines.append("nameserver 127.0.0.11")
            if search:
                lines.append("search " + " ".join(search))
            opts = list(c.dns_options or [o for o in options if not o.startswith("ndots:")])
            if not any(o.startswith("ndots:") for o in opts):
                opts.insert(0, "ndots:0")  # Docker's default; an explicit --dns-opt wins
            lines.append("options " + " ".join(opts))
            lines.append(f"# ExtServers: {c.dns or servers}")
            return "\n".join(lines) + "\n"
        if c.dns:
            chosen = list(c.dns)
        elif c.network_mode == "host":
            chosen = servers
        else:
            # Loopback resolvers of the host are unreachable from a sandbox (Docker drops them).
            chosen = [s for s in servers if not _is_loopback(s)]
            if not chosen:
                chosen = ["8.8.8.8", "8.8.4.4"]
        lines = [f"nameserver {s}" for s in chosen]
        if search:
            lines.append("search " + " ".join(search))
        opts = c.dns_options or options
        if opts:
            lines.append("options " + " ".join(opts))
        return "\n".join(lines) + "\n"


def _is_loopback(addr: str) -> bool:
    """Also for nsnet's ``ip:port`` upstream form (and ``[v6]:port``)."""
    host = addr.split("%")[0]
    if host.startswith("["):
        host = host[1:].split("]")[0]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_in_place(path: Path, content: str) -> None:
    """Rewrite keeping the inode: the file is bind-mounted into a running container."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        data = content.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)
