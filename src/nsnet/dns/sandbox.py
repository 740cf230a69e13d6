"""What the resolver keeps per sandbox, and how an answer finds its way back to the client.

The server's hot path reads these objects on every query, so they are plain ``__slots__``
classes; a forwarded answer goes back through a ``Reply`` made when the query arrived, so the
forwarder never needs to know whether the client asked over UDP or TCP.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

_LEN = struct.Struct(">H")

Reply = Callable[[bytes], None]


class ServedSandbox:
    """What the server keeps for one sandbox: its sockets, its forwarding settings, and the
    tasks and connections to end when it goes."""

    __slots__ = (
        "closed",
        "conns",
        "dns_servers",
        "forward",
        "id",
        "inflight",
        "tasks",
        "tcp",
        "tcp_server",
        "udp",
        "udp_lost",
        "udp_transport",
    )

    def __init__(
        self,
        sandbox_id: str,
        udp: socket.socket,
        tcp: socket.socket,
        dns_servers: list[str] | None,
        forward: bool,
    ) -> None:
        self.id = sandbox_id
        self.udp = udp
        self.tcp = tcp
        self.dns_servers: tuple[str, ...] = tuple(dns_servers or ())
        self.forward = forward
        self.inflight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.conns: set[asyncio.Task[None]] = set()
        self.udp_transport: asyncio.DatagramTransport | None = None
        # Resolved when the UDP transport has closed the socket.
        self.udp_lost: asyncio.Future[None] | None = None
        self.tcp_server: asyncio.AbstractServer | None = None
        self.closed = False


class UDPReply:
    """Sends a forwarded answer back to the client that asked, unless the socket closed."""

    __slots__ = ("addr", "transport")

    def __init__(self, transport: asyncio.DatagramTransport, addr: tuple[str, int]) -> None:
        self.transport = transport
        self.addr = addr

    def __call__(self, msg: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.sendto(msg, self.addr)


class TCPReply:
    """Writes a forwarded answer, length-prefixed, on the connection that asked."""

    __slots__ = ("writer",)

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def __call__(self, msg: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(_LEN.pack(len(msg)) + msg)
