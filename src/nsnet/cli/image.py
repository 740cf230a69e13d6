"""Image commands: nsnet never pulls, so images come from `nsnet image import`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

import click

from nsnet.cli.base import (
    CLIExit,
    DockerCommand,
    State,
    binary_stream,
    cli,
    emit,
    error_line,
    parse_filters,
    warn,
)
from nsnet.cli.format import human_size, render, since, unix_time
from nsnet.cli.output import print_inspect
from nsnet.client import APIError

IMAGE_HEADERS = {
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "ID": "IMAGE ID",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "Digest": "DIGEST",
    "Containers": "CONTAINERS",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
    "VirtualSize": "VIRTUAL SIZE",
}
IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"


def split_ref(ref: str) -> tuple[str, str]:
    """`name:tag` → (name, tag); a `:` inside a registry host:port is not a tag separator."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "<none>"
    return name, tag


def image_rows(img: Mapping[str, Any], trunc: bool = True) -> list[dict[str, Any]]:
    """One row per tag, as `docker images` prints them (`<none>` when untagged)."""
    image_id = str(img.get("Id") or "")
    short = image_id.removeprefix("sha256:")[:12] if trunc else image_id
    created = float(img.get("Created") or 0)
    size = float(img.get("Size") or 0)
    containers = img.get("Containers")
    base = {
        "ID": short,
        "CreatedSince": since(created),
        "CreatedAt": unix_time(created),
        "Size": human_size(size),
        "VirtualSize": human_size(size),
        "Digest": "<none>",
        "Containers": "N/A" if containers in (None, -1) else str(containers),
        "SharedSize": "N/A",
        "UniqueSize": "N/A",
    }
    tags = [t for t in (img.get("RepoTags") or []) if t != "<none>:<none>"]
    if not tags:
        return [{**base, "Repository": "<none>", "Tag": "<none>"}]
    rows = []
    for tag in tags:
        repo, tagname = split_ref(tag)
        rows.append({**base, "Repository": repo, "Tag": tagname})
    return rows


@click.command("images", cls=DockerCommand)
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all images.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="K=V", help="Filter output.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("--format", "fmt", default="", help="'json', 'table' or a Go-template-lite.")
@click.argument("repository", required=False)
@click.pass_obj
def images(
    state: State,
    show_all: bool,
    quiet: bool,
    filters: tuple[str, ...],
    no_trunc: bool,
    fmt: str,
    repository: str | None,
) -> None:
    """List images."""
    parsed: dict[str, list[str]] = parse_filters(filters)
    if repository:
        parsed.setdefault("reference", []).append(repository)
    listed = state.client.images.list(all=show_all, filters=parsed)
    listed.sort(key=lambda i: -float(i.get("Created") or 0))
    rows = [row for img in listed for row in image_rows(img, trunc=not no_trunc)]
    if quiet:
        ids: list[str] = []
        for row in rows:
            if row["ID"] not in ids:
                ids.append(row["ID"])
        emit("".join(i + "\n" for i in ids))
        return
    emit(render(fmt or IMAGES_TABLE, rows, IMAGE_HEADERS))


@click.command("import", cls=DockerCommand)
@click.option("-m", "--message", default="", help="Commit message for the imported image.")
@click.argument("file")
@click.argument("reference", required=False)
@click.pass_obj
def image_import(state: State, message: str, file: str, reference: str | None) -> None:
    """Import a root filesystem tarball (FILE or - for stdin) as an image."""
    source: str | IO[bytes]
    source = binary_stream("stdin") if file == "-" else file
    for msg in state.client.images.import_tar(source, reference, message=message or None):
        status = msg.get("status")
        if status:
            click.echo(status if not msg.get("id") else f"{msg['id']}: {status}")


@click.command("inspect", cls=DockerCommand)
@click.option("-f", "--format", "fmt", default="", help="'json' or a Go-template-lite.")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def image_inspect(state: State, fmt: str, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more images."""
    print_inspect(names, state.client.images.inspect, fmt)


@click.command("rm", cls=DockerCommand)
@click.option("-f", "--force", is_flag=True, help="Force removal of the image.")
@click.option("--no-prune", is_flag=True, help="Do not delete untagged parents.")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def image_rm(state: State, force: bool, no_prune: bool, names: tuple[str, ...]) -> None:
    """Remove one or more images."""
    failed = False
    for name in names:
        try:
            results = state.client.images.remove(name, force=force, noprune=no_prune)
        except APIError as exc:
            warn(error_line(exc))
            failed = True
            continue
        for item in results:
            if item.get("Untagged"):
                click.echo(f"Untagged: {item['Untagged']}")
            if item.get("Deleted"):
                click.echo(f"Deleted: {item['Deleted']}")
    if failed:
        raise CLIExit(1)


@cli.group("image")
def image() -> None:
    """Manage images."""


cli.add_command(images, "images")
cli.add_command(image_rm, "rmi")
cli.add_command(image_import, "import")
image.add_command(images, "ls")
image.add_command(images, "list")
image.add_command(image_import, "import")
image.add_command(image_inspect, "inspect")
image.add_command(image_rm, "rm")
image.add_command(image_rm, "remove")
