"""A container's ``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/hostname``, written in place.

The contents are pure renderings (``nsnet.etc_files``, ``nsnet.resolvconf``); this module
gathers their inputs from the registry (linked containers' addresses, whether the container is
on a user-defined network) and writes the files under the exec root. They are bind-mounted
into the container, so a rewrite keeps the inode: a connect or disconnect changes names or
resolvers of a running container.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from nsnet import resolvconf
from nsnet.engine.config import EngineConfig
from nsnet.engine.registry import Registry
from nsnet.engine.shared_netns import joined_ref, namespace_owner
from nsnet.errors import NotFound
from nsnet.etc_files import (
    HOSTS_HEADER,
    LinkedHost,
    link_names,
    parse_link,
    render_hostname,
    render_hosts,
    render_resolv_conf,
)
from nsnet.model import Container


class EtcFiles:
    """One container's files; ``on_user_network`` decides whether it asks 127.0.0.11."""

    def __init__(self, config: EngineConfig, registry: Registry,
                 on_user_network: Callable[[Container], bool]) -> None:
        self.config = config
        self.registry = registry
        self.on_user_network = on_user_network

    def dir_of(self, c: Container) -> Path:
        return self.config.exec_root / "sandboxes" / c.id

    def write(self, c: Container, hosts_only: bool = False) -> None:
        if joined_ref(c.network_mode) is not None:
            return  # a dependent mounts its owner's files (``SandboxService.files_dir``)
        etc = self.dir_of(c)
        if not hosts_only:
            etc.mkdir(parents=True, exist_ok=True)
            _write_in_place(etc / "hostname", render_hostname(c.hostname or c.short_id))
            _write_in_place(etc / "resolv.conf", self.resolv_content(c))
        _write_in_place(etc / "hosts", self.hosts_content(c))

    def _linked(self, c: Container) -> list[LinkedHost]:
        """``--link`` targets that exist, by their first IPv4 address."""
        out: list[LinkedHost] = []
        for link in c.links:
            name, alias = parse_link(link)
            try:
                other = self.registry.find_container(name)
            except NotFound:
                continue
            # A link to a dependent reaches it at its owner's address (moby links a
            # ``container:`` mode container through the namespace it shares).
            other_ns = namespace_owner(self.registry, other)
            for a in other_ns.attachments:
                if a.endpoint and a.endpoint.ipv4:
                    out.append((a.endpoint.ipv4, link_names(name, alias, other.name)))
                    break
        return out

    def hosts_content(self, c: Container) -> str:
        if c.network_mode == "host":
            try:
                return self.config.host_hosts.read_text()
            except OSError:
                return HOSTS_HEADER
        addresses = [addr for a in c.attachments if a.endpoint is not None
                     for addr in (a.endpoint.ipv4, a.endpoint.ipv6) if addr]
        return render_hosts(c.hostname or c.short_id, addresses, links=self._linked(c),
                            extra_hosts=c.extra_hosts)

    def resolv_content(self, c: Container) -> str:
        host_mode = c.network_mode == "host"
        return render_resolv_conf(
            resolvconf.read(self.config.host_resolv_conf),
            embedded=not host_mode and self.on_user_network(c), host_mode=host_mode,
            dns=c.dns, dns_search=c.dns_search, dns_options=c.dns_options)


def _write_in_place(path: Path, content: str) -> None:
    """Rewrite keeping the inode: the file is bind-mounted into a running container."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        data = content.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)
