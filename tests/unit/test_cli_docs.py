"""docs/cli.md is the CLI's own help, regenerated and compared: a flag added without a docs
update fails here, with the command that fixes it."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from nsnet.cli.docgen import REGENERATE, render, walk
from nsnet.cli.main import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_reference_is_up_to_date() -> None:
    assert DOC.read_text() == render(cli), f"docs/cli.md is out of date: run `{REGENERATE}`"


def test_every_command_path_is_documented() -> None:
    text = DOC.read_text()
    for path, _command, _ctx in walk(cli):
        title = " ".join(("nsnet", *path))
        assert f"## {title}\n" in text or f"`{title}`" in text, f"{title} missing from docs/cli.md"


def test_reference_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    wide = render(cli)
    monkeypatch.setenv("COLUMNS", "40")
    assert render(cli) == wide


def test_a_new_flag_changes_the_reference() -> None:
    @click.group()
    def root() -> None:
        """Root."""

    @root.command("go")
    def go() -> None:
        """Go somewhere."""

    before = render(root)
    go.params.append(click.Option(["--fast"], is_flag=True, help="Go fast."))
    after = render(root)
    assert "--fast" not in before
    assert "--fast" in after and "Go fast." in after
