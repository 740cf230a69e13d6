"""Docker's exit codes for a command that cannot run: 127 (not found), 126 (cannot execute).

Scripts test ``docker run``/``docker exec`` for 126 and 127, and the only thing that says why
a command did not start is the text of runc's error (Go's ``exec: "x": executable file not
found in $PATH``, an ``ENOENT`` or ``EACCES`` from execve). The daemon records the code in the
container's state, the exec session keeps it, and the CLI maps a failed start to its exit
status, all from the same words: so the words are listed once, here, pure and importable from
any layer (the CLI reads the daemon's message, it never sees runc).

The lists are moby's ``translateContainerdStartErr`` and the docker CLI's ``toStatusError``
merged: "system cannot find the file specified" is Windows' ENOENT, which a daemon on Linux
never says but a CLI test or a remote daemon may; ``EISDIR`` is what execve of a directory
gives.
"""

from __future__ import annotations

from typing import Final

NOT_FOUND: Final = 127
CANNOT_EXECUTE: Final = 126

_NOT_FOUND_WORDS: Final = (
    "executable file not found",
    "no such file or directory",
    "system cannot find the file specified",
)
_CANNOT_EXECUTE_WORDS: Final = ("permission denied", "is a directory")


def classify_start_error(message: str) -> int | None:
    """127 or 126 when ``message`` says the command could not run; None for any other
    failure (a mount, a cgroup, runc itself), which is the daemon's fault, not the command's.
    Case-insensitive: runc, Go and the daemon's own wrapping do not agree on case."""
    text = message.lower()
    if any(w in text for w in _NOT_FOUND_WORDS):
        return NOT_FOUND
    if any(w in text for w in _CANNOT_EXECUTE_WORDS):
        return CANNOT_EXECUTE
    return None
