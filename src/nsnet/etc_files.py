"""A container's ``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/hostname``, as Docker writes
them, rendered from plain data.

Pure: the caller (the engine's sandbox service) gathers the inputs (the container's hostname
and addresses, its links already looked up, its DNS settings, the host's resolv.conf parsed by
``nsnet.resolvconf``) and writes the result in place; so every rule below is unit tested
without a container (``tests/unit/test_etc_files.py``).

The rules are Docker's: a container on a user-defined network asks the embedded resolver at
127.0.0.11 (its real upstreams noted in an ``# ExtServers`` comment, ``ndots:0`` unless the
container set ndots itself); elsewhere it gets its own ``--dns`` servers, or the host's minus
the loopback ones a sandbox cannot reach (Google's as a last resort); host mode gets the
host's as they are.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from nsnet.resolvconf import ResolvConf, render

HOSTS_HEADER: Final = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::\tip6-localnet
ff00::\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""
EMBEDDED_RESOLVER: Final = "127.0.0.11"
# Docker's defaultIPv4Dns, when the host has nothing a sandbox can reach.
FALLBACK_NAMESERVERS: Final = ("8.8.8.8", "8.8.4.4")
DEFAULT_NDOTS: Final = "ndots:0"

# A linked container's address and the names it is known by (see ``link_names``).
LinkedHost = tuple[str, Sequence[str]]


def render_hostname(hostname: str) -> str:
    return hostname + "\n"


def parse_link(link: str) -> tuple[str, str]:
    """``--link name[:alias]`` as (name, alias); alias "" when none is given."""
    name, _, alias = link.partition(":")
    return name, alias


def link_names(name: str, alias: str, target_name: str) -> list[str]:
    """The names a linked container gets in /etc/hosts: the alias (or the name the link used)
    then its own name, each once."""
    return list(dict.fromkeys(x for x in (alias or name, target_name) if x))


def render_hosts(
    hostname: str,
    addresses: Sequence[str],
    *,
    links: Sequence[LinkedHost] = (),
    extra_hosts: Sequence[str] = (),
) -> str:
    """Docker's order: localhost lines, links, ``--add-host`` entries (``host:ip``; one
    without both parts is skipped), then each of the container's own addresses (IPv4 then
    IPv6 of each endpoint, in connect order) under its hostname."""
    lines = [HOSTS_HEADER.rstrip("\n")]
    for ip, names in links:
        lines.append(f"{ip}\t{' '.join(names)}")
    for h in extra_hosts:
        host, _, ip = h.partition(":")
        if host and ip:
            lines.append(f"{ip}\t{host}")
    lines += [f"{addr}\t{hostname}" for addr in addresses if addr]
    return "\n".join(lines) + "\n"


def render_resolv_conf(
    host: ResolvConf,
    *,
    embedded: bool,
    host_mode: bool = False,
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
    dns_options: Sequence[str] = (),
) -> str:
    """The container's resolv.conf. ``embedded``: the container is on a user-defined network
    (and not in host mode), so it asks 127.0.0.11; ``dns``/``dns_search``/``dns_options`` are
    its ``--dns``, ``--dns-search`` ("." meaning none) and ``--dns-option``."""
    search = [s for s in dns_search if s != "."] if dns_search else list(host.search)
    if embedded:
        opts = list(dns_options or [o for o in host.options if not o.startswith("ndots:")])
        if not any(o.startswith("ndots:") for o in opts):
            opts.insert(0, DEFAULT_NDOTS)  # an explicit --dns-opt ndots wins
        ext = list(dns) or list(host.nameservers)
        return render([EMBEDDED_RESOLVER], search, opts, [f"ExtServers: {ext}"])
    if dns:
        chosen = list(dns)
    elif host_mode:
        chosen = list(host.nameservers)
    else:
        chosen = [s for s in host.nameservers if not is_loopback(s)] or list(FALLBACK_NAMESERVERS)
    return render(chosen, search, list(dns_options or host.options))


def is_loopback(addr: str) -> bool:
    """Also for nsnet's ``ip:port`` upstream form, ``[v6]:port`` and a ``%zone``: a loopback
    resolver of the host is unreachable from a sandbox's own namespace."""
    host = addr.split("%")[0]
    if host.startswith("["):
        host = host[1:].split("]")[0]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
