"""Write docs/cli.md from the CLI's own help: `python -m nsnet.cli.docgen > docs/cli.md`.

The reference is generated, never written by hand, so it cannot drift from the flags the code
accepts; `tests/unit/test_cli_docs.py` regenerates it and fails when the committed file differs.
docker exposes one command under several paths (`nsnet rm`, `nsnet container rm`, `nsnet
container remove`): each command is documented once, under its shortest path, and its other
paths are listed beside it. The width is fixed so the file does not depend on the terminal of
whoever ran the script.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import click

WIDTH = 100
COMMAND = ".venv/bin/python -m nsnet.cli.docgen > docs/cli.md"
REGENERATE = f"make docs (or {COMMAND})"

Path = tuple[str, ...]


def walk(
    command: click.Command, path: Path = (), parent: click.Context | None = None
) -> Iterator[tuple[Path, click.Command, click.Context]]:
    """Every (path, command, context) under `command`, depth first, subcommands by name."""
    name = path[-1] if path else "nsnet"
    ctx = click.Context(
        command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
    )
    yield path, command, ctx
    if isinstance(command, click.Group):
        for sub in sorted(command.list_commands(ctx)):
            child = command.get_command(ctx, sub)
            if child is not None and not child.hidden:
                yield from walk(child, (*path, sub), ctx)


def _title(path: Path) -> str:
    return " ".join(("nsnet", *path))


def render(root: click.Command) -> str:
    """The whole reference as Markdown: one section per distinct command, in path order."""
    seen: dict[int, list[tuple[Path, click.Command, click.Context]]] = {}
    for entry in walk(root):
        seen.setdefault(id(entry[1]), []).append(entry)
    sections = []
    for entries in seen.values():
        # The shortest path first; among equals the name the command was defined with.
        entries.sort(key=lambda e: (len(e[0]), e[0][-1:] != (e[1].name,), e[0]))
        primary, command, ctx = entries[0]
        sections.append((primary, [e[0] for e in entries[1:]], command.get_help(ctx)))
    sections.sort(key=lambda s: s[0])
    out = [
        "# nsnet command reference",
        "",
        "Generated from the CLI's own `--help`; do not edit by hand. After changing a command,",
        f"run `make docs` (which runs `{COMMAND}`).",
        "`tests/unit/test_cli_docs.py` fails while this file and the CLI disagree.",
        "",
    ]
    for primary, others, text in sections:
        out.append(f"## {_title(primary)}")
        out.append("")
        if others:
            out.append("Also: " + ", ".join(f"`{_title(p)}`" for p in others))
            out.append("")
        out.extend(["```text", text.rstrip(), "```", ""])
    return "\n".join(out)


def main() -> None:
    from nsnet.cli.main import cli

    sys.stdout.write(render(cli))


if __name__ == "__main__":
    main()
