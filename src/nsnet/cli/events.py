"""``nsnet events``: the daemon's event stream, printed as ``docker events`` prints it.

The stream is read a line at a time as it arrives (one JSON object a line), so events show up
while they happen; ``--until`` in the past prints what the daemon still holds and returns.
Timestamps go to the daemon as given: it reads every form ``docker events`` accepts (unix
seconds, RFC3339, ``10m``), and it shares this host's clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import click

from nsnet.cli.base import State, cli, emit, parse_filters
from nsnet.cli.format import render


def event_line(msg: Mapping[str, Any]) -> str:
    """docker's default line: local time with nanoseconds, type, action, actor, attributes
    sorted by key."""
    nano = int(msg.get("timeNano") or int(msg.get("time") or 0) * 1_000_000_000)
    when = datetime.fromtimestamp(nano // 1_000_000_000).astimezone()
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nano % 1_000_000_000:09d}"
    offset = when.strftime("%z")
    stamp += "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    actor = msg.get("Actor") or {}
    line = f"{stamp} {msg.get('Type', '')} {msg.get('Action', '')} {actor.get('ID', '')}"
    attrs = actor.get("Attributes") or {}
    if attrs:
        line += " (" + ", ".join(f"{k}={v}" for k, v in sorted(attrs.items())) + ")"
    return line


@cli.command("events")
@click.option("--since", default="", help="Show events since this time (unix seconds, "
              "RFC3339, or a duration like 10m).")
@click.option("--until", default="", help="Stream events until this time.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="Filter: type, event, container, network, image, label (key=value).")
@click.option("--format", "fmt", default="",
              help="'json' or a Go-template-lite such as '{{.Type}} {{.Action}}'.")
@click.pass_obj
def events(state: State, since: str, until: str, filters: tuple[str, ...], fmt: str) -> None:
    """Get real time events from the daemon."""
    # Ctrl-C, a closed pipe and daemon errors end it as every command ends (NsnetGroup).
    with state.client.events(since or None, until or None, parse_filters(filters)) as stream:
        for msg in stream:
            if fmt:
                emit(render(fmt, [msg], {}, strict=False))
            else:
                click.echo(event_line(msg))
