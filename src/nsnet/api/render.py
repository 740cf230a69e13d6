"""Docker Engine API JSON shapes for our objects (API 1.45 semantics).

Shapes follow what the docker CLI and the Docker SDK decode:
omitempty IPAM config keys, ``null`` for unset endpoint Aliases/Links/DriverOpts, container IDs
as keys of a network's ``Containers``.
"""

from __future__ import annotations

import ipaddress
import shlex
import time
from datetime import UTC, datetime
from typing import Any

from nsnet.humanize import human_duration
from nsnet.model import Attachment, Container, Image, IPAMPool, Network


def _ipam_config(p: IPAMPool) -> dict[str, Any]:
    d: dict[str, Any] = {"Subnet": p.subnet}
    if p.ip_range:
        d["IPRange"] = p.ip_range
    if p.gateway:
        d["Gateway"] = p.gateway
    if p.aux_addresses:
        d["AuxiliaryAddresses"] = dict(p.aux_addresses)
    return d


def network_json(net: Network, containers: list[Container] | None) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for c in containers or []:
        a = c.attachment(net.id)
        if a is None or a.endpoint is None:
            continue
        ep = a.endpoint
        members[c.id] = {
            "Name": c.name,
            "EndpointID": ep.id,
            "MacAddress": ep.mac,
            "IPv4Address": f"{ep.ipv4}/{ep.ipv4_prefixlen}" if ep.ipv4 else "",
            "IPv6Address": f"{ep.ipv6}/{ep.ipv6_prefixlen}" if ep.ipv6 else "",
        }
    driver = net.driver
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope,
        "Driver": driver,
        "EnableIPv4": net.enable_ipv4,
        "EnableIPv6": net.enable_ipv6,
        "IPAM": {
            "Driver": net.ipam_driver,
            "Options": net.ipam_options or None,
            "Config": [_ipam_config(p) for p in net.pools],
        },
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": members if containers is not None else {},
        "Options": dict(net.options),
        "Labels": dict(net.labels),
    }


def endpoint_settings(c: Container, a: Attachment, net: Network | None) -> dict[str, Any]:
    r = a.request
    ep = a.endpoint
    ipam_cfg: dict[str, Any] | None = None
    if r.ipv4_address or r.ipv6_address or r.link_local_ips:
        ipam_cfg = {}
        if r.ipv4_address:
            ipam_cfg["IPv4Address"] = r.ipv4_address
        if r.ipv6_address:
            ipam_cfg["IPv6Address"] = r.ipv6_address
        if r.link_local_ips:
            ipam_cfg["LinkLocalIPs"] = list(r.link_local_ips)
    dns_names = ep.dns_names if ep else None
    if not dns_names and net is not None and net.name not in ("bridge", "host", "none"):
        dns_names = [n for n in dict.fromkeys([c.name, *(r.aliases or []), c.short_id,
                                               c.hostname]) if n]
    return {
        "IPAMConfig": ipam_cfg,
        "Links": list(r.links) if r.links else None,
        "Aliases": list(r.aliases) if r.aliases else None,
        "MacAddress": ep.mac if ep else (r.mac_address or ""),
        "DriverOpts": dict(r.driver_opts) if r.driver_opts else None,
        "GwPriority": r.gw_priority,
        "NetworkID": net.id if net else "",
        "EndpointID": ep.id if ep else "",
        "Gateway": (ep.gateway or "") if ep else "",
        "IPAddress": (ep.ipv4 or "") if ep else "",
        "IPPrefixLen": ep.ipv4_prefixlen if ep else 0,
        "IPv6Gateway": (ep.ipv6_gateway or "") if ep else "",
        "GlobalIPv6Address": (ep.ipv6 or "") if ep else "",
        "GlobalIPv6PrefixLen": ep.ipv6_prefixlen if ep else 0,
        "DNSNames": dns_names or None,
    }


def networks_of(c: Container, networks: dict[str, Network]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.network_mode in ("host", "none") and not c.attachments:
        net = next((n for n in networks.values() if n.name == c.network_mode), None)
        out[c.network_mode] = endpoint_settings(c, Attachment(network_id=net.id if net else ""),
                                                net)
        return out
    for a in c.attachments:
        if a.gateway_only:
            continue  # as Docker hides docker_gwbridge from a container's networks
        net = networks.get(a.network_id)
        key = net.name if net else a.network_id
        out[key] = endpoint_settings(c, a, net)
    return out


def _docker_time_to_unix(s: str) -> int:
    try:
        head = s.rstrip("Z").split(".")[0]
        return int(datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp())
    except ValueError:
        return 0


def status_text(c: Container) -> str:
    now = time.time()
    st = c.state
    if st.status == "running":
        up = "Up " + human_duration(now - _docker_time_to_unix(st.started_at))
        return up + " (Paused)" if st.paused else up
    if st.status == "exited":
        return f"Exited ({st.exit_code}) " + human_duration(
            now - _docker_time_to_unix(st.finished_at)) + " ago"
    if st.status == "created":
        return "Created"
    return st.status.capitalize()


def state_name(c: Container) -> str:
    """Docker's State.Status: "paused" for a frozen container, which the engine keeps
    "running" (Running stays true in inspect, as moby shows it)."""
    if c.state.status == "running" and c.state.paused:
        return "paused"
    return c.state.status


def ports_map(c: Container) -> dict[str, list[dict[str, str]] | None]:
    """NetworkSettings.Ports in Docker's shape: every exposed port of a running container,
    with its host bindings or ``null`` when it is exposed only; ``{}`` when not running."""
    if c.state.status != "running":
        return {}
    out: dict[str, list[dict[str, str]] | None] = {k: None for k in c.exposed_ports}
    for p in c.ports:
        key = f"{p['container_port']}/{p['protocol']}"
        got = out.get(key) or []
        got.append({"HostIp": p.get("host_ip") or "0.0.0.0", "HostPort": str(p["host_port"])})
        out[key] = got
    return out


def ports_list(c: Container) -> list[dict[str, Any]]:
    """``GET /containers/json``'s Ports: one entry per binding, and the exposed-only ports
    without PublicPort, as moby lists them."""
    out: list[dict[str, Any]] = []
    for key, bindings in ports_map(c).items():
        port, _, proto = key.partition("/")
        if not bindings:
            out.append({"PrivatePort": int(port), "Type": proto})
            continue
        for b in bindings:
            out.append({"IP": b["HostIp"], "PrivatePort": int(port),
                        "PublicPort": int(b["HostPort"]), "Type": proto})
    return out


def container_json(c: Container, networks: dict[str, Network],
                   image: Image | None) -> dict[str, Any]:
    st = c.state
    settings = networks_of(c, networks)
    top: dict[str, Any] = {"IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "",
                           "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                           "IPv6Gateway": "", "EndpointID": ""}
    br = settings.get("bridge")
    if br is not None:
        top.update({k: br[k] for k in top})
    args = list(c.entrypoint or []) + list(c.cmd or [])
    return {
        "Id": c.id,
        "Created": c.created,
        "Path": args[0] if args else "",
        "Args": args[1:],
        "State": {
            "Status": state_name(c),
            "Running": st.status == "running",
            "Paused": st.status == "running" and st.paused,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": st.status == "dead",
            "Pid": st.pid,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": st.started_at,
            "FinishedAt": st.finished_at,
        },
        "Image": c.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": "",
        "Name": "/" + c.name,
        "RestartCount": c.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": {
            "NetworkMode": c.network_mode,
            "AutoRemove": c.auto_remove,
            "Dns": list(c.dns),
            "DnsSearch": list(c.dns_search),
            "DnsOptions": list(c.dns_options),
            "ExtraHosts": list(c.extra_hosts) or None,
            "Links": [f"/{ln.split(':')[0]}:/{c.name}/{ln.split(':')[-1]}" for ln in c.links]
            or None,
            "PortBindings": {k: [dict(b) for b in v] for k, v in c.port_bindings.items()},
            "PublishAllPorts": c.publish_all_ports,
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "LogConfig": {"Type": "json-file", "Config": {}},
            "Privileged": False,
        },
        "Mounts": [],
        "Config": {
            "Hostname": c.hostname,
            "Domainname": c.domainname,
            "User": c.user,
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "Tty": c.tty,
            "OpenStdin": c.open_stdin,
            "StdinOnce": c.stdin_once,
            "Env": list(c.env),
            "Cmd": list(c.cmd) if c.cmd else None,
            "Entrypoint": list(c.entrypoint) if c.entrypoint else None,
            "Image": c.image,
            "Volumes": None,
            "WorkingDir": c.working_dir,
            "Labels": dict(c.labels),
            "ExposedPorts": {k: {} for k in c.exposed_ports} or None,
        },
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": c.id if c.sandbox_key else "",
            "SandboxKey": c.sandbox_key,
            "HairpinMode": False,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": ports_map(c),
            "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None,
            **top,
            "Networks": settings,
        },
    }


def container_summary(c: Container, networks: dict[str, Network]) -> dict[str, Any]:
    args = list(c.entrypoint or []) + list(c.cmd or [])
    return {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": c.image,
        "ImageID": c.image_id,
        "Command": " ".join(shlex.quote(a) if " " in a else a for a in args),
        "Created": _docker_time_to_unix(c.created),
        "Ports": ports_list(c),
        "Labels": dict(c.labels),
        "State": state_name(c),
        "Status": status_text(c),
        "HostConfig": {"NetworkMode": c.network_mode},
        "NetworkSettings": {"Networks": networks_of(c, networks)},
        "Mounts": [],
    }


def image_summary(img: Image) -> dict[str, Any]:
    return {
        "Id": img.id,
        "ParentId": "",
        "RepoTags": list(img.repo_tags) or ["<none>:<none>"],
        "RepoDigests": [],
        "Created": _docker_time_to_unix(img.created),
        "Size": img.size,
        "SharedSize": -1,
        "VirtualSize": img.size,
        "Labels": {},
        "Containers": -1,
    }


def image_json(img: Image, legacy: bool = False) -> dict[str, Any]:
    """``legacy``: a client below API 1.45, which still gets ``Container`` and
    ``ContainerConfig`` (moby dropped them in 1.45; docker-compose 1.29 reads
    ``ContainerConfig`` when it recreates a container and fails without it)."""
    out: dict[str, Any] = {
        "Id": img.id,
        "RepoTags": list(img.repo_tags),
        "RepoDigests": [],
        "Parent": "",
        "Comment": "",
        "Created": img.created,
        "DockerVersion": "",
        "Author": "",
        "Config": {"Cmd": list(img.cmd), "Env": list(img.env), "Entrypoint": None,
                   "WorkingDir": "", "Labels": None, "Hostname": "", "User": ""},
        "Architecture": "amd64",
        "Os": "linux",
        "Size": img.size,
        "VirtualSize": img.size,
        "GraphDriver": {"Name": "overlay2", "Data": None},
        "RootFS": {"Type": "layers", "Layers": [img.id]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }
    if legacy:
        out["Container"] = ""
        out["ContainerConfig"] = {**out["Config"], "Volumes": None}
    return out


def is_v4(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).version == 4
    except ValueError:
        return False
