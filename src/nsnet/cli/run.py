"""`run` and `create`: the flags docker's CLI takes, turned into its create body, then started.

The body itself is built in `nsnet.cli.runopts` (pure); this module maps flags to options,
reports client-side refusals the way docker does (`nsnet: ...`, exit 125) and, for `run`,
hands over to the attach plumbing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from nsnet.cli.attach import run_attached, start_error
from nsnet.cli.base import RUN_SETTINGS, CLIExit, State, cli, daemon_error, warn
from nsnet.cli.runopts import ContainerOptions, OptionError, container_create_body
from nsnet.client import APIError, Client, ClientError

F = TypeVar("F", bound=Callable[..., Any])


def container_flags(f: F) -> F:
    """The flags run and create share."""
    options = [
        click.option("--name", default="", help="Assign a name to the container."),
        click.option("--rm", "auto_remove", is_flag=True, help="Remove the container on exit."),
        click.option("--network", "--net", "networks", multiple=True, help="Connect to a network."),
        click.option(
            "--network-alias",
            "--net-alias",
            "network_aliases",
            multiple=True,
            help="Network-scoped alias.",
        ),
        click.option("--ip", default="", help="IPv4 address."),
        click.option("--ip6", default="", help="IPv6 address."),
        click.option("--link-local-ip", multiple=True, help="Link-local addresses."),
        click.option("--mac-address", default="", help="Container MAC address."),
        click.option("-h", "--hostname", default="", help="Container host name."),
        click.option("--domainname", default="", help="Container NIS domain name."),
        click.option("--dns", multiple=True, help="Custom DNS servers."),
        click.option("--dns-search", multiple=True, help="Custom DNS search domains."),
        click.option("--dns-option", multiple=True, help="DNS options."),
        click.option("--add-host", multiple=True, help="Custom host-to-IP mapping (host:ip)."),
        click.option("--link", multiple=True, help="Add a link to another container."),
        click.option("-e", "--env", multiple=True, help="Set environment variables."),
        click.option("-w", "--workdir", default="", help="Working directory in the container."),
        click.option("--entrypoint", default=None, help="Overwrite the image's ENTRYPOINT."),
        click.option("-u", "--user", default="", help="Username or UID."),
        click.option("-l", "--label", multiple=True, help="Set metadata on the container."),
        click.option("-p", "--publish", multiple=True,
                     help="Publish a container's port: [ip:][hostPort:]containerPort[/proto]."),
        click.option("-P", "--publish-all", is_flag=True,
                     help="Publish every exposed port on a free host port."),
        click.option("--expose", multiple=True, help="Expose a port or a range of ports."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _options(
    image: str, command: tuple[str, ...], attach: bool, kw: Mapping[str, Any]
) -> ContainerOptions:
    return ContainerOptions(
        image=image,
        command=command,
        name=kw["name"],
        networks=kw["networks"],
        network_aliases=kw["network_aliases"],
        ip=kw["ip"],
        ip6=kw["ip6"],
        link_local_ips=kw["link_local_ip"],
        mac_address=kw["mac_address"],
        links=kw["link"],
        hostname=kw["hostname"],
        domainname=kw["domainname"],
        dns=kw["dns"],
        dns_search=kw["dns_search"],
        dns_options=kw["dns_option"],
        add_hosts=kw["add_host"],
        env=kw["env"],
        workdir=kw["workdir"],
        entrypoint=kw["entrypoint"],
        user=kw["user"],
        labels=kw["label"],
        publish=kw["publish"],
        publish_all=kw["publish_all"],
        expose=kw["expose"],
        auto_remove=kw["auto_remove"],
        attach=attach,
    )


def create_container(client: Client, opts: ContainerOptions) -> str:
    """Create, or leave like docker run does: `nsnet: ...` and exit 125."""
    try:
        body = container_create_body(opts)
    except OptionError as exc:
        raise CLIExit(125, f"nsnet: {exc}") from None
    try:
        resp = client.containers.create(body, name=opts.name or None)
    except APIError as exc:
        raise CLIExit(125, f"nsnet: {daemon_error(exc)}") from None
    except ClientError as exc:
        raise CLIExit(125, f"nsnet: {exc}") from None
    for warning in resp.get("Warnings") or []:
        warn(f"WARNING: {warning}")
    return str(resp.get("Id") or "")


@cli.command("run", context_settings=RUN_SETTINGS)
@click.option("-d", "--detach", is_flag=True, help="Run in the background and print the ID.")
@container_flags
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run(state: State, /, detach: bool, image: str, command: tuple[str, ...], **kw: Any) -> None:
    """Create and run a new container from an image."""
    client = state.client
    opts = _options(image, command, not detach, kw)
    cid = create_container(client, opts)
    if not detach:
        code = run_attached(client, cid, opts.auto_remove)
        if code:
            raise CLIExit(code)
        return
    # docker sends wait before start even when detached: it is how --rm learns of removal.
    waiter = client.containers.wait_begin(cid, "removed" if opts.auto_remove else "next-exit")
    try:
        client.containers.start(cid)
    except ClientError as exc:
        if opts.auto_remove:
            with contextlib.suppress(ClientError):
                waiter.result(timeout=10)
        raise start_error(exc) from None
    finally:
        waiter.close()
    click.echo(cid)


@cli.command("create", context_settings=RUN_SETTINGS)
@container_flags
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def create(state: State, /, image: str, command: tuple[str, ...], **kw: Any) -> None:
    """Create a new container."""
    click.echo(create_container(state.client, _options(image, command, False, kw)))
