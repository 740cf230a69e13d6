"""The per-test namespace check (tests/conftest.py) sees only namespaces this process noted
(``nsnet.testing.leaks.note_namespace``: ``TestHost.create`` and ``sh("ip", "netns", "add",
...)``). A test that makes one with ``subprocess`` directly is invisible to it: a leak of that
namespace would pass unseen. Only a stand-in for another run's namespace may be made so, and
says so on its line."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# ``["ip", "netns", "add"`` as a list literal: an argv for subprocess, not a call of sh().
UNNOTED = re.compile(r"""\[\s*["']ip["']\s*,\s*["']netns["']\s*,\s*["']add["']""")
ALLOWED = "# another run's"


def test_every_namespace_a_test_makes_is_noted() -> None:
    offenders = []
    for base in (ROOT / "tests", ROOT / "src" / "nsnet" / "testing"):
        for path in sorted(base.rglob("*.py")):
            if path.resolve() == Path(__file__).resolve():
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if UNNOTED.search(line) and ALLOWED not in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert offenders == [], ("namespaces made past the leak check's record (use sh(\"ip\", "
                             f"\"netns\", \"add\", NAME) or TestHost.create): {offenders}")
