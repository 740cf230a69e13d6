"""Forwarded queries share a few connected UDP sockets per upstream server.

One socket per forwarded query let a container that floods names its upstream never answers
hold 1,024 of the daemon's descriptors for the whole upstream timeout (and every sandbox could do
it). Here each upstream gets at most ``per_upstream`` connected sockets, opened on demand and
closed after ``idle`` seconds without a query; the queries on one socket are told apart by a
query id chosen here at random (the client's id is put back in the answer), and an answer is
accepted only on the socket the query left from, with a pending id, echoing the question
(case-insensitively). A socket is retired after ``retire_after`` queries so its source port
changes now and then, as a per-query socket's would. The pool holds at most ``max_pending``
queries and ``max_sockets`` sockets over all upstreams; past either, ``PoolFull`` and the caller
answers SERVFAIL, as aardvark-dns and Docker do when they are overloaded.

A connected UDP socket reports ICMP errors (port unreachable) to its next receive; they cannot be
tied to one query, so every query pending on that socket fails at once, which is the quick
failover the per-query sockets gave.
"""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass, field

Upstream = tuple[str, int]


class PoolFull(Exception):
    """Too many queries or sockets in flight: the query is not sent."""


@dataclass(eq=False)
class _Socket:
    sock: socket.socket
    upstream: Upstream
    pending: dict[int, tuple[asyncio.Future[bytes], bytes]] = field(default_factory=dict)
    uses: int = 0
    retired: bool = False
    idle_timer: asyncio.TimerHandle | None = None
    last_used: float = 0.0


class UDPUpstreams:
    """The daemon's sockets to its upstream servers; one per ``DNSServer``, used on its loop."""

    def __init__(
        self,
        *,
        per_upstream: int = 4,
        max_sockets: int = 256,
        max_pending: int = 4096,
        retire_after: int = 1000,
        idle: float = 10.0,
    ) -> None:
        self._per_upstream = per_upstream
        self._max_sockets = max_sockets
        self._max_pending = max_pending
        self._retire_after = retire_after
        self._idle = idle
        self._pools: dict[Upstream, list[_Socket]] = {}
        self._sockets: set[_Socket] = set()
        self._pending = 0
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def stats(self) -> dict[str, int]:
        return {"upstream_sockets": len(self._sockets), "upstream_pending": self._pending}

    async def exchange(self, upstream: Upstream, data: bytes, question: bytes) -> bytes:
        """Send ``data`` to ``upstream`` and wait for its answer (the caller bounds the wait).

        Raises ``PoolFull``, ``OSError`` (send failed, ICMP error) or whatever cancels the wait.
        """
        if self._pending >= self._max_pending:
            raise PoolFull("too many forwarded queries in flight")
        loop = self._loop = asyncio.get_running_loop()
        us = self._pick(loop, upstream)
        qid = random.getrandbits(16)
        while qid in us.pending:
            qid = random.getrandbits(16)
        fut: asyncio.Future[bytes] = loop.create_future()
        us.pending[qid] = (fut, question.lower())
        self._pending += 1
        us.uses += 1
        us.last_used = loop.time()
        if us.uses >= self._retire_after:
            self._retire(us)
        try:
            us.sock.send(qid.to_bytes(2, "big") + data[2:])
            msg = await fut
        finally:
            if us.pending.get(qid, (None,))[0] is fut:
                del us.pending[qid]
            self._pending -= 1
            if not us.pending:
                self._became_idle(loop, us)
        return data[:2] + msg[2:]

    def close(self) -> None:
        for us in list(self._sockets):
            self._close(us, ConnectionAbortedError("the resolver is shutting down"))

    # ---- sockets -------------------------------------------------------------------------

    def _pick(self, loop: asyncio.AbstractEventLoop, upstream: Upstream) -> _Socket:
        pool = self._pools.setdefault(upstream, [])
        if len(pool) < self._per_upstream and len(self._sockets) < self._max_sockets:
            return self._open(loop, upstream, pool)
        if not pool:
            del self._pools[upstream]
            raise PoolFull("too many upstream sockets")
        self._next += 1
        return pool[self._next % len(pool)]

    def _open(self, loop: asyncio.AbstractEventLoop, upstream: Upstream,
              pool: list[_Socket]) -> _Socket:
        host, port = upstream
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((host, port))  # a connected UDP socket drops datagrams from elsewhere
        except OSError:
            sock.close()
            if not pool:
                del self._pools[upstream]
            raise
        us = _Socket(sock, upstream)
        loop.add_reader(sock.fileno(), self._readable, us)
        pool.append(us)
        self._sockets.add(us)
        return us

    def _retire(self, us: _Socket) -> None:
        """No new queries on ``us``; it closes once its pending ones are done."""
        if us.retired:
            return
        us.retired = True
        pool = self._pools.get(us.upstream)
        if pool is not None and us in pool:
            pool.remove(us)
            if not pool:
                del self._pools[us.upstream]

    def _became_idle(self, loop: asyncio.AbstractEventLoop, us: _Socket) -> None:
        if us not in self._sockets:
            return
        if us.retired:
            self._close(us, None)
        elif us.idle_timer is None:
            us.idle_timer = loop.call_at(us.last_used + self._idle, self._idle_check, loop, us)

    def _idle_check(self, loop: asyncio.AbstractEventLoop, us: _Socket) -> None:
        us.idle_timer = None
        if us.pending or us not in self._sockets:
            return  # busy again: _became_idle re-arms the timer when it is not
        if loop.time() - us.last_used >= self._idle - 0.001:
            self._retire(us)
            self._close(us, None)
        else:
            us.idle_timer = loop.call_at(us.last_used + self._idle, self._idle_check, loop, us)

    def _close(self, us: _Socket, exc: BaseException | None) -> None:
        self._retire(us)
        self._sockets.discard(us)
        if us.idle_timer is not None:
            us.idle_timer.cancel()
            us.idle_timer = None
        if us.sock.fileno() >= 0:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(us.sock.fileno())
            us.sock.close()
        self._fail(us, exc or ConnectionAbortedError("upstream socket closed"))

    @staticmethod
    def _fail(us: _Socket, exc: BaseException) -> None:
        for fut, _ in us.pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def _readable(self, us: _Socket) -> None:
        while True:
            try:
                msg = us.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # An ICMP error (port unreachable...) for some query on this socket: all of them
                # went to the same upstream, so all fail over now rather than time out.
                self._fail(us, e)
                continue
            if len(msg) < 12 or not msg[2] & 0x80:
                continue
            entry = us.pending.get(int.from_bytes(msg[:2], "big"))
            if entry is None:
                continue  # late (timed out) or spoofed
            fut, question = entry
            # Checking the echoed question as well as the id shuts out spoofed answers that
            # guessed the id; an answer without a question (some FORMERRs) is taken on the id.
            if msg[4:6] == b"\x00\x01" and question and \
                    msg[12:12 + len(question)].lower() != question:
                continue
            if not fut.done():
                fut.set_result(msg)
