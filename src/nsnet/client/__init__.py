"""Typed synchronous client for nsnetd's Docker Engine API subset (stdlib only)."""

from nsnet.client.api import (
    Client,
    Containers,
    EventStream,
    Images,
    Networks,
    PendingWait,
    frames_text,
)
from nsnet.client.errors import APIError, ClientError, DaemonUnreachable, ProtocolError
from nsnet.client.transport import (
    API_VERSION,
    DEFAULT_HOST,
    DEFAULT_SOCKET,
    HOST_ENV,
    STDERR,
    STDIN,
    STDOUT,
    FrameStream,
    encode_filters,
    iter_frames,
    socket_path_of,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_HOST",
    "DEFAULT_SOCKET",
    "HOST_ENV",
    "STDERR",
    "STDIN",
    "STDOUT",
    "APIError",
    "Client",
    "ClientError",
    "Containers",
    "DaemonUnreachable",
    "EventStream",
    "FrameStream",
    "Images",
    "Networks",
    "PendingWait",
    "ProtocolError",
    "encode_filters",
    "frames_text",
    "iter_frames",
    "socket_path_of",
]
