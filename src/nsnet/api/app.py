"""The Docker Engine API subset, on aiohttp.

One catch-all route feeds our own small router, so versioned (``/v1.45/...``) and unversioned
paths, trailing slashes, URL-encoded segments and image references holding ``/`` and ``:`` are
handled in one place, and every miss is a JSON 404 as moby sends.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from nsnet import __version__
from nsnet.errors import Invalid, NotFound, NotModified, NsnetError

log = logging.getLogger("nsnet.api")

API_VERSION = "1.45"
MIN_API_VERSION = "1.24"

Handler = Callable[[web.BaseRequest, dict[str, str]], Awaitable[web.StreamResponse]]


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(),
                        headers={"Content-Type": "application/json"})


def error_response(status: int, message: str) -> web.Response:
    # The Go client compares the Content-Type string exactly: no charset.
    return web.Response(status=status, body=json.dumps({"message": message}).encode(),
                        headers={"Content-Type": "application/json"})


class Router:
    """Method and path template to handler; templates name their segments (``{id}``) and may
    give a segment its own pattern (``{name:.+}`` for image references holding ``/``)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._patterns: list[tuple[str, str]] = []

    def routes(self) -> list[tuple[str, str]]:
        """(method, template) of every route, in the order they were added."""
        return list(self._patterns)

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._patterns.append((method, pattern))
        rx = "^" + re.sub(r"\{(\w+)(?::([^}]+))?\}",
                          lambda m: f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})",
                          pattern) + "/?$"
        self._routes.append((method, re.compile(rx), handler))

    def match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        path_found = False
        for m, rx, h in self._routes:
            mm = rx.match(path)
            if mm:
                path_found = True
                if m == method or (m == "GET" and method == "HEAD"):
                    return h, {k: unquote(v) for k, v in mm.groupdict().items()}, True
        return None, {}, path_found


class Api:
    """The router and the dispatch that maps error kinds to HTTP statuses (one table: the
    ``status`` of each ``NsnetError`` kind)."""

    def __init__(self) -> None:
        self.router = Router()

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def deco(h: Handler) -> Handler:
            self.router.add(method, pattern, h)
            return h
        return deco

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        path = raw
        m = re.match(r"^/v(\d+\.\d+)(/.*)$", raw)
        if m:
            v = m.group(1)
            path = m.group(2)
            if _vtuple(v) < _vtuple(MIN_API_VERSION):
                return self._headers(error_response(
                    400, f"client version {v} is too old. Minimum supported API version is "
                    f"{MIN_API_VERSION}, please upgrade your client to a newer version"))
            if _vtuple(v) > _vtuple(API_VERSION):
                return self._headers(error_response(
                    400, f"client version {v} is too new. Maximum supported API version is "
                    f"{API_VERSION}"))
        handler, params, path_found = self.router.match(request.method, path)
        if handler is None:
            if path_found:
                return self._headers(error_response(405, "method not allowed"))
            return self._headers(error_response(404, "page not found"))
        try:
            resp = await handler(request, params)
        except NotModified:
            resp = web.Response(status=304)
        except NsnetError as e:
            if e.status >= 500:
                log.error("%s %s: %s", request.method, path, e.message)
            resp = error_response(e.status, e.message)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            # aiohttp's own refusals (413 beyond client_max_size, ...) as Docker's JSON errors.
            resp = error_response(e.status, e.reason or "bad request")
        except (ConnectionResetError, BrokenPipeError):
            raise
        except Exception as e:
            log.exception("%s %s failed", request.method, path)
            resp = error_response(500, f"internal error: {e}")
        if not resp.prepared:
            self._headers(resp)
        return resp

    @staticmethod
    def _headers(resp: web.StreamResponse) -> web.StreamResponse:
        resp.headers["Api-Version"] = API_VERSION
        resp.headers["Ostype"] = "linux"
        resp.headers["Docker-Experimental"] = "false"
        resp.headers["Server"] = f"Docker/{__version__}-nsnet (linux)"
        return resp


def std_headers(resp: web.StreamResponse) -> web.StreamResponse:
    return Api._headers(resp)


def param_or_404(params: dict[str, str], key: str) -> str:
    v = params.get(key, "")
    if not v:
        raise NotFound("page not found")
    return v


def require_int(value: str | None, what: str, lo: int = -(1 << 31),
                hi: int = (1 << 31) - 1) -> int | None:
    """A query integer within Go's int32 by default: beyond it no caller means what it says,
    and a float conversion further down would overflow after the work had begun."""
    if value is None or value == "":
        return None
    try:
        n = int(value.strip(), 10)
    except ValueError:
        raise Invalid(f"invalid {what}: {value[:40]!r} is not a number") from None
    if not lo <= n <= hi:
        raise Invalid(f"invalid {what}: {value[:40]} is out of range [{lo}, {hi}]")
    return n
