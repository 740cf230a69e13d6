"""Entry point of the `nsnet` command.

Importing the command modules registers them on the group; nothing here talks to the daemon,
so `nsnet --help` stays fast and works without one.
"""

from __future__ import annotations

from nsnet.cli import (  # noqa: F401 - importing a command module registers its commands
    container,
    events,
    image,
    listing,
    network,
    node,
    port,
    run,
    system,
)
from nsnet.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli.main(prog_name="nsnet")


if __name__ == "__main__":
    main()
