"""The container create body `nsnet run`/`nsnet create` send, built like docker CLI 28 does.

The daemon is tested against the real docker CLI too, so both must send the same shapes:
`NetworkMode: "default"` with an `EndpointsConfig["default"]` entry when no --network is given,
the legacy flags (--ip, --network-alias, --link ...) folded into the first network's endpoint,
and a lone network's empty endpoint left out (docker-api.md §3.3).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nsnet.cli.requests import endpoint_ipam, endpoint_settings, parse_kv

PREDEFINED_MODES = ("default", "bridge", "host", "none")


class OptionError(ValueError):
    """A flag combination docker's CLI refuses before sending anything."""


def is_user_defined(mode: str) -> bool:
    return mode not in PREDEFINED_MODES and not mode.startswith("container:")


@dataclass
class NetworkAttachment:
    """One `--network` value, plain (`mynet`) or advanced (`name=mynet,alias=a,ip=...`)."""

    target: str
    aliases: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ipv4: str = ""
    ipv6: str = ""
    link_local_ips: list[str] = field(default_factory=list)
    driver_opts: dict[str, str] = field(default_factory=dict)
    mac_address: str = ""
    gw_priority: int = 0


def parse_network(value: str) -> NetworkAttachment:
    """docker's NetworkOpt.Set: `key=value` fields only when the value holds an `=`."""
    if "=" not in value:
        return NetworkAttachment(target=value)
    att = NetworkAttachment(target="")
    for part in _csv_fields(value):
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise OptionError(f"invalid field {part!r} must be a key=value pair")
        if key == "name":
            att.target = val
        elif key == "alias":
            att.aliases.append(val)
        elif key == "ip":
            att.ipv4 = val
        elif key == "ip6":
            att.ipv6 = val
        elif key == "link-local-ip":
            att.link_local_ips.append(val)
        elif key == "driver-opt":
            k, _, v = val.partition("=")
            att.driver_opts[k] = v
        elif key == "mac-address":
            att.mac_address = val
        elif key == "gw-priority":
            try:
                att.gw_priority = int(val)
            except ValueError:
                raise OptionError(f"invalid gw-priority: {val}") from None
        else:
            raise OptionError(f"invalid field key {key}")
    return att


def _csv_fields(value: str) -> list[str]:
    """Comma-separated fields where a double-quoted field may hold commas (docker uses CSV)."""
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return [f for f in out if f != ""]


@dataclass
class ContainerOptions:
    """Everything the run/create flags can say; defaults are docker's."""

    image: str
    command: Sequence[str] = ()
    name: str = ""
    networks: Sequence[str] = ()
    network_aliases: Sequence[str] = ()
    ip: str = ""
    ip6: str = ""
    link_local_ips: Sequence[str] = ()
    mac_address: str = ""
    links: Sequence[str] = ()
    hostname: str = ""
    domainname: str = ""
    dns: Sequence[str] = ()
    dns_search: Sequence[str] = ()
    dns_options: Sequence[str] = ()
    add_hosts: Sequence[str] = ()
    env: Sequence[str] = ()
    workdir: str = ""
    entrypoint: str | None = None
    user: str = ""
    labels: Sequence[str] = ()
    publish: Sequence[str] = ()
    publish_all: bool = False  # -P: every exposed port on a free host port
    expose: Sequence[str] = ()
    auto_remove: bool = False
    attach: bool = False


def _apply_legacy(att: NetworkAttachment, o: ContainerOptions) -> None:
    """docker's applyContainerOptions: the old single-network flags go to the first network."""
    if att.aliases and o.network_aliases:
        raise OptionError(
            "conflicting options: cannot specify both --network-alias and per-network alias"
        )
    if att.links and o.links:
        raise OptionError("conflicting options: cannot specify both --link and per-network links")
    if att.ipv4 and o.ip:
        raise OptionError(
            "conflicting options: cannot specify both --ip and per-network IPv4 address"
        )
    if att.ipv6 and o.ip6:
        raise OptionError(
            "conflicting options: cannot specify both --ip6 and per-network IPv6 address"
        )
    if att.mac_address and o.mac_address:
        raise OptionError(
            "conflicting options: cannot specify both --mac-address and per-network MAC address"
        )
    if att.link_local_ips and o.link_local_ips:
        raise OptionError(
            "conflicting options: cannot specify both --link-local-ip and "
            "per-network link-local IP addresses"
        )
    if o.network_aliases:
        att.aliases = list(o.network_aliases)
    if is_user_defined(att.target) and o.links:
        att.links = list(o.links)
    if o.ip:
        att.ipv4 = o.ip
    if o.ip6:
        att.ipv6 = o.ip6
    if o.mac_address:
        att.mac_address = o.mac_address
    if o.link_local_ips:
        att.link_local_ips = list(o.link_local_ips)


_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")


def _endpoint(att: NetworkAttachment) -> dict[str, Any] | None:
    """docker's parseNetworkAttachmentOpt; None stands for an all-zero EndpointSettings."""
    if not att.target.strip():
        raise OptionError("no name set for network")
    if not is_user_defined(att.target):
        if att.aliases:
            raise OptionError("network-scoped aliases are only supported for user-defined networks")
        if att.links:
            raise OptionError("links are only supported for user-defined networks")
    if att.mac_address and not _MAC.match(att.mac_address.strip()):
        raise OptionError(f"{att.mac_address} is not a valid mac address")
    has_ipam = bool(att.ipv4 or att.ipv6 or att.link_local_ips)
    ep = endpoint_settings(
        ipam=endpoint_ipam(att.ipv4, att.ipv6, att.link_local_ips) if has_ipam else None,
        links=att.links or None,
        aliases=att.aliases or None,
        driver_opts=att.driver_opts or None,
        mac_address=att.mac_address,
        gw_priority=att.gw_priority,
    )
    if ep == endpoint_settings():
        return None
    return ep


def endpoints_config(o: ContainerOptions) -> tuple[str, dict[str, Any]]:
    """(NetworkMode, EndpointsConfig) as docker's parseNetworkOpts builds them."""
    atts = [parse_network(n) for n in o.networks]
    endpoints: dict[str, Any] = {}
    if not atts:
        default = NetworkAttachment(target="default")
        _apply_legacy(default, o)
        endpoints["default"] = _endpoint(default) or endpoint_settings()
        return "default", endpoints
    user_defined = non_user_defined = False
    for i, att in enumerate(atts):
        if is_user_defined(att.target):
            user_defined = True
        else:
            non_user_defined = True
        if i == 0:
            _apply_legacy(att, o)
        ep = _endpoint(att)
        if att.target in endpoints:
            raise OptionError(f'network "{att.target}" is specified multiple times')
        if i == 0 and len(atts) == 1 and ep is None:
            # A lone network without options: the daemon makes the endpoint itself.
            continue
        endpoints[att.target] = ep or endpoint_settings()
    if user_defined and non_user_defined:
        raise OptionError(
            "conflicting options: cannot attach both user-defined and non-user-defined "
            "network-modes"
        )
    return atts[0].target, endpoints


def _port_range(text: str, what: str) -> list[int]:
    start, sep, end = text.partition("-")
    try:
        lo = int(start)
        hi = int(end) if sep else lo
    except ValueError:
        raise OptionError(f"invalid {what}: {text}") from None
    if not (0 < lo <= 65535 and 0 < hi <= 65535) or hi < lo:
        raise OptionError(f"invalid {what}: {text}")
    return list(range(lo, hi + 1))


def parse_publish(spec: str) -> list[tuple[str, dict[str, str]]]:
    """docker's nat.ParsePortSpec: `[ip:][hostPort:]containerPort[/proto]` → (key, binding)."""
    rest, _, proto = spec.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise OptionError(f"invalid proto: {proto}")
    host_ip = ""
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0 or rest[end + 1 : end + 2] != ":":
            raise OptionError(f"invalid IP address: {rest}")
        host_ip, rest = rest[1:end], rest[end + 2 :]
        host_port, _, container_port = rest.rpartition(":")
    else:
        parts = rest.split(":")
        if len(parts) == 1:
            host_port, container_port = "", parts[0]
        elif len(parts) == 2:
            host_port, container_port = parts
        elif len(parts) == 3:
            host_ip, host_port, container_port = parts
        else:
            raise OptionError(f"invalid IP address: {':'.join(parts[:-2])}")
    if host_ip:
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise OptionError(f"invalid IP address: {host_ip}") from None
    if not container_port:
        raise OptionError(f"no port specified: {spec}<empty>")
    cports = _port_range(container_port, "containerPort")
    hports = _port_range(host_port, "hostPort") if host_port else []
    if hports and len(hports) != len(cports) and len(cports) != 1:
        raise OptionError(
            f"invalid ranges specified for container and host Ports: "
            f"{container_port} and {host_port}"
        )
    out: list[tuple[str, dict[str, str]]] = []
    for i, cport in enumerate(cports):
        if not hports:
            hp = ""
        elif len(cports) == 1 and len(hports) > 1:
            hp = host_port
        else:
            hp = str(hports[i])
        out.append((f"{cport}/{proto}", {"HostIp": host_ip, "HostPort": hp}))
    return out


def _env_list(values: Sequence[str]) -> list[str]:
    """`-e NAME` takes NAME's value from our own environment, like docker's ValidateEnv."""
    out = []
    for item in values:
        if "=" not in item and item in os.environ:
            out.append(f"{item}={os.environ[item]}")
        else:
            out.append(item)
    return out


def container_create_body(o: ContainerOptions) -> dict[str, Any]:
    """POST /containers/create body (docker-api.md §3.3), zero-valued keys kept where docker
    sends them so the daemon sees the same shapes from both CLIs."""
    mode, endpoints = endpoints_config(o)
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in o.publish:
        for key, binding in parse_publish(spec):
            exposed.setdefault(key, {})
            bindings.setdefault(key, []).append(binding)
    for spec in o.expose:
        port, _, proto = spec.partition("/")
        for p in _port_range(port, "range for exposed port"):
            exposed.setdefault(f"{p}/{proto.lower() or 'tcp'}", {})
    entrypoint: list[str] | None = None
    if o.entrypoint is not None:
        entrypoint = [o.entrypoint]
    body: dict[str, Any] = {
        "Hostname": o.hostname,
        "Domainname": o.domainname,
        "User": o.user,
        "AttachStdin": False,
        "AttachStdout": o.attach,
        "AttachStderr": o.attach,
    }
    if exposed:
        body["ExposedPorts"] = exposed
    body.update(
        {
            "Tty": False,
            "OpenStdin": False,
            "StdinOnce": False,
            "Env": _env_list(o.env) or None,
            "Cmd": list(o.command) or None,
            "Image": o.image,
            "Volumes": {},
            "WorkingDir": o.workdir,
            "Entrypoint": entrypoint,
            "OnBuild": None,
            "Labels": parse_kv(o.labels),
            "HostConfig": {
                "Binds": None,
                "ContainerIDFile": "",
                "LogConfig": {"Type": "", "Config": {}},
                "NetworkMode": mode,
                "PortBindings": bindings,
                "PublishAllPorts": o.publish_all,
                "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                "AutoRemove": o.auto_remove,
                "Dns": list(o.dns),
                "DnsOptions": list(o.dns_options),
                "DnsSearch": list(o.dns_search),
                "ExtraHosts": list(o.add_hosts) or None,
                "Links": None if is_user_defined(mode) else (list(o.links) or None),
                "ConsoleSize": [0, 0],
            },
            "NetworkingConfig": {"EndpointsConfig": endpoints},
        }
    )
    return body
