"""Talking to etcd's v3 JSON gateway: endpoints, failover, deadlines, TLS.

Why the gateway and not gRPC: see "etcd client" in docs/design-notes.md (in short: the async
gRPC library has no TLS and one endpoint, the others are synchronous or dead, and the daemon
already ships aiohttp). Every etcd member serves the gateway on its client port
(``POST /v3/kv/range`` and friends, int64 as strings, bytes as base64), so this module only
moves JSON; ``store.etcd`` knows what the calls mean.

The daemon's event loop must never hang on etcd, so:

- every unary call has one deadline for all its attempts (``deadline``, default 2.5 s), after
  which it is ``errors.Unavailable``; each attempt has its own shorter timeout
  (``attempt_timeout``) and each connect a shorter one still, so a dead or hung member leaves
  time to try the next, and the next call starts at the member after the one that failed;
- a call moves on to the next endpoint when the member could not take it (connection refused
  or timed out, the request not written, or the member answered "no leader"), or, for a call
  that may safely run twice (reads, lease calls, a blind put), whenever its answer was lost.
  A call that may not run twice (a transaction) whose answer was lost after sending, or that
  got an ambiguous error (etcd's "request timed out" and "leader changed" may come after the
  write committed), raises ``AnswerLost`` at once: ``store.etcd`` finds out whether it landed;
- streams (watches) get TCP keepalives, so a member that vanishes without closing the
  connection (its host powered off) is noticed in ~10 s rather than never; and a stream quiet
  for ``stream_probe`` seconds has its member asked a linearizable read, so a member that hangs
  (stopped, or cut off from its quorum: the kernel still acknowledges keepalives for it) is
  left within a few seconds instead of silently delivering nothing.

The endpoint that answered last is tried first next time, so a healthy cluster costs one
connection, reused (HTTP keep-alive). ``revision`` is the highest store revision any answer
carried: every write sent after that answer arrived commits above it, which bounds the history
``store.etcd`` searches after a lost answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from nsnet.errors import Invalid, NotFound, SystemError_, Unavailable

__all__ = ["AnswerLost", "EtcdError", "GatewayClient", "TlsFiles"]

# gRPC status codes as the gateway reports them (``{"code": n, "message": ...}``).
_GRPC_INVALID = 3
_GRPC_DEADLINE = 4
_GRPC_NOT_FOUND = 5
_GRPC_UNAVAILABLE = 14
_GRPC_CANCELED = 1
_RETRY_ELSEWHERE = {_GRPC_DEADLINE, _GRPC_UNAVAILABLE}
# The one refusal that etcd gives before proposing anything (its gRPC interceptor), so a
# write refused with it certainly did not land.
_NO_LEADER = "etcdserver: no leader"


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


class AnswerLost(Unavailable):
    """A request that must not run twice was sent and its answer lost (or was ambiguous): it
    may or may not have been applied, and may even still be applied later by a member that
    holds it. Only the caller can settle that (``store.etcd`` fences and reads back)."""


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
        stream_probe: float = 5.0,
    ) -> None:
        if not endpoints:
            raise Invalid("no etcd endpoint given")
        ctx = (tls or TlsFiles()).context()
        scheme = "https" if ctx else "http"
        self.endpoints = [e if "://" in e else f"{scheme}://{e}" for e in endpoints]
        self.deadline = deadline
        self.connect_timeout = connect_timeout
        self.attempt_timeout = attempt_timeout
        self.stream_probe = stream_probe
        self.revision = 0
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
        answers within the deadline. ``idempotent=False``: never replayed once sent, and
        ``AnswerLost`` when sent and not answered."""
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
                # A short attempt: a member that forwarded the request to a leader that just
                # died (or that is stopped itself) never answers, and the next member will,
                # once a leader is elected.
                wait = min(left, self.attempt_timeout)
                try:
                    answer = await self._post(self.endpoints[i], path, body, wait, idempotent)
                except _TryElsewhere as e:
                    last = f"{self.endpoints[i]}: {e}"
                    all_refused = all_refused and e.refused
                    continue
                except AnswerLost:
                    self._skip(i)
                    raise
                self._current = i
                self.revision = max(self.revision, _header_revision(answer))
                return answer
            if all_refused:  # every member is down: say so now, not at the deadline
                raise Unavailable(f"cluster store unreachable ({last})")
            # Members are up but none could serve (electing a leader): go round again while
            # the deadline allows.
            await asyncio.sleep(min(0.05, max(0.0, end - loop.time())))

    def _skip(self, i: int) -> None:
        """Start the next call after member ``i``, which just failed us."""
        if self._current == i:
            self._current = (i + 1) % len(self.endpoints)

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
            raise AnswerLost(f"cluster store: no answer from {endpoint} ({e!r})") from e
        try:
            return _decode(raw, resp.status, endpoint)
        except _TryElsewhere as e:
            if idempotent or _NO_LEADER in str(e):  # refused before anything was proposed
                raise
            raise AnswerLost(f"cluster store: {endpoint} answered {e}") from e

    async def stream(
        self, path: str, body: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The messages of a streaming call (a watch) from the first endpoint that takes it.
        Ends with ``Unavailable`` when the stream breaks or its member stops answering; the
        caller resumes."""
        last = "no endpoint tried"
        for i in self._order():
            endpoint = self.endpoints[i]
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout,
                                            sock_read=None)
            try:
                resp = await asyncio.wait_for(
                    self._http().post(endpoint + path, json=body, timeout=timeout),
                    self.attempt_timeout + self.connect_timeout)
            except (aiohttp.ClientError, TimeoutError) as e:
                last = f"{endpoint}: {e!r}"
                self._skip(i)
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
                    async for line in self._lines(resp, endpoint):
                        if line.strip():
                            message = _decode_streamed(line, endpoint)
                            self.revision = max(self.revision, _header_revision(message))
                            yield message
                except (aiohttp.ClientError, TimeoutError, _TryElsewhere) as e:
                    self._skip(i)
                    raise Unavailable(f"cluster store: watch stream from {endpoint} broke "
                                      f"({e})") from e
            raise Unavailable(f"cluster store: {endpoint} closed the watch stream")
        raise Unavailable(f"cluster store unreachable ({last})")

    async def _lines(self, resp: aiohttp.ClientResponse, endpoint: str) -> AsyncIterator[bytes]:
        """The stream's lines; after ``stream_probe`` quiet seconds the member is asked a
        linearizable read (a quiet watch is normal, a member that cannot answer it is not).

        The pending read is never cancelled while the member is healthy: aiohttp drops a
        partly read line when ``readline`` is cancelled.
        """
        pending: asyncio.Future[bytes] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(resp.content.readline())
                done, _ = await asyncio.wait({pending}, timeout=self.stream_probe)
                if not done:
                    await self._probe(endpoint)
                    continue
                line = pending.result()
                pending = None
                if not line:
                    return
                yield line
        finally:
            if pending is not None and not pending.done():
                pending.cancel()

    async def _probe(self, endpoint: str) -> None:
        """``_TryElsewhere`` unless ``endpoint`` serves a linearizable read in time."""
        await self._post(endpoint, "/v3/kv/range", {"key": "AA==", "count_only": True},
                         self.attempt_timeout, True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _header_revision(answer: dict[str, Any]) -> int:
    try:
        return int(answer.get("header", {}).get("revision", 0))
    except (TypeError, ValueError):
        return 0


def _not_sent(e: BaseException) -> bool:
    """aiohttp failed writing the request (the pooled connection was already closed by the
    member), so etcd cannot have read, let alone applied, it. aiohttp has no type for this,
    only this message (client_reqrep.py)."""
    return isinstance(e, aiohttp.ClientOSError) and "Can not write request" in str(e)


def _decode_streamed(raw: bytes, endpoint: str) -> dict[str, Any]:
    """A message of a watch stream. The gateway ends a stream whose member restarts with a
    CANCELED error ("grpc: the client connection is closing"): the stream broke, the watch
    resumes from its revision (seen once in a clean-clone CI run: the watch raised instead)."""
    try:
        return _decode(raw, 200, endpoint)
    except EtcdError as e:
        if e.code == _GRPC_CANCELED:
            raise _TryElsewhere(str(e)) from e
        raise


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

