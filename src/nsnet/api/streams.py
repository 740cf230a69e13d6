"""Docker's output streams over HTTP: the multiplexed frame and the hijacked connection.

Logs, attach and exec send each chunk as an 8-byte header (stream number, length) and the
bytes; the engine feeds chunks to the ``sink`` built here and never sees the response.
"""

from __future__ import annotations

import struct

from aiohttp import web

from nsnet.api.app import std_headers
from nsnet.api.backend import Sink
from nsnet.api.server import mark_hijacked

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def sink_to(resp: web.StreamResponse) -> Sink:
    """Frames each chunk onto ``resp``; a client gone raises, which ends the session."""
    async def sink(stream: int, data: bytes) -> None:
        await resp.write(frame(stream, data))

    return sink


async def hijack(req: web.BaseRequest) -> web.StreamResponse:
    """Take the connection over for a stream (101 on an Upgrade, else a raw 200)."""
    upgrade = "upgrade" in req.headers.get("Connection", "").lower()
    if upgrade:
        resp = web.StreamResponse(status=101, reason="UPGRADED", headers={
            "Content-Type": MULTIPLEXED, "Connection": "Upgrade", "Upgrade": "tcp"})
    else:
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "application/vnd.docker.raw-stream"})
    resp.force_close()
    std_headers(resp)
    mark_hijacked(req.protocol)
    # Headers in their own flushed write: docker-py loses frames that share their read.
    await resp.prepare(req)
    await resp.drain() if hasattr(resp, "drain") else None
    return resp
