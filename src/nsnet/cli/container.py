"""Container commands: run, create, start, ps, inspect, exec, logs, stop, kill, wait, rm."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import click

from nsnet.cli.base import (
    CLIExit,
    State,
    binary_stream,
    cli,
    daemon_error,
    emit,
    error_line,
    fail,
    parse_filters,
    warn,
)
from nsnet.cli.format import ellipsis, go_quote, human_size, render, since, unix_time
from nsnet.cli.network import print_inspect
from nsnet.cli.runopts import ContainerOptions, OptionError, container_create_body
from nsnet.client import STDERR, APIError, Client, ClientError, FrameStream

F = TypeVar("F", bound=Callable[..., Any])

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

RUN_SETTINGS = {"allow_interspersed_args": False}


# --- output helpers -------------------------------------------------------------------------


def pump(frames: Iterable[tuple[int, bytes]]) -> None:
    """Copy stream frames to our stdout/stderr as they come, like docker's stdcopy."""
    out = binary_stream("stdout")
    err = binary_stream("stderr")
    for stream, data in frames:
        target = err if stream == STDERR else out
        target.write(data)
        target.flush()


@contextlib.contextmanager
def forward_signals(client: Client, container: str) -> Iterator[None]:
    """docker's sig-proxy: Ctrl-C and TERM go to the container, which decides whether to end."""

    def handler(signum: int, _frame: Any) -> None:
        try:
            client.containers.kill(container, signal=signal.Signals(signum).name)
        except ClientError:
            pass

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, old)


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


# --- run / create ---------------------------------------------------------------------------


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
        click.option("-p", "--publish", multiple=True, help="Publish a container's port."),
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


def start_error(exc: ClientError) -> CLIExit:
    """docker's toStatusError: 127 for a missing program, 126 for one that cannot run."""
    msg = daemon_error(exc) if isinstance(exc, APIError) else str(exc)
    text = exc.message
    if any(
        s in text
        for s in (
            "executable file not found",
            "no such file or directory",
            "system cannot find the file specified",
        )
    ):
        code = 127
    elif "permission denied" in text or "is a directory" in text:
        code = 126
    else:
        code = 125
    return CLIExit(code, f"nsnet: {msg}")


def run_attached(client: Client, cid: str, auto_remove: bool) -> int:
    """docker's order: attach, then wait (headers back), then start; output until the stream
    ends; the exit code comes from the wait body."""
    stream: FrameStream = client.containers.attach(cid, stream=True, stdout=True, stderr=True)
    try:
        waiter = client.containers.wait_begin(cid, "removed" if auto_remove else "next-exit")
    except ClientError:
        stream.close()
        raise
    with forward_signals(client, cid):
        try:
            client.containers.start(cid)
        except ClientError as exc:
            stream.close()
            if auto_remove:
                with contextlib.suppress(ClientError):
                    waiter.result(timeout=10)
            waiter.close()
            raise start_error(exc) from None
        try:
            pump(stream)
        finally:
            stream.close()
        try:
            status = waiter.result()
        finally:
            waiter.close()
    error = status.get("Error")
    if isinstance(error, dict) and error.get("Message"):
        warn(f"Error waiting for container: {error['Message']}")
        return 125
    return int(status.get("StatusCode") or 0)


@cli.command("run", context_settings=RUN_SETTINGS)
@click.option("-d", "--detach", is_flag=True, help="Run in the background and print the ID.")
@container_flags
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run(state: State, detach: bool, image: str, command: tuple[str, ...], **kw: Any) -> None:
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
def create(state: State, image: str, command: tuple[str, ...], **kw: Any) -> None:
    """Create a new container."""
    click.echo(create_container(state.client, _options(image, command, False, kw)))


# --- lifecycle ------------------------------------------------------------------------------


def for_each(names: Iterable[str], action: Callable[[str], str | None]) -> None:
    """Run `action` per name, printing what it returns; failures on stderr, exit 1 at the end."""
    failed = False
    for name in names:
        try:
            line = action(name)
        except ClientError as exc:
            warn(error_line(exc))
            failed = True
            continue
        if line is not None:
            click.echo(line)
    if failed:
        raise CLIExit(1)


@cli.command("start")
@click.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR and forward signals.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def start(state: State, attach: bool, containers: tuple[str, ...]) -> None:
    """Start one or more stopped containers."""
    client = state.client
    if attach:
        if len(containers) > 1:
            fail("you cannot start and attach multiple containers at once")
        info = client.containers.inspect(containers[0])
        cid = str(info.get("Id") or containers[0])
        auto_remove = bool((info.get("HostConfig") or {}).get("AutoRemove"))
        code = run_attached(client, cid, auto_remove)
        if code:
            raise CLIExit(code)
        return

    def one(name: str) -> str:
        client.containers.start(name)
        return name

    for_each(containers, one)


@cli.command("stop")
@click.option(
    "-t",
    "--timeout",
    "--time",
    "timeout",
    type=int,
    default=None,
    help="Seconds to wait before killing the container.",
)
@click.option("-s", "--signal", "sig", default="", help="Signal to send to the container.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def stop(state: State, timeout: int | None, sig: str, containers: tuple[str, ...]) -> None:
    """Stop one or more running containers."""

    def one(name: str) -> str:
        state.client.containers.stop(name, t=timeout, signal=sig or None)
        return name

    for_each(containers, one)


@cli.command("kill")
@click.option("-s", "--signal", "sig", default="", help="Signal to send to the container.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def kill(state: State, sig: str, containers: tuple[str, ...]) -> None:
    """Kill one or more running containers."""

    def one(name: str) -> str:
        state.client.containers.kill(name, signal=sig or None)
        return name

    for_each(containers, one)


@cli.command("wait")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def wait(state: State, containers: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes."""

    def one(name: str) -> str:
        status = state.client.containers.wait(name)
        error = status.get("Error")
        if isinstance(error, dict) and error.get("Message"):
            raise ClientError(str(error["Message"]))
        return str(status.get("StatusCode", 0))

    for_each(containers, one)


@cli.command("rm")
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container.")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes.")
@click.option("-l", "--link", is_flag=True, help="Remove the specified link.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def rm(state: State, force: bool, volumes: bool, link: bool, containers: tuple[str, ...]) -> None:
    """Remove one or more containers."""
    failed = False
    for name in containers:
        try:
            state.client.containers.remove(name, force=force, volumes=volumes, link=link)
        except APIError as exc:
            warn(error_line(exc))
            # docker rm -f on a missing container reports it but still succeeds.
            if not (force and exc.status == 404):
                failed = True
            continue
        click.echo(name)
    if failed:
        raise CLIExit(1)


# --- listing and inspection -----------------------------------------------------------------


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


@cli.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("-n", "--tail", default="all", help="Number of lines to show from the end.")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.argument("container")
@click.pass_obj
def logs(state: State, follow: bool, tail: str, timestamps: bool, container: str) -> None:
    """Fetch the logs of a container."""
    if tail != "all":
        try:
            int(tail)
        except ValueError:
            fail(f'invalid argument "{tail}" for "-n, --tail" flag: must be a number or "all"')
    stream = state.client.containers.logs(
        container, follow=follow, tail=tail, timestamps=timestamps
    )
    with stream:
        pump(stream)


@cli.command("exec", context_settings=RUN_SETTINGS)
@click.option("-d", "--detach", is_flag=True, help="Run the command in the background.")
@click.option("-e", "--env", multiple=True, help="Set environment variables.")
@click.option("-w", "--workdir", default="", help="Working directory inside the container.")
@click.option("-u", "--user", default="", help="Username or UID.")
@click.option("--privileged", is_flag=True,
              help="Extended privileges (refused by nsnetd: not supported).")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def exec_(
    state: State,
    detach: bool,
    env: tuple[str, ...],
    workdir: str,
    user: str,
    privileged: bool,
    container: str,
    command: tuple[str, ...],
) -> None:
    """Execute a command in a running container; exit with its exit code."""
    client = state.client
    client.containers.inspect(container)
    created = client.containers.exec_create(
        container,
        command,
        env=env,
        workdir=workdir,
        user=user,
        detach=detach,
        privileged=privileged,
    )
    exec_id = str(created.get("Id") or "")
    if detach:
        client.containers.exec_start(exec_id, detach=True)
        return
    with client.containers.exec_start(exec_id) as stream:
        pump(stream)
    info = client.containers.exec_inspect(exec_id)
    for _ in range(50):
        if not info.get("Running"):
            break
        time.sleep(0.05)
        info = client.containers.exec_inspect(exec_id)
    code = int(info.get("ExitCode") or 0)
    if code:
        raise CLIExit(code)


@cli.group("container")
def container() -> None:
    """Manage containers."""


for _name, _cmd in (
    ("run", run),
    ("create", create),
    ("start", start),
    ("stop", stop),
    ("kill", kill),
    ("wait", wait),
    ("rm", rm),
    ("remove", rm),
    ("ls", ps),
    ("list", ps),
    ("ps", ps),
    ("inspect", inspect),
    ("logs", logs),
    ("exec", exec_),
):
    container.add_command(_cmd, _name)
