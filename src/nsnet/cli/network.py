"""`nsnet network ...`: the docker CLI's network commands, same flags, output and exit codes.

The request bodies they send are built in `nsnet.cli.requests` (pure, shared with `run`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
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
    warn,
)
from nsnet.cli.format import go_time, parse_rfc3339, render
from nsnet.cli.output import print_inspect
from nsnet.cli.requests import connect_endpoint_config, network_create_body
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
    """The fields of docker's network formatter context, as strings."""
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
