"""Error kinds shared by every layer.

Each kind carries the one HTTP status the API answers it with (``status``), so this class list
is the whole error table: the API's dispatch turns any raised kind into that status and
Docker's ``{"message": ...}`` body, and lower layers raise these instead of library exceptions
so no other mapping is needed.
"""

from __future__ import annotations


class NsnetError(Exception):
    """Base of every error nsnet reports to a user."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(NsnetError):
    """The request itself is wrong (bad CIDR, bad name, bad option)."""

    status = 400


class Forbidden(NsnetError):
    """The request is well-formed but not allowed (predefined network, network in use)."""

    status = 403


class NotFound(NsnetError):
    """The named object does not exist."""

    status = 404


class Conflict(NsnetError):
    """The request clashes with existing state (duplicate name, running container)."""

    status = 409


class Unavailable(NsnetError):
    """A needed facility is missing (kernel feature, swarm, a driver's dependency)."""

    status = 503


class NotModified(NsnetError):
    """Docker answers 304 when a start or stop changes nothing."""

    status = 304


class SystemError_(NsnetError):
    """An unexpected failure below us (kernel, runc); reported as 500."""

    status = 500
