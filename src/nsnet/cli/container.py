"""Container lifecycle commands (start, stop, kill, wait, rm, rename, pause, unpause), logs,
exec, top, and the `container` group that gathers every container command under docker's
aliases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import click

from nsnet.cli.attach import pump, run_attached
from nsnet.cli.base import RUN_SETTINGS, CLIExit, State, cli, error_line, fail, warn
from nsnet.cli.listing import inspect, ps
from nsnet.cli.run import create, run
from nsnet.client import APIError, ClientError


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


# -- rename, pause/unpause, top (issue 11) ---------------------------------------------------


@cli.command("rename")
@click.argument("container")
@click.argument("new_name")
@click.pass_obj
def rename(state: State, container: str, new_name: str) -> None:
    """Rename a container."""
    new_name = new_name.strip()
    if not container or not new_name:
        fail("Neither old nor new names may be empty")
    state.client.containers.rename(container, new_name)


@cli.command("pause")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def pause(state: State, containers: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers."""

    def one(name: str) -> str:
        state.client.containers.pause(name)
        return name

    for_each(containers, one)


@cli.command("unpause")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def unpause(state: State, containers: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers."""

    def one(name: str) -> str:
        state.client.containers.unpause(name)
        return name

    for_each(containers, one)


@cli.command("top", context_settings=RUN_SETTINGS)
@click.argument("container")
@click.argument("ps_options", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def top(state: State, container: str, ps_options: tuple[str, ...]) -> None:
    """Display the running processes of a container (the host's ps, default -ef)."""
    data = state.client.containers.top(container, " ".join(ps_options) or None)
    titles = [str(t) for t in data.get("Titles") or []]
    rows = [[str(f) for f in row] for row in data.get("Processes") or []]
    for line in top_table(titles, rows):
        click.echo(line)


def top_table(titles: list[str], rows: list[list[str]]) -> list[str]:
    """docker top's table (Go's tabwriter, minimum width 20, padding 3): every column but
    the last padded to its widest cell; the last (the command) left as it is."""
    table = [titles, *rows]
    ncols = max((len(r) for r in table), default=0)
    widths = [max([20, *(len(r[i]) + 3 for r in table if i < len(r))])
              for i in range(ncols - 1)]
    out = []
    for r in table:
        cells = [c.ljust(widths[i]) if i < len(widths) else c for i, c in enumerate(r)]
        out.append("".join(cells).rstrip())
    return out


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
    ("rename", rename),
    ("pause", pause),
    ("unpause", unpause),
    ("top", top),
):
    container.add_command(_cmd, _name)
