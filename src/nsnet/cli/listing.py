"""`ps` and the top-level `inspect`: how containers are listed and looked up, docker's way.

`container_fields` is docker's ps formatter context (truncated IDs, quoted commands, "Up 3
seconds"), so `--format` templates written for docker work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click

from nsnet.cli.base import State, cli, emit, parse_filters
from nsnet.cli.format import ellipsis, go_quote, human_size, render, since, unix_time
from nsnet.cli.output import print_inspect
from nsnet.client import APIError

CONTAINER_HEADERS = {
    "ID": "CONTAINER ID",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Ports": "PORTS",
    "State": "STATE",
    "Status": "STATUS",
    "Size": "SIZE",
    "Names": "NAMES",
    "Labels": "LABELS",
    "Mounts": "MOUNTS",
    "Networks": "NETWORKS",
    "LocalVolumes": "LOCAL VOLUMES",
}
PS_TABLE = (
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
)


def format_ports(ports: Iterable[Mapping[str, Any]] | None) -> str:
    """`0.0.0.0:8080->80/tcp, 443/tcp` from the summary's Ports list."""
    seen: list[str] = []
    for p in sorted(
        ports or [],
        key=lambda p: (int(p.get("PrivatePort") or 0), str(p.get("Type") or ""), str(p.get("IP"))),
    ):
        private = f"{p.get('PrivatePort')}/{p.get('Type') or 'tcp'}"
        public = p.get("PublicPort")
        if public:
            ip = str(p.get("IP") or "")
            host = f"[{ip}]" if ":" in ip else ip
            text = f"{host}:{public}->{private}"
        else:
            text = private
        if text not in seen:
            seen.append(text)
    return ", ".join(seen)


def container_fields(c: Mapping[str, Any], trunc: bool = True) -> dict[str, Any]:
    """The fields of docker's ps formatter context, as strings."""
    cid = str(c.get("Id") or "")
    names = [n[1:] if n.startswith("/") else n for n in (c.get("Names") or [])]
    if trunc:
        plain = [n for n in names if "/" not in n]
        names = plain[:1] or names[:1]
    command = str(c.get("Command") or "")
    image = str(c.get("Image") or "")
    if trunc and image.startswith("sha256:"):
        image = image[len("sha256:") :][:12]
    created = float(c.get("Created") or 0)
    networks = sorted(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys())
    labels = c.get("Labels") or {}
    return {
        "ID": cid[:12] if trunc else cid,
        "Image": image,
        "Command": go_quote(ellipsis(command, 20) if trunc else command),
        "CreatedAt": unix_time(created),
        "RunningFor": since(created),
        "Ports": format_ports(c.get("Ports")),
        "State": str(c.get("State") or ""),
        "Status": str(c.get("Status") or ""),
        "Size": human_size(float(c.get("SizeRw") or 0)),
        "Names": ",".join(names),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Mounts": "",
        "Networks": ",".join(networks),
        "LocalVolumes": "0",
    }


@cli.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all containers.")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="K=V", help="Filter output.")
@click.option("-n", "--last", type=int, default=-1, help="Show n last created containers.")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container.")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("--format", "fmt", default="", help="'json', 'table' or a Go-template-lite.")
@click.pass_obj
def ps(
    state: State,
    show_all: bool,
    quiet: bool,
    filters: tuple[str, ...],
    last: int,
    latest: bool,
    size: bool,
    no_trunc: bool,
    fmt: str,
) -> None:
    """List containers."""
    limit = 1 if latest else last
    rows = state.client.containers.list(
        all=show_all or limit > 0,
        filters=parse_filters(filters),
        limit=limit if limit > 0 else None,
        size=size,
    )
    fields = [container_fields(c, trunc=not no_trunc) for c in rows]
    if quiet:
        emit("".join(f["ID"] + "\n" for f in fields))
        return
    template = fmt or PS_TABLE
    if size and not fmt:
        template += "\t{{.Size}}"
    emit(render(template, fields, CONTAINER_HEADERS))


@cli.command("inspect")
@click.option("-f", "--format", "fmt", default="", help="'json' or a Go-template-lite.")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["container", "image", "network"]),
    default=None,
    help="Only look for this kind of object.",
)
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def inspect(state: State, fmt: str, kind: str | None, names: tuple[str, ...]) -> None:
    """Return low-level information on containers, images or networks."""
    client = state.client
    lookups: list[Callable[[str], Any]] = []
    if kind in (None, "container"):
        lookups.append(client.containers.inspect)
    if kind in (None, "image"):
        lookups.append(client.images.inspect)
    if kind in (None, "network"):
        lookups.append(client.networks.inspect)

    def fetch(name: str) -> Any:
        for lookup in lookups:
            try:
                return lookup(name)
            except APIError as exc:
                if exc.status != 404:
                    raise
        raise APIError(404, f"No such object: {name}")

    print_inspect(names, fetch, fmt, not_found="Error: No such object: {name}")
