"""Talking to etcd's v3 JSON gateway: endpoints, failover, deadlines, TLS.

Why the gateway and not gRPC: see "etcd client" in docs/design-notes.md (in short: the async
gRPC library has no TLS and one endpoint, the others are synchronous or dead, and the daemon
already ships aiohttp). Every etcd member serves the gateway on its client port
(``POST /v3/kv/range`` and friends, int64 as strings, bytes as base64), so this module only
moves JSON; ``store.etcd`` knows what the calls mean.

The daemon's event loop must never hang on etcd, so:

- every unary call has one deadline for all its attempts (``deadline``, default 2.5 s), after
  which it is ``errors.Unavailable``; each connect has its own shorter timeout so a dead
  member leaves time to try the next;
- a call moves on to the next endpoint when the member could not take it (connection refused
  or timed out, or the member answered that it cannot serve: no leader, gRPC code 14 / 4), or,
  for a call that may safely run twice (reads, lease calls, a blind put or delete), whenever
  its answer was lost. A transaction whose answer was lost after sending is ``Unavailable``
  at once: replaying a compare-and-swap that did commit would report a ``Conflict`` for the
  caller's own write, so the caller must re-read and decide;
- streams (watches) get TCP keepalives, so a member that vanishes without closing the
  connection (its host powered off) is noticed in ~10 s rather than never.

The endpoint that answered last is tried first next time, so a healthy cluster costs one
connection, reused (HTTP keep-alive).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from nsnet.errors import Invalid, NotFound, SystemError_, Unavailable

__all__ = ["EtcdError", "GatewayClient", "TlsFiles"]

# gRPC status codes as the gateway reports them (``{"code": n, "message": ...}``).
_GRPC_INVALID = 3
_GRPC_DEADLINE = 4
_GRPC_NOT_FOUND = 5
_GRPC_UNAVAILABLE = 14
_RETRY_ELSEWHERE = {_GRPC_DEADLINE, _GRPC_UNAVAILABLE}


class EtcdError(SystemError_):
    """etcd refused a request for a reason of its own; ``code`` is the gRPC status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd: {message}")
        self.code = code


@dataclass(frozen=True)
class TlsFiles:
    """``--cluster-store-opt kv.cacertfile=...,kv.certfile=...,kv.keyfile=...``."""

    cacertfile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def context(self) -> ssl.SSLContext | None:
        if not (self.cacertfile or self.certfile or self.keyfile):
            return None
        if bool(self.certfile) != bool(self.keyfile):
            raise Invalid("kv.certfile and kv.keyfile go together")
        try:
            ctx = ssl.create_default_context(cafile=self.cacertfile)
            if self.certfile and self.keyfile:
                ctx.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as e:
            raise Invalid(f"cluster store TLS files: {e}") from e
        return ctx


def _keepalive_socket(addr_info: Any) -> socket.socket:
    """Sockets for etcd: TCP keepalive after 3 s idle, every 2 s, dead after 3 misses."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    return sock


class _TryElsewhere(Exception):
    """This endpoint cannot serve now and the request was not applied. ``refused``: nobody
    listens there (the member is down), as opposed to a member that is up but busy."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class GatewayClient:
    """POSTs JSON to the first etcd endpoint that answers, within one deadline."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        tls: TlsFiles | None = None,
        deadline: float = 2.5,
        connect_timeout: float = 1.0,
        attempt_timeout: float = 0.8,
    ) -> None:
        if not endpoints:
            raise Invalid("no etcd endpoint given")
        ctx = (tls or TlsFiles()).context()
        scheme = "https" if ctx else "http"
        self.endpoints = [e if "://" in e else f"{scheme}://{e}" for e in endpoints]
        self.deadline = deadline
        self.connect_timeout = connect_timeout
        self.attempt_timeout = attempt_timeout
        self._ssl: ssl.SSLContext | bool = ctx if ctx is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._current = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, socket_factory=_keepalive_socket)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._current + i) % n for i in range(n)]

    async def call(
        self, path: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]:
        """The decoded answer of ``POST <endpoint><path>``; ``Unavailable`` when no endpoint
        answers within the deadline. ``idempotent=False``: never replayed once sent."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.deadline
        last = "no endpoint tried"
        if not idempotent:
            # Let the loop read what is pending first: a pooled connection whose member has
            # gone is then known closed and not used for a request we could not replay.
            await asyncio.sleep(0)
        while True:
            all_refused = True
            for i in self._order():
                left = end - loop.time()
                if left <= 0:
                    raise Unavailable(f"cluster store unreachable ({last})")
                # A call we may replay gets a short attempt: a member that forwarded it to a
                # leader that just died never answers, and the next member will, once elected.
                wait = min(left, self.attempt_timeout) if idempotent else left
                try:
                    answer = await self._post(self.endpoints[i], path, body, wait, idempotent)
                except _TryElsewhere as e:
                    last = f"{self.endpoints[i]}: {e}"
                    all_refused = all_refused and e.refused
                    continue
                self._current = i
                return answer
            if all_refused:  # every member is down: say so now, not at the deadline
                raise Unavailable(f"cluster store unreachable ({last})")
            # Members are up but none could serve (electing a leader): go round again while
            # the deadline allows.
            await asyncio.sleep(min(0.05, max(0.0, end - loop.time())))

    async def _post(
        self, endpoint: str, path: str, body: dict[str, Any], left: float, idempotent: bool
    ) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=left, sock_connect=min(self.connect_timeout, left))
        try:
            async with self._http().post(endpoint + path, json=body, timeout=timeout) as resp:
                raw = await resp.read()
        except aiohttp.ClientConnectorError as e:
            refused = isinstance(e.os_error, ConnectionRefusedError)
            raise _TryElsewhere(str(e) or type(e).__name__, refused=refused) from e
        except aiohttp.ConnectionTimeoutError as e:
            raise _TryElsewhere(str(e) or type(e).__name__) from e
        except (aiohttp.ClientError, TimeoutError) as e:
            if idempotent or _not_sent(e):  # e.g. a pooled connection to a member now gone
                raise _TryElsewhere(repr(e)) from e
            # Sent, then lost: the write may have committed, so do not replay it elsewhere.
            raise Unavailable(f"cluster store: no answer from {endpoint} ({e!r})") from e
        return _decode(raw, resp.status, endpoint)

    async def stream(
        self, path: str, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """The messages of a streaming call (a watch) from the first endpoint that takes it.
        Ends with ``Unavailable`` when the stream breaks; the caller resumes."""
        last = "no endpoint tried"
        for i in self._order():
            endpoint = self.endpoints[i]
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout)
            try:
                resp = await self._http().post(endpoint + path, json=body, timeout=timeout)
            except (aiohttp.ClientError, TimeoutError) as e:
                last = f"{endpoint}: {e!r}"
                continue
            async with resp:
                try:
                    if resp.status != 200:
                        _decode(await resp.read(), resp.status, endpoint)
                except _TryElsewhere as e:
                    last = f"{endpoint}: {e}"
                    continue
                self._current = i
                try:
                    async for line in resp.content:
                        if line.strip():
                            yield _decode(line, 200, endpoint)
                except (aiohttp.ClientError, TimeoutError, _TryElsewhere) as e:
                    raise Unavailable(f"cluster store: watch stream from {endpoint} broke") from e
            raise Unavailable(f"cluster store: {endpoint} closed the watch stream")
        raise Unavailable(f"cluster store unreachable ({last})")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _not_sent(e: BaseException) -> bool:
    """aiohttp failed writing the request (the pooled connection was already closed by the
    member), so etcd cannot have read, let alone applied, it. aiohttp has no type for this,
    only this message (client_reqrep.py)."""
    return isinstance(e, aiohttp.ClientOSError) and "Can not write request" in str(e)


def _decode(raw: bytes, status: int, endpoint: str) -> dict[str, Any]:
    """A gateway answer as a dict; its error turned into ours (``_TryElsewhere`` when another
    member may serve it)."""
    try:
        answer = json.loads(raw)
    except ValueError as e:
        raise Unavailable(f"cluster store: {endpoint} answered HTTP {status}, not JSON") from e
    if not isinstance(answer, dict):
        raise Unavailable(f"cluster store: {endpoint} answered {type(answer).__name__}")
    if "result" in answer and isinstance(answer["result"], dict):
        answer = answer["result"]  # streamed messages come wrapped
    err = answer.get("error")
    if err is None and status == 200:
        return answer
    if isinstance(err, dict):  # a streamed error: {"grpc_code": 14, "message": ...}
        answer, err = err, err.get("message")
    code = int(answer.get("code", answer.get("grpc_code", 0)) or 0)
    message = str(answer.get("message") or err or f"HTTP {status}")
    if code in _RETRY_ELSEWHERE or (code == 0 and status >= 500):
        raise _TryElsewhere(message)
    if code == _GRPC_NOT_FOUND:
        raise NotFound(f"cluster store: {message}")
    if code == _GRPC_INVALID:
        raise Invalid(f"cluster store: {message}")
    raise EtcdError(code, message)

