"""select() aborts the process on a descriptor >= 1024, and nsnetd holds many more than that.

The daemon's own code must wait with poll/epoll (asyncio, selectors.DefaultSelector); the one
library that select()s (libnftables) runs in a thread with a private descriptor table
(``nsnet.kernel.nft``). This keeps a new ``select.select`` from slipping in.
"""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "nsnet"
PATTERN = re.compile(
    r"\bselect\.select\b|^\s*from select import\b|^\s*import select\b|SelectSelector")


def test_no_select_in_the_daemon() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if PATTERN.search(code):
                offenders.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert offenders == []
