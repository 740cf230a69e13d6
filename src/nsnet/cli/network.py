"""`nsnet network ...`: the docker CLI's network commands, same flags and request bodies."""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click

from nsnet.cli.base import (
    CLIExit,
    State,
    cli,
    emit,
    error_line,
    fail,
    parse_filters,
    parse_kv,
    warn,
)
from nsnet.cli.format import go_time, json_indent, parse_rfc3339, render
from nsnet.client import APIError

NETWORK_HEADERS = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "IPv4": "IPV4",
    "IPv6": "IPV6",
    "Internal": "INTERNAL",
    "Labels": "LABELS",
    "CreatedAt": "CREATED AT",
}
NETWORK_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"


# --- request bodies (pure, so they can be tested without a daemon) ---------------------------


def _parse_cidr_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Go's net.ParseCIDR, keeping only the address part."""
    addr, sep, prefix = text.partition("/")
    try:
        if not sep or not prefix.isdigit():
            raise ValueError(text)
        ip = ipaddress.ip_address(addr)
        if int(prefix) > ip.max_prefixlen:
            raise ValueError(text)
    except ValueError:
        raise ValueError(f"invalid CIDR address: {text}") from None
    return ip


def subnet_matches(subnet: str, data: str) -> bool:
    """docker's subnetMatches: is `data` (an address or CIDR) inside `subnet`?"""
    try:
        _parse_cidr_ip(subnet)
    except ValueError as exc:
        raise ValueError(f"invalid subnet: {exc}") from None
    net = ipaddress.ip_network(subnet, strict=False)
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    if "/" in data:
        ip = _parse_cidr_ip(data)
    else:
        try:
            ip = ipaddress.ip_address(data)
        except ValueError:
            ip = None
    return ip is not None and ip in net


def ipam_config(
    subnets: Sequence[str],
    ip_ranges: Sequence[str],
    gateways: Sequence[str],
    aux_addresses: Mapping[str, str],
) -> list[dict[str, Any]]:
    """IPAM.Config exactly as docker's createIPAMConfig builds it, checks and wording included.

    Each range, gateway and aux address is attached to the subnet that contains it; empty keys
    are left out (the Go type marks them omitempty). Raises ValueError with docker's message.
    """
    if len(subnets) < len(ip_ranges) or len(subnets) < len(gateways):
        raise ValueError("every ip-range or gateway must have a corresponding subnet")
    data: dict[str, dict[str, Any]] = {}
    for s in subnets:
        for k in data:
            if subnet_matches(s, k) or subnet_matches(k, s):
                raise ValueError("multiple overlapping subnet configuration is not supported")
        data[s] = {"Subnet": s, "IPRange": "", "Gateway": "", "AuxiliaryAddresses": {}}
    for r in ip_ranges:
        match = False
        for s in subnets:
            if not subnet_matches(s, r):
                continue
            if data[s]["IPRange"]:
                raise ValueError(
                    f"cannot configure multiple ranges ({r}, {data[s]['IPRange']}) "
                    f"on the same subnet ({s})"
                )
            data[s]["IPRange"] = r
            match = True
        if not match:
            raise ValueError(f"no matching subnet for range {r}")
    for g in gateways:
        match = False
        for s in subnets:
            if not subnet_matches(s, g):
                continue
            if data[s]["Gateway"]:
                raise ValueError(
                    f"cannot configure multiple gateways ({g}, {data[s]['Gateway']}) "
                    f"for the same subnet ({s})"
                )
            data[s]["Gateway"] = g
            match = True
        if not match:
            raise ValueError(f"no matching subnet for gateway {g}")
    for key, aa in aux_addresses.items():
        match = False
        for s in subnets:
            if not subnet_matches(s, aa):
                continue
            data[s]["AuxiliaryAddresses"][key] = aa
            match = True
        if not match:
            raise ValueError(f"no matching subnet for aux-address {aa}")
    return [{k: v for k, v in entry.items() if v} for entry in data.values()]


def network_create_body(
    name: str,
    *,
    driver: str = "bridge",
    subnets: Sequence[str] = (),
    gateways: Sequence[str] = (),
    ip_ranges: Sequence[str] = (),
    aux_addresses: Iterable[str] = (),
    ipv4: bool | None = None,
    ipv6: bool | None = None,
    internal: bool = False,
    attachable: bool = False,
    ingress: bool = False,
    scope: str = "",
    config_only: bool = False,
    config_from: str = "",
    options: Iterable[str] = (),
    labels: Iterable[str] = (),
    ipam_driver: str = "default",
    ipam_options: Iterable[str] = (),
) -> dict[str, Any]:
    """The body `docker network create` sends (docker-api.md §3.2), key order included."""
    config = ipam_config(subnets, ip_ranges, gateways, parse_kv(aux_addresses))
    body: dict[str, Any] = {"Driver": driver, "Scope": scope}
    if ipv4 is not None:
        body["EnableIPv4"] = ipv4
    if ipv6 is not None:
        body["EnableIPv6"] = ipv6
    body["IPAM"] = {"Driver": ipam_driver, "Options": parse_kv(ipam_options), "Config": config}
    body.update(
        {
            "Internal": internal,
            "Attachable": attachable,
            "Ingress": ingress,
            "ConfigOnly": config_only,
            "ConfigFrom": {"Network": config_from} if config_from else None,
            "Options": parse_kv(options),
            "Labels": parse_kv(labels),
            "Name": name,
        }
    )
    return body


def endpoint_settings(
    *,
    ipam: Mapping[str, Any] | None = None,
    links: Sequence[str] | None = None,
    aliases: Sequence[str] | None = None,
    driver_opts: Mapping[str, str] | None = None,
    mac_address: str = "",
    gw_priority: int = 0,
) -> dict[str, Any]:
    """A whole EndpointSettings object as the Go client marshals it (operational part zero)."""
    return {
        "IPAMConfig": None if ipam is None else dict(ipam),
        "Links": None if links is None else list(links),
        "Aliases": None if aliases is None else list(aliases),
        "MacAddress": mac_address,
        "DriverOpts": None if driver_opts is None else dict(driver_opts),
        "GwPriority": gw_priority,
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": None,
    }


def endpoint_ipam(ipv4: str = "", ipv6: str = "", link_local: Sequence[str] = ()) -> dict[str, Any]:
    """EndpointIPAMConfig with docker's omitempty keys."""
    out: dict[str, Any] = {}
    if ipv4:
        out["IPv4Address"] = ipv4
    if ipv6:
        out["IPv6Address"] = ipv6
    if link_local:
        out["LinkLocalIPs"] = list(link_local)
    return out


def driver_opts_map(values: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        if "=" not in item:
            raise ValueError("invalid key value pair format in driver options")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def connect_endpoint_config(
    *,
    ip: str = "",
    ip6: str = "",
    aliases: Sequence[str] = (),
    links: Sequence[str] = (),
    link_local_ips: Sequence[str] = (),
    driver_opts: Iterable[str] = (),
    gw_priority: int = 0,
) -> dict[str, Any]:
    """`docker network connect`'s EndpointConfig: IPAMConfig `{}`, Aliases `[]`, Links null
    when no flags were given."""
    return endpoint_settings(
        ipam=endpoint_ipam(ip, ip6, link_local_ips),
        links=list(links) if links else None,
        aliases=list(aliases),
        driver_opts=driver_opts_map(driver_opts),
        gw_priority=gw_priority,
    )


# --- listing --------------------------------------------------------------------------------


def natural_key(text: str) -> list[tuple[int, int, str]]:
    """docker sorts network names in natural order ("net2" before "net10")."""
    return [
        (1, int(part), "") if part.isdigit() else (0, 0, part)
        for part in re.split(r"(\d+)", text)
        if part
    ]


def _labels_text(labels: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def network_fields(net: Mapping[str, Any], trunc: bool = True) -> dict[str, Any]:
    net_id = str(net.get("Id") or net.get("ID") or "")
    created = parse_rfc3339(str(net.get("Created") or ""))
    return {
        "ID": net_id[:12] if trunc else net_id,
        "Name": str(net.get("Name") or ""),
        "Driver": str(net.get("Driver") or ""),
        "Scope": str(net.get("Scope") or ""),
        "IPv4": "true" if net.get("EnableIPv4", True) else "false",
        "IPv6": "true" if net.get("EnableIPv6") else "false",
        "Internal": "true" if net.get("Internal") else "false",
        "Labels": _labels_text(net.get("Labels")),
        "CreatedAt": go_time(created) if created else "",
    }


# --- commands -------------------------------------------------------------------------------


@cli.group("network")
def network() -> None:
    """Manage networks."""


@network.command("create")
@click.option("-d", "--driver", default="bridge", show_default=True, help="Network driver.")
@click.option("--subnet", multiple=True, help="Subnet in CIDR form (repeatable).")
@click.option("--gateway", multiple=True, help="Gateway for a subnet (repeatable).")
@click.option("--ip-range", multiple=True, help="Allocate container IPs from a sub-range.")
@click.option("--aux-address", multiple=True, metavar="NAME=IP", help="Reserved addresses.")
@click.option("--ipv4/--no-ipv4", default=None, help="Enable or disable IPv4 address assignment.")
@click.option("--ipv6/--no-ipv6", default=None, help="Enable or disable IPv6 address assignment.")
@click.option("--internal", is_flag=True, help="Restrict external access to the network.")
@click.option("--attachable", is_flag=True, help="Enable manual container attachment.")
@click.option("--ingress", is_flag=True, help="Swarm routing-mesh network.")
@click.option("--scope", default="", help="Network scope.")
@click.option("--config-only", is_flag=True, help="Create a configuration-only network.")
@click.option("--config-from", default="", help="Network to copy the configuration from.")
@click.option("-o", "--opt", "opts", multiple=True, metavar="K=V", help="Driver options.")
@click.option("--label", multiple=True, metavar="K=V", help="Network metadata.")
@click.option("--ipam-driver", default="default", show_default=True, help="IPAM driver.")
@click.option("--ipam-opt", multiple=True, metavar="K=V", help="IPAM driver options.")
@click.argument("name")
@click.pass_obj
def network_create(
    state: State,
    driver: str,
    subnet: tuple[str, ...],
    gateway: tuple[str, ...],
    ip_range: tuple[str, ...],
    aux_address: tuple[str, ...],
    ipv4: bool | None,
    ipv6: bool | None,
    internal: bool,
    attachable: bool,
    ingress: bool,
    scope: str,
    config_only: bool,
    config_from: str,
    opts: tuple[str, ...],
    label: tuple[str, ...],
    ipam_driver: str,
    ipam_opt: tuple[str, ...],
    name: str,
) -> None:
    """Create a network."""
    try:
        body = network_create_body(
            name,
            driver=driver,
            subnets=subnet,
            gateways=gateway,
            ip_ranges=ip_range,
            aux_addresses=aux_address,
            ipv4=ipv4,
            ipv6=ipv6,
            internal=internal,
            attachable=attachable,
            ingress=ingress,
            scope=scope,
            config_only=config_only,
            config_from=config_from,
            options=opts,
            labels=label,
            ipam_driver=ipam_driver,
            ipam_options=ipam_opt,
        )
    except ValueError as exc:
        fail(str(exc))
    resp = state.client.networks.create(body)
    warning = resp.get("Warning")
    if warning:
        warn(f"WARNING: {warning}")
    click.echo(resp.get("Id", ""))


@network.command("ls")
@click.option("-f", "--filter", "filters", multiple=True, metavar="K=V", help="Filter output.")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
@click.option("--format", "fmt", default="", help="'json', 'table' or a Go-template-lite.")
@click.pass_obj
def network_ls(
    state: State, filters: tuple[str, ...], quiet: bool, no_trunc: bool, fmt: str
) -> None:
    """List networks."""
    nets = state.client.networks.list(parse_filters(filters))
    nets.sort(key=lambda n: natural_key(str(n.get("Name") or "")))
    rows = [network_fields(n, trunc=not no_trunc) for n in nets]
    if quiet:
        emit("".join(r["ID"] + "\n" for r in rows))
        return
    emit(render(fmt or NETWORK_TABLE, rows, NETWORK_HEADERS))


network.add_command(network_ls, "list")


def print_inspect(
    names: Sequence[str], fetch: Any, fmt: str, *, not_found: str | None = None
) -> None:
    """docker's inspect contract: found objects printed together, each failure on stderr,
    exit 1 if anything failed."""
    found: list[Any] = []
    errors: list[str] = []
    for name in names:
        try:
            found.append(fetch(name))
        except APIError as exc:
            if exc.status == 404 and not_found:
                errors.append(not_found.format(name=name))
            else:
                errors.append(error_line(exc))
    if fmt:
        for item in found:
            if isinstance(item, dict):
                emit(render(fmt, [item], {}, strict=False))
    else:
        click.echo(json_indent(found))
    for line in errors:
        warn(line)
    if errors:
        raise CLIExit(1)


@network.command("inspect")
@click.option("-f", "--format", "fmt", default="", help="'json' or a Go-template-lite.")
@click.option("-v", "--verbose", is_flag=True, help="Verbose output for diagnostics.")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def network_inspect(state: State, fmt: str, verbose: bool, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more networks."""
    print_inspect(names, lambda n: state.client.networks.inspect(n, verbose=verbose), fmt)


@network.command("connect")
@click.option("--ip", default="", help="IPv4 address.")
@click.option("--ip6", default="", help="IPv6 address.")
@click.option("--alias", multiple=True, help="Network-scoped alias for the container.")
@click.option("--link", multiple=True, help="Link to another container (name:alias).")
@click.option("--link-local-ip", multiple=True, help="Link-local addresses.")
@click.option("--driver-opt", multiple=True, metavar="K=V", help="Driver options.")
@click.option("--gw-priority", type=int, default=0, help="Default gateway priority.")
@click.argument("net")
@click.argument("container")
@click.pass_obj
def network_connect(
    state: State,
    ip: str,
    ip6: str,
    alias: tuple[str, ...],
    link: tuple[str, ...],
    link_local_ip: tuple[str, ...],
    driver_opt: tuple[str, ...],
    gw_priority: int,
    net: str,
    container: str,
) -> None:
    """Connect a container to a network."""
    try:
        config = connect_endpoint_config(
            ip=ip,
            ip6=ip6,
            aliases=alias,
            links=link,
            link_local_ips=link_local_ip,
            driver_opts=driver_opt,
            gw_priority=gw_priority,
        )
    except ValueError as exc:
        fail(str(exc))
    state.client.networks.connect(net, container, config)


@network.command("disconnect")
@click.option("-f", "--force", is_flag=True, help="Force the container to disconnect.")
@click.argument("net")
@click.argument("container")
@click.pass_obj
def network_disconnect(state: State, force: bool, net: str, container: str) -> None:
    """Disconnect a container from a network."""
    state.client.networks.disconnect(net, container, force=force)


@network.command("rm")
@click.option("-f", "--force", is_flag=True, help="Do not error if the network does not exist.")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def network_rm(state: State, force: bool, names: tuple[str, ...]) -> None:
    """Remove one or more networks."""
    failed = False
    for name in names:
        try:
            state.client.networks.remove(name)
        except APIError as exc:
            if force and exc.status == 404:
                continue
            warn(error_line(exc))
            failed = True
            continue
        click.echo(name)
    if failed:
        raise CLIExit(1)


network.add_command(network_rm, "remove")

PRUNE_WARNING = "WARNING! This will remove all custom networks not used by at least one container."


def confirm(warning: str) -> bool:
    """docker's prompt: anything but y/Y (or end of input) means no."""
    click.echo(f"{warning}\nAre you sure you want to continue? [y/N] ", nl=False)
    line = sys.stdin.readline()
    return line.strip().lower() in ("y", "yes")


@network.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, metavar="K=V", help="until=, label=...")
@click.pass_obj
def network_prune(state: State, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all unused networks."""
    parsed = parse_filters(filters)
    if not force and not confirm(PRUNE_WARNING):
        return
    resp = state.client.networks.prune(parsed)
    deleted = resp.get("NetworksDeleted") or []
    if deleted:
        emit("Deleted Networks:\n" + "".join(f"{n}\n" for n in deleted))
