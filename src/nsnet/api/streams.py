"""Docker's streams over HTTP: the multiplexed frame, the raw TTY stream and the hijacked
connection in both directions.

Logs, attach and exec send each chunk as an 8-byte header (stream number, length) and the
bytes; a TTY's output has one stream and goes raw, as Docker sends it. The engine feeds chunks
to the ``sink`` built here and never sees the response. With ``stdin=1`` (attach) or
``AttachStdin`` (exec), what the client writes after the request on the hijacked connection is
the process's input: the sink is then an ``InputSink`` whose ``read_input`` the engine pulls.
Input is held one read buffer at a time; past that the connection stops being read, so a
client pasting into a program that does not read is slowed by TCP, not buffered here.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from aiohttp import web

from nsnet.api.app import std_headers
from nsnet.api.backend import Sink
from nsnet.api.detach_keys import DetachScanner
from nsnet.api.server import mark_hijacked

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"
# Input held before the connection stops being read.
INPUT_LIMIT = 1 << 16


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def sink_to(resp: web.StreamResponse, raw: bool = False) -> Sink:
    """Frames each chunk onto ``resp`` (``raw``: a TTY's bytes as they are); a client gone
    raises, which ends the session."""
    async def sink(stream: int, data: bytes) -> None:
        await resp.write(data if raw else frame(stream, data))

    return sink


class _InputParser:
    """Takes the place of aiohttp's payload parser on a hijacked connection: what the client
    writes after the request is queued for ``read_input``, the transport paused while the
    queue is full."""

    def __init__(self, req: web.BaseRequest) -> None:
        self._transport = req.transport
        self._buf = bytearray()
        self._eof = False
        self._paused = False
        self._wakeup = asyncio.Event()

    # aiohttp's parser interface (RequestHandler.data_received, connection_lost, set_parser).
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._buf += data
        self._wakeup.set()
        if len(self._buf) >= INPUT_LIMIT and not self._paused and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._wakeup.set()

    async def read(self) -> bytes:
        while not self._buf and not self._eof:
            self._wakeup.clear()
            await self._wakeup.wait()
        data = bytes(self._buf)
        self._buf.clear()
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data


class InputSink:
    """A sink that also reads the client's input from the hijacked connection
    (``nsnet.engine.sessions.InputSink``). Made before ``hijack`` answers: a client may
    write as soon as it reads the 101, and aiohttp would parse those bytes as a request."""

    def __init__(self, req: web.BaseRequest, raw: bool, detach_keys: bytes | None = None) -> None:
        self._raw = raw
        self._write: Sink | None = None
        self._input = _InputParser(req)
        self._scanner = DetachScanner(detach_keys) if detach_keys else None
        self._ended = False
        # Set when the client typed its detach keys: its input has ended, and the handler
        # ends the session (the container keeps running).
        self.detached = asyncio.Event()
        protocol: Any = req.protocol
        protocol.set_parser(self._input)
        _notify_eof(protocol, self._input)

    def start(self, resp: web.StreamResponse) -> InputSink:
        """Output goes to ``resp`` (the hijacked response) from now on."""
        self._write = sink_to(resp, self._raw)
        return self

    async def __call__(self, stream: int, data: bytes) -> None:
        assert self._write is not None, "InputSink.start(resp) first"
        await self._write(stream, data)

    async def read_input(self) -> bytes:
        """The next chunk the client sent; b"" once it half-closed, left or detached."""
        while not self._ended:
            data = await self._input.read()
            if self._scanner is None:
                return data
            if not data:
                self._ended = True
                return self._scanner.flush()
            out, detached = self._scanner.feed(data)
            if detached:
                self._ended = True
                self.detached.set()
            if out:
                return out
        return b""


def _notify_eof(protocol: Any, parser: _InputParser) -> None:
    """The docker CLI half-closes when its stdin ends; the server keeps the connection open
    for the output (``eof_received`` true on a hijacked connection) and tells the input side
    through its ``on_eof`` hook, so ``docker exec -i c cat <file`` ends."""
    protocol.on_eof = parser.feed_eof


async def hijack(req: web.BaseRequest, tty: bool = False) -> web.StreamResponse:
    """Take the connection over for a stream (101 on an Upgrade, else a raw 200); a TTY's
    stream is raw either way."""
    upgrade = "upgrade" in req.headers.get("Connection", "").lower()
    if upgrade:
        resp = web.StreamResponse(status=101, reason="UPGRADED", headers={
            "Content-Type": RAW if tty else MULTIPLEXED, "Connection": "Upgrade",
            "Upgrade": "tcp"})
    else:
        resp = web.StreamResponse(status=200, headers={"Content-Type": RAW})
    resp.force_close()
    std_headers(resp)
    mark_hijacked(req.protocol)
    # Headers in their own flushed write: docker-py loses frames that share their read.
    await resp.prepare(req)
    await resp.drain() if hasattr(resp, "drain") else None
    return resp
