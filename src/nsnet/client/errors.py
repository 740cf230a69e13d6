"""Errors the client raises.

Two kinds only, because callers (the CLI above all) render them differently: a daemon that
answered with an error (docker prints "Error response from daemon: ...") and a daemon that
could not be reached or spoke nonsense.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of everything the client raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class APIError(ClientError):
    """The daemon answered with a status >= 400; `message` is its JSON "message"."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.message!r})"

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_conflict(self) -> bool:
        return self.status == 409


class DaemonUnreachable(ClientError):
    """Nothing answered on the socket (missing, refused, not allowed)."""


class ProtocolError(ClientError):
    """The daemon answered something this client cannot read."""
