"""The HTTP server under the API: aiohttp's low-level server, with limits and half-close kept open.

Limits. Every API connection holds a descriptor of a root daemon, and any local user of the
socket can open them, so the number of connections and the time a client may take are bounded:
past ``max_connections`` a new connection is answered ``503 {"message": "too many
connections"}`` and closed at once; a connection must deliver complete request headers within
``header_timeout`` of opening or of its previous response (aiohttp's keep-alive timer, which is
armed from the start of the connection and closes it only while it waits for a request); and a
request body that stops arriving for ``body_timeout`` while the handler waits for it ends the
connection (with a 408 when nothing was answered yet). A handler that is busy (not reading) is
not the client's fault: flow control then pauses reading and the body clock stops. Hijacked
exec/attach streams are exempt from both timeouts: an interactive shell may be idle for hours.

Half-close. The docker CLI half-closes (shutdown SHUT_WR) a hijacked exec/attach connection when
it has no stdin to send. asyncio closes a transport on EOF unless the protocol's ``eof_received``
returns true, and aiohttp's returns None, so every frame after that would be lost. The protocol
here keeps the write side open; the connection still ends when the response is done (hijacked
responses force-close) or when the peer goes away entirely.

Access log. Every request is one line of the ``nsnet.api.server`` logger when it ends: method,
path and query (values of secret-looking parameters masked), status and duration; at debug,
4xx at info, 5xx at error, so ``--log-level debug`` shows every call a client made. A hijacked
or streamed response (attach, logs -f, events) is logged when its stream ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, urlencode

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


@dataclass(frozen=True)
class Limits:
    """Defaults sized for a root daemon on a shared host; all are ``nsnetd`` flags."""

    max_connections: int = 1000
    header_timeout: float = 30.0
    body_timeout: float = 30.0


def _raw_error(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


_TOO_MANY = _raw_error(503, "Service Unavailable", "too many connections")
_BODY_TIMEOUT = _raw_error(408, "Request Timeout", "timed out reading the request body")


class _LimitedRequestHandler(RequestHandler):
    """Only a hijacked connection outlives the peer's EOF: an ordinary keep-alive connection
    whose client went away must close, or idle connections pile up until the keep-alive
    timeout (one per docker CLI call)."""

    hijacked = False
    # Set by a stream that reads the hijacked connection's input (api/streams.py): told when
    # the client half-closes (the docker CLI does when its stdin ends), while the output
    # side stays open.
    on_eof: Callable[[], None] | None = None

    def __init__(self, *args: Any, body_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._body_timeout = body_timeout
        self._last_rx = 0.0
        self._watched: web.BaseRequest | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def eof_received(self) -> bool:  # type: ignore[override]
        if self.hijacked and self.on_eof is not None:
            self.on_eof()
        return self.hijacked

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.unwatch_body()
        super().connection_lost(exc)

    def watch_body(self, request: web.BaseRequest) -> None:
        """Arm the body clock for a request whose body has not all arrived yet."""
        if request.content.is_eof() or self._body_timeout <= 0:
            return
        self._watched = request
        self._last_rx = self._loop.time()
        self._arm(self._last_rx + self._body_timeout)

    def unwatch_body(self) -> None:
        self._watched = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _arm(self, when: float) -> None:
        self._body_timer = self._loop.call_at(when, self._check_body)

    def _check_body(self) -> None:
        self._body_timer = None
        request = self._watched
        if request is None or self.hijacked or self.transport is None:
            return
        if request.content.is_eof():
            return
        now = self._loop.time()
        if self._reading_paused:
            # We stopped reading (the handler is not consuming): the client is not late.
            self._last_rx = now
        deadline = self._last_rx + self._body_timeout
        if now < deadline:
            self._arm(deadline)
            return
        self._watched = None
        if request.writer.output_size == 0:
            self.transport.write(_BODY_TIMEOUT)
        self.force_close()


class _TooMany(asyncio.Protocol):
    """Answers a connection past the limit and closes it: its descriptor lives microseconds."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.WriteTransport: no isinstance check.
        cast(asyncio.WriteTransport, transport).write(_TOO_MANY)
        transport.close()


def mark_hijacked(protocol: object) -> None:
    if isinstance(protocol, _LimitedRequestHandler):
        protocol.hijacked = True
        protocol.unwatch_body()


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

access_log = logging.getLogger(__name__)  # "nsnet.api.server"
# Query parameters whose values may be credentials; their values never reach the log.
_SECRET_PARAM = re.compile(r"auth|token|pass|secret|key|credential", re.IGNORECASE)


def access_line(method: str, path: str, query: Mapping[str, str], status: int,
                seconds: float) -> str:
    """One request as the access log shows it, one line with four fields: the query's
    secret-looking values masked and no body, ever (a body may hold environment variables,
    commands or registry auth)."""
    # Re-quoted: a decoded path may hold spaces (``/networks/my net``) or, from a hostile
    # client, newlines that would forge log lines.
    target = quote(path, safe="/@:,$&'()*+;=!~")
    if query:
        target += "?" + urlencode([(k, "***" if _SECRET_PARAM.search(k) else v)
                                   for k, v in query.items()], safe="/:,*{}[]\"@")
    return f"{method} {target} {status} {seconds * 1000:.1f}ms"


def access_level(status: int) -> int:
    """Every request at debug, a client's mistake (4xx) at info so a user sees which call
    a client got wrong without debug's noise, the daemon's (5xx) at error."""
    if status >= 500:
        return logging.ERROR
    if status >= 400:
        return logging.INFO
    return logging.DEBUG


def log_access(request: web.BaseRequest, status: int, seconds: float) -> None:
    level = access_level(status)
    if access_log.isEnabledFor(level):
        access_log.log(level, "%s", access_line(request.method, request.path, request.query,
                                                status, seconds))


class ApiServer(web.Server):
    """aiohttp's server with nsnet's connection limit, timeouts and half-close handling."""

    def __init__(self, handler: Handler, *, limits: Limits | None = None, **kwargs: Any) -> None:
        self.limits = limits or Limits()

        async def watched(request: web.BaseRequest) -> web.StreamResponse:
            proto = request.protocol
            if isinstance(proto, _LimitedRequestHandler):
                proto.watch_body(request)
            started = time.monotonic()
            status = 500
            try:
                resp = await handler(request)
                status = resp.status
                return resp
            except ConnectionResetError:
                if isinstance(proto, _LimitedRequestHandler) and proto.transport is None:
                    # Gone (or cut off by the body clock): nothing to answer, and aiohttp
                    # would log the reset as a handler error. It notices the closed transport.
                    status = 408
                    return web.Response(status=408)
                raise
            except asyncio.CancelledError:
                status = 499  # the client went away first (nginx's code for it)
                raise
            finally:
                if isinstance(proto, _LimitedRequestHandler):
                    proto.unwatch_body()
                log_access(request, status, time.monotonic() - started)

        super().__init__(watched, keepalive_timeout=self.limits.header_timeout, **kwargs)

    def __call__(self) -> Any:
        if len(self._connections) >= self.limits.max_connections:
            return _TooMany()
        kwargs: dict[str, Any] = dict(self._kwargs)
        return _LimitedRequestHandler(self, loop=self._loop,
                                      body_timeout=self.limits.body_timeout, **kwargs)
