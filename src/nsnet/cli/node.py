"""``nsnet node ls``: the hosts of this daemon's cluster, as its daemon sees them.

Not ``docker node``: that command speaks Swarm's schema, which nsnet does not serve. The table
follows ``docker node ls``'s habits anyway: IDs cut to 12 characters (``--no-trunc`` for all
32), a ``*`` after this host's own, ``-q`` for IDs only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from nsnet.cli.base import State, cli, emit
from nsnet.cli.format import render

NODE_HEADERS = {
    "ID": "ID",
    "Hostname": "HOSTNAME",
    "VTEP": "VTEP",
    "Status": "STATUS",
    "Containers": "CONTAINERS",
    "Started": "STARTED",
    "Self": "SELF",
}
NODE_TABLE = "table {{.ID}}\t{{.Hostname}}\t{{.VTEP}}\t{{.Status}}\t{{.Containers}}"


def node_fields(node: Mapping[str, Any], trunc: bool = True) -> dict[str, Any]:
    node_id = str(node.get("ID") or "")
    is_self = bool(node.get("Self"))
    shown = node_id[:12] if trunc else node_id
    if is_self and trunc:
        shown += " *"
    return {
        "ID": shown,
        "Hostname": str(node.get("Hostname") or ""),
        "VTEP": f"{node.get('VTEP', '')}:{node.get('VXLANPort', '')}",
        "Status": str(node.get("Status") or ""),
        "Containers": str(node.get("Containers", 0)),
        "Started": str(node.get("Started") or ""),
        "Self": "true" if is_self else "false",
    }


@cli.group("node")
def node() -> None:
    """Manage the hosts of an nsnet cluster."""


@node.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display node IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
@click.option("--format", "fmt", default="", help="'json', 'table' or a Go-template-lite.")
@click.pass_obj
def node_ls(state: State, quiet: bool, no_trunc: bool, fmt: str) -> None:
    """List the live hosts of the cluster (VTEP, liveness, running containers)."""
    nodes = state.client.nodes()
    if quiet:
        emit("".join(str(n.get("ID") or "") + "\n" for n in nodes))
        return
    rows = [node_fields(n, trunc=not no_trunc and fmt != "json") for n in nodes]
    emit(render(fmt or NODE_TABLE, rows, NODE_HEADERS))


node.add_command(node_ls, "list")
