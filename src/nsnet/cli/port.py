"""`nsnet port`: a container's published ports, read from inspect as docker port reads them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from nsnet.cli.base import State, cli, fail


def port_lines(ports: Mapping[str, Any] | None, private: str | None) -> list[str]:
    """docker port's lines: ``80/tcp -> 0.0.0.0:8080`` for each binding, or only the host
    side for one ``private`` port (``80`` meaning ``80/tcp``); exposed-only ports print
    nothing."""
    want = None
    if private:
        port, _, proto = private.partition("/")
        if not port.isdigit() or proto not in ("", "tcp", "udp", "sctp"):
            fail(f"invalid port: {private}")
        want = f"{int(port)}/{proto or 'tcp'}"
    lines = []
    for key in sorted(ports or {}, key=lambda k: (int(k.split("/")[0]), k)):
        if want is not None and key != want:
            continue
        for b in (ports or {}).get(key) or []:
            ip = str(b.get("HostIp") or "0.0.0.0")
            host = f"[{ip}]:{b.get('HostPort')}" if ":" in ip else f"{ip}:{b.get('HostPort')}"
            lines.append(host if want is not None else f"{key} -> {host}")
    return lines


@cli.command("port")
@click.argument("container")
@click.argument("private_port", required=False)
@click.pass_obj
def port(state: State, container: str, private_port: str | None) -> None:
    """List port mappings or a specific mapping for the container."""
    info = state.client.containers.inspect(container)
    ports = (info.get("NetworkSettings") or {}).get("Ports")
    lines = port_lines(ports, private_port)
    if private_port and not lines:
        name = str(info.get("Name") or container).lstrip("/")
        fail(f"No public port '{private_port if '/' in private_port else private_port + '/tcp'}'"
             f" published for {name}")
    for line in lines:
        click.echo(line)
