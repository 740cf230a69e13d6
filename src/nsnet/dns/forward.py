"""Forwarding: the questions no local record answers go to up to three upstream servers.

Sockets are made here, that is in the daemon's own namespace (so a host upstream such as
systemd-resolved's 127.0.0.53 works, as in Docker), never in the sandbox. UDP exchanges share
``upstream.UDPUpstreams``' small pool of connected sockets; TCP ones (a client that asked over
TCP, or a truncated UDP answer) take one of ``MAX_UPSTREAM_TCP`` slots, so no container can
make the daemon hold descriptors without bound. Upstreams are tried in order; a timeout, an
error, a busy pool, SERVFAIL or REFUSED moves on to the next (counted by reason), and when none
answers the caller replies SERVFAIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Final

from nsnet.dns import wire
from nsnet.dns.metrics import ResolverMetrics
from nsnet.dns.upstream import PoolFull, UDPUpstreams
from nsnet.nameservers import parse_nameserver

log = logging.getLogger("nsnet.dns")

MAX_UPSTREAMS: Final = 3  # Docker's maxExtDNS
MAX_UPSTREAM_TCP: Final = 64  # TCP connections to upstreams at once, over all sandboxes
_LEN = struct.Struct(">H")

Upstream = tuple[str, int]


@lru_cache(maxsize=256)
def parse_upstream(spec: str) -> Upstream | None:
    """Accepts "ip", "ip:port", "[v6]:port" or a bare IPv6 address; None if unusable."""
    return parse_nameserver(spec)


def upstream_list(specs: tuple[str, ...]) -> list[Upstream]:
    """The first three distinct usable upstreams, in the order given (what a container's
    ``--dns`` or the host's resolv.conf lists)."""
    out: list[Upstream] = []
    for spec in specs:
        up = parse_upstream(spec)
        if up is not None and up not in out:
            out.append(up)
        if len(out) == MAX_UPSTREAMS:
            break
    return out


def is_reply_to(msg: bytes, query: bytes, question: bytes) -> bool:
    """Accepts only the reply to this query.

    Checking the echoed question as well as the id shuts out spoofed replies that guessed the
    (client-chosen, so not secret) id; the socket's random source port does the rest.
    """
    if len(msg) < 12 or msg[:2] != query[:2] or not msg[2] & 0x80:
        return False
    if msg[4:6] == b"\x00\x01" and question:
        return msg[12 : 12 + len(question)].lower() == question.lower()
    return True


class Forwarder:
    """Asks upstream servers on behalf of every sandbox; one per ``DNSServer``."""

    def __init__(
        self,
        host_upstreams: Callable[[], list[str]],
        metrics: ResolverMetrics,
        *,
        timeout: float,
        host_upstreams_ttl: float,
        udp_upstreams: UDPUpstreams | None = None,
    ) -> None:
        self._host_upstreams = host_upstreams
        # The caller typically reads resolv.conf in host_upstreams; once a second is plenty.
        self._host_ttl = host_upstreams_ttl
        self._host_cache: tuple[float, tuple[str, ...]] = (float("-inf"), ())
        self._metrics = metrics
        self._timeout = timeout
        self._udp = udp_upstreams or UDPUpstreams()
        self._tcp_slots: asyncio.Semaphore | None = None

    def upstreams_for(self, dns_servers: tuple[str, ...]) -> list[Upstream]:
        """A sandbox's own ``--dns`` servers, else the host's."""
        return upstream_list(dns_servers or self.host_specs())

    def host_specs(self) -> tuple[str, ...]:
        """The host's upstreams, read at most once per TTL; a failed read keeps the last good
        list, since a bad read must not fail queries."""
        now = time.monotonic()
        stamp, specs = self._host_cache
        if now - stamp >= self._host_ttl or not specs:
            try:
                specs = tuple(self._host_upstreams())
            except Exception:  # keep the last good list (see the docstring)
                log.warning("resolver: reading the host's upstream servers failed", exc_info=True)
            self._host_cache = (now, specs)
        return specs

    def pool_stats(self) -> dict[str, int]:
        return self._udp.stats()

    def close(self) -> None:
        self._udp.close()

    async def ask(
        self, upstreams: list[Upstream], data: bytes, question: bytes, tcp: bool, limit: int
    ) -> bytes | None:
        """The first usable answer from ``upstreams`` in order, or None when none gave one."""
        failures = self._metrics.failures
        for host, port in upstreams:
            start = time.monotonic()
            try:
                resp = await self._exchange(host, port, data, question, tcp, limit)
            except TimeoutError:
                failures["timeout"] += 1
                continue
            except PoolFull:
                failures["busy"] += 1
                continue
            except (OSError, EOFError):
                failures["error"] += 1
                continue
            self._metrics.observe(time.monotonic() - start)
            rcode = wire.rcode_of(resp)
            if rcode == wire.RCODE_SERVFAIL:
                failures["servfail"] += 1
                continue
            if rcode == wire.RCODE_REFUSED:
                failures["refused"] += 1
                continue
            return resp
        return None

    async def _exchange(
        self, host: str, port: int, data: bytes, question: bytes, tcp: bool, limit: int
    ) -> bytes:
        if tcp:
            return await self._exchange_tcp(host, port, data)
        resp = await self._exchange_udp(host, port, data, question)
        if wire.is_truncated(resp):
            full: bytes | None = None
            with contextlib.suppress(OSError, EOFError, TimeoutError):
                full = await self._exchange_tcp(host, port, data)
            # The client asked over UDP: the TCP answer only helps if it fits, otherwise the
            # client gets the TC answer and retries over TCP itself.
            if full is not None and len(full) <= limit:
                resp = full
        return resp

    async def _exchange_udp(self, host: str, port: int, data: bytes, question: bytes) -> bytes:
        async with asyncio.timeout(self._timeout):
            return await self._udp.exchange((host, port), data, question)

    async def _exchange_tcp(self, host: str, port: int, data: bytes) -> bytes:
        if self._tcp_slots is None:
            self._tcp_slots = asyncio.Semaphore(MAX_UPSTREAM_TCP)
        # The wait for a free slot counts against the upstream timeout, like a slow upstream.
        async with asyncio.timeout(self._timeout), self._tcp_slots:
            return await _tcp_query(host, port, data)


async def _tcp_query(host: str, port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    writer: asyncio.StreamWriter | None = None
    try:
        await loop.sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(_LEN.pack(len(data)) + data)
        while True:
            (length,) = _LEN.unpack(await reader.readexactly(2))
            msg = await reader.readexactly(length)
            if is_reply_to(msg, data, b""):
                return msg
    finally:
        if writer is not None:
            writer.close()
        else:
            sock.close()
