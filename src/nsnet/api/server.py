"""The HTTP server under the API: aiohttp's low-level server, with half-close kept open.

The docker CLI half-closes (shutdown SHUT_WR) a hijacked exec/attach connection when it has no
stdin to send. asyncio closes a transport on EOF unless the protocol's ``eof_received`` returns
true, and aiohttp's returns None, so every frame after that would be lost. The protocol here keeps
the write side open; the connection still ends when the response is done (hijacked responses
force-close) or when the peer goes away entirely.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


class _HalfCloseRequestHandler(RequestHandler):
    """Only a hijacked connection outlives the peer's EOF: an ordinary keep-alive connection
    whose client went away must close, or idle connections pile up until the keep-alive
    timeout (one per docker CLI call)."""

    hijacked = False

    def eof_received(self) -> bool:  # type: ignore[override]
        return self.hijacked


def mark_hijacked(protocol: object) -> None:
    if isinstance(protocol, _HalfCloseRequestHandler):
        protocol.hijacked = True


class HalfCloseServer(web.Server):
    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = dict(self._kwargs)
        return _HalfCloseRequestHandler(self, loop=self._loop, **kwargs)
