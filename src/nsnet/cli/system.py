"""version, info and `system reconcile` (nsnet's own route)."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

import click

from nsnet import __version__
from nsnet.cli.base import CLIExit, State, cli, error_line, warn
from nsnet.cli.format import bytes_size, json_indent, parse_rfc3339
from nsnet.client import API_VERSION, ClientError

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


def _kv(indent: int, key: str, value: Any) -> str:
    """docker version's layout: values start at column 20 whatever the indent."""
    label = " " * indent + key + ":"
    return f"{label:<20}{value}".rstrip() if len(label) < 20 else f"{label} {value}"


def _arch() -> str:
    machine = platform.machine()
    return f"linux/{_GOARCH.get(machine, machine)}"


def _built(value: str) -> str:
    """docker prints BuildTime as Go's ANSIC layout in local time."""
    parsed = parse_rfc3339(value)
    if parsed is None:
        return value
    local = parsed.astimezone() if parsed.tzinfo else parsed
    return local.strftime("%a %b %e %H:%M:%S %Y")


_ENGINE_LABELS = {
    "ApiVersion": "API version",
    "GoVersion": "Go version",
    "PythonVersion": "Python version",
    "GitCommit": "Git commit",
    "BuildTime": "Built",
    "KernelVersion": "Kernel version",
    "Experimental": "Experimental",
}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def server_version_lines(v: Mapping[str, Any]) -> list[str]:
    name = (v.get("Platform") or {}).get("Name") or ""
    lines = [f"Server: {name}".rstrip()]
    components = list(v.get("Components") or [])
    if not any(c.get("Name") == "Engine" for c in components):
        details = {
            k: v.get(k)
            for k in (
                "ApiVersion",
                "MinAPIVersion",
                "GitCommit",
                "GoVersion",
                "Os",
                "Arch",
                "KernelVersion",
                "BuildTime",
                "Experimental",
            )
            if k in v
        }
        components.insert(
            0, {"Name": "Engine", "Version": v.get("Version", ""), "Details": details}
        )
    for comp in components:
        details = dict(comp.get("Details") or {})
        lines.append(f" {comp.get('Name', '')}:")
        lines.append(_kv(2, "Version", comp.get("Version", "")))
        if "ApiVersion" in details:
            api = str(details.pop("ApiVersion"))
            minimum = details.pop("MinAPIVersion", None)
            lines.append(
                _kv(2, "API version", f"{api} (minimum version {minimum})" if minimum else api)
            )
        os_name, arch = details.pop("Os", None), details.pop("Arch", None)
        for key in ("GoVersion", "PythonVersion", "GitCommit", "BuildTime"):
            if key in details:
                value = details.pop(key)
                shown = _built(str(value)) if key == "BuildTime" else _value(value)
                lines.append(_kv(2, _ENGINE_LABELS[key], shown))
        if os_name or arch:
            lines.append(_kv(2, "OS/Arch", f"{os_name or ''}/{arch or ''}"))
        for key, value in details.items():
            lines.append(_kv(2, _ENGINE_LABELS.get(key, key), _value(value)))
    return lines


@cli.command("version")
@click.pass_obj
def version(state: State) -> None:
    """Show the nsnet version information."""
    client_lines = [
        "Client:",
        _kv(1, "Version", __version__),
        _kv(1, "API version", API_VERSION),
        _kv(1, "Python version", platform.python_version()),
        _kv(1, "OS/Arch", _arch()),
        _kv(1, "Host", state.client.host),
    ]
    click.echo("\n".join(client_lines))
    try:
        server = state.client.version()
    except ClientError as exc:
        click.echo("")
        raise CLIExit(1, error_line(exc)) from None
    click.echo("")
    click.echo("\n".join(server_version_lines(server)))


def info_lines(i: Mapping[str, Any]) -> list[str]:
    """The part of `docker info`'s Server section nsnet has something to say about."""
    lines = ["Server:"]

    def add(indent: int, label: str, key: str) -> None:
        if key in i and i[key] is not None:
            lines.append(" " * indent + f"{label}: {_value(i[key])}")

    add(1, "Containers", "Containers")
    add(2, "Running", "ContainersRunning")
    add(2, "Paused", "ContainersPaused")
    add(2, "Stopped", "ContainersStopped")
    add(1, "Images", "Images")
    add(1, "Server Version", "ServerVersion")
    add(1, "Storage Driver", "Driver")
    plugins = i.get("Plugins") or {}
    if plugins:
        lines.append(" Plugins:")
        for kind in ("Volume", "Network", "Log"):
            if plugins.get(kind):
                lines.append(f"  {kind}: {' '.join(plugins[kind])}")
    add(1, "Default Runtime", "DefaultRuntime")
    add(1, "Kernel Version", "KernelVersion")
    add(1, "Operating System", "OperatingSystem")
    add(1, "OSType", "OSType")
    add(1, "Architecture", "Architecture")
    add(1, "CPUs", "NCPU")
    if i.get("MemTotal"):
        lines.append(f" Total Memory: {bytes_size(float(i['MemTotal']))}")
    add(1, "Name", "Name")
    add(1, "ID", "ID")
    add(1, "Docker Root Dir", "DockerRootDir")
    add(1, "Debug Mode", "Debug")
    add(1, "Experimental", "ExperimentalBuild")
    add(1, "Live Restore Enabled", "LiveRestoreEnabled")
    # Only in a cluster (Docker printed these two lines only when the flags were set).
    if i.get("ClusterStore"):
        add(1, "Cluster Store", "ClusterStore")
        add(1, "Cluster Advertise", "ClusterAdvertise")
    node = i.get("ClusterNode")
    if isinstance(node, Mapping):
        store = "reachable" if node.get("StoreReachable") else "UNREACHABLE"
        lines.append(f" Cluster Node: {node.get('ID', '')} (store {store}, "
                     f"{node.get('Nodes', 0)} live nodes)")
    return lines


@cli.command("info")
@click.pass_obj
def info(state: State) -> None:
    """Display system-wide information."""
    click.echo(
        "\n".join(
            ["Client:", f" Version:    {__version__}", f" Host:       {state.client.host}", ""]
        )
    )
    try:
        data = state.client.info()
    except ClientError as exc:
        raise CLIExit(1, error_line(exc)) from None
    click.echo("\n".join(info_lines(data)))
    for warning in data.get("Warnings") or []:
        warn(str(warning))


@cli.group("system")
def system() -> None:
    """Manage nsnet."""


@system.command("reconcile")
@click.pass_obj
def reconcile(state: State) -> None:
    """Bring the kernel (links, namespaces, firewall, resolvers) back in line with the store."""
    result = state.client.reconcile()
    click.echo(json_indent(result) if not isinstance(result, str) else result)


system.add_command(version, "version")
system.add_command(info, "info")
