"""Output contracts more than one command group shares.

`inspect` is one behaviour for containers, images and networks alike: whatever was found is
printed together, each failure gets its own line on stderr, and the exit code says whether
anything failed. It lives here so the image and container commands do not import the network
module sideways for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from nsnet.cli.base import CLIExit, emit, error_line, warn
from nsnet.cli.format import json_indent, render
from nsnet.client import APIError


def print_inspect(
    names: Sequence[str], fetch: Callable[[str], Any], fmt: str, *, not_found: str | None = None
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
