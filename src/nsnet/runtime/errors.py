"""What runc's failures say: its JSON log turned into one message, and which of them mean
"the command cannot run" (``classify_start_error``, kept in ``nsnet.exit_codes`` so the CLI,
which never imports the runtime, reads the daemon's message with the same words)."""

from __future__ import annotations

import json
from typing import Final

from nsnet.exit_codes import classify_start_error

__all__ = ["NOT_RUNNING", "classify_start_error", "runc_error_text"]

# What runc says when asked about a container that has already gone.
NOT_RUNNING: Final = ("not running", "does not exist", "stopped")


def runc_error_text(raw: bytes) -> str:
    """runc's error messages from its ``--log-format json`` output (stderr or --log file)."""
    msgs: list[str] = []
    for line in raw.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            msgs.append(line)  # plain text: runc also prints the fatal error bare
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            msgs.append(str(entry.get("msg", "")))
    # The final error usually comes twice (logged, then printed); keep one of each.
    return "; ".join(dict.fromkeys(m for m in msgs if m))
