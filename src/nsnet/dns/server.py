"""The embedded resolver: one asyncio server for the 127.0.0.11 sockets of every sandbox.

docs/architecture.md rule 6 puts a resolver in each sandbox but rule 1 forbids the loop from
entering namespaces, so the engine opens a UDP and a TCP socket inside each sandbox (bound to
127.0.0.11:<random port>, port 53 DNATed to it) and hands them here. A socket keeps the namespace
it was created in, so serving it from the daemon's namespace is enough; the sandbox id travels with
the socket and scopes every lookup.

This module only moves bytes: local names are answered from ``Records`` through the byte-level
fast path in ``wire`` (``slowpath`` reads the odd message with dnspython), everything else is
handed to ``forward.Forwarder`` under a per-sandbox cap on forwards in flight, and ``metrics``
counts. The hot path (``_ClientUDP.datagram_received`` -> ``_handle``) answers before the
callback returns, with no task, no await and no dnspython.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from collections.abc import Callable

from nsnet.dns import wire
from nsnet.dns.forward import MAX_UPSTREAM_TCP, MAX_UPSTREAMS, Forwarder, Upstream, parse_upstream
from nsnet.dns.metrics import UPSTREAM_BUCKETS, ResolverMetrics
from nsnet.dns.records import HIT, NODATA, Records
from nsnet.dns.sandbox import Reply, ServedSandbox, TCPReply, UDPReply
from nsnet.dns.slowpath import slow_parse
from nsnet.dns.upstream import UDPUpstreams
from nsnet.errors import Conflict, Invalid, NotFound

# The names callers found here before the forwarder and the metrics had modules of their own.
__all__ = [
    "MAX_CONCURRENT_FORWARDS",
    "MAX_TCP_CONNECTIONS",
    "MAX_UPSTREAMS",
    "MAX_UPSTREAM_TCP",
    "UNSET",
    "UPSTREAM_BUCKETS",
    "DNSServer",
    "parse_upstream",
]

MAX_CONCURRENT_FORWARDS = 1024  # Docker's maxConcurrent, per sandbox
MAX_TCP_CONNECTIONS = 128  # per sandbox; each one holds a file descriptor of the daemon
_LEN = struct.Struct(">H")


class _Unset(enum.Enum):
    UNSET = 0


UNSET = _Unset.UNSET


class _ClientUDP(asyncio.DatagramProtocol):
    """Serves one sandbox's UDP socket. Local answers are sent before the callback returns."""

    def __init__(self, server: DNSServer, sb: ServedSandbox) -> None:
        self._server = server
        self._sb = sb
        self._transport: asyncio.DatagramTransport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server = self._server
        try:
            r = server._handle(self._sb, data, False)
            if r is None:
                return
            transport = self._transport
            if transport is None:
                return
            if type(r) is bytes:
                transport.sendto(r, addr)
                return
            server._forward_later(self._sb, data, r, False, UDPReply(transport, addr))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 -- a bug must cost one query, not the sandbox's socket
            server.stats.internal_error()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors about a client that went away: nothing to do.
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.lost.done():
            self.lost.set_result(None)


class DNSServer:
    """Serves every sandbox's resolver sockets from the daemon's event loop."""

    def __init__(
        self,
        records: Records,
        host_upstreams: Callable[[], list[str]],
        loop: asyncio.AbstractEventLoop | None = None,
        upstream_timeout: float = 4.0,
        *,
        tcp_idle_timeout: float = 10.0,
        max_concurrent_forwards: int = MAX_CONCURRENT_FORWARDS,
        host_upstreams_ttl: float = 1.0,
        udp_upstreams: UDPUpstreams | None = None,
    ) -> None:
        self._records = records
        self._loop = loop
        self._tcp_idle = tcp_idle_timeout
        self._max_forwards = max_concurrent_forwards
        self._sandboxes: dict[str, ServedSandbox] = {}
        self._lookup = records.lookup
        self.stats = ResolverMetrics()
        # The same list object: the hot path bumps it without going through ``stats``.
        self._rcodes = self.stats.rcodes
        self._forwarder = Forwarder(
            host_upstreams,
            self.stats,
            timeout=upstream_timeout,
            host_upstreams_ttl=host_upstreams_ttl,
            udp_upstreams=udp_upstreams,
        )

    @property
    def records(self) -> Records:
        return self._records

    # ---- sandbox lifecycle ---------------------------------------------------------------

    async def add_sandbox(
        self,
        sandbox_id: str,
        udp: socket.socket,
        tcp: socket.socket,
        *,
        dns_servers: list[str] | None = None,
        forward: bool = True,
    ) -> None:
        """Takes ownership of both sockets: they are closed by remove_sandbox (or on failure)."""
        if sandbox_id in self._sandboxes:
            raise Conflict(f"the resolver already serves sandbox {sandbox_id}")
        if udp.type != socket.SOCK_DGRAM or tcp.type != socket.SOCK_STREAM:
            raise Invalid("the resolver needs a UDP socket and a TCP socket")
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        sb = ServedSandbox(sandbox_id, udp, tcp, dns_servers, forward)
        # Reserve the id before the first await so a concurrent add of the same id conflicts.
        self._sandboxes[sandbox_id] = sb
        try:
            udp.setblocking(False)
            tcp.setblocking(False)
            if not tcp.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                tcp.listen(128)
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _ClientUDP(self, sb), sock=udp
            )
            sb.udp_transport = transport
            sb.udp_lost = protocol.lost

            async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    await self._serve_tcp(sb, reader, writer)
                except asyncio.CancelledError:
                    # Python 3.11's StreamReaderProtocol calls task.exception() on the finished
                    # handler and logs the CancelledError as an error; the connection is already
                    # closed by _serve_tcp, so end quietly.
                    return

            sb.tcp_server = await asyncio.start_server(on_client, sock=tcp)
        except BaseException:
            if self._sandboxes.get(sandbox_id) is sb:
                del self._sandboxes[sandbox_id]
            await self._teardown(sb)
            raise
        if sb.closed:
            # remove_sandbox ran while we were setting up: finish its job on what we made.
            await self._teardown(sb)

    def update_sandbox(
        self,
        sandbox_id: str,
        *,
        dns_servers: list[str] | _Unset | None = UNSET,
        forward: bool | _Unset = UNSET,
    ) -> None:
        """Changes take effect for the next query; in-flight forwards keep their upstreams."""
        sb = self._sandboxes.get(sandbox_id)
        if sb is None:
            raise NotFound(f"the resolver does not serve sandbox {sandbox_id}")
        if not isinstance(dns_servers, _Unset):
            sb.dns_servers = tuple(dns_servers or ())
        if not isinstance(forward, _Unset):
            sb.forward = forward

    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Idempotent. Stops serving, cancels the sandbox's forwards, closes its sockets."""
        sb = self._sandboxes.pop(sandbox_id, None)
        if sb is not None:
            await self._teardown(sb)

    async def close(self) -> None:
        for sandbox_id in list(self._sandboxes):
            await self.remove_sandbox(sandbox_id)
        self._forwarder.close()

    def sandbox_ids(self) -> list[str]:
        return list(self._sandboxes)

    async def _teardown(self, sb: ServedSandbox) -> None:
        sb.closed = True
        if sb.tcp_server is not None:
            sb.tcp_server.close()
        if sb.udp_transport is not None:
            sb.udp_transport.close()
        pending = list(sb.tasks) + list(sb.conns)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        if sb.udp_lost is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(sb.udp_lost), 1.0)
        if sb.tcp_server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(sb.tcp_server.wait_closed(), 1.0)
        # Transports close the sockets they wrap (leaving fileno() == -1); this covers a failure
        # before they were wrapped.
        for s in (sb.udp, sb.tcp):
            with contextlib.suppress(OSError):
                s.close()

    # ---- query handling ------------------------------------------------------------------

    def _handle(self, sb: ServedSandbox, data: bytes, tcp: bool) -> bytes | wire.Query | None:
        """Answers locally when it can; a Query back means "forward this"; None means drop."""
        self.stats.queries += 1
        q = wire.parse_query(data)
        if q is None:
            slow = slow_parse(data)
            if slow is None:
                self.stats.dropped += 1
                return None
            if type(slow) is bytes:
                self._rcodes[slow[3] & 0xF] += 1
                return slow
            q = slow  # type: ignore[assignment]
        qid, flags, qname, qtype, qclass, question, edns = q  # type: ignore[misc]
        if qclass == wire.CLASS_IN:
            ans = self._lookup(sb.id, qname, qtype)
            kind = ans.kind
            if kind == HIT:
                limit = wire.TCP_MAX if tcp else (wire.UDP_MIN if edns is None else edns)
                if ans.ptr is None:
                    resp = wire.build_address_response(
                        qid, flags, question, qtype, ans.packed, edns, limit
                    )
                else:
                    resp = wire.build_ptr_response(qid, flags, question, ans.ptr, edns, limit)
                self._rcodes[0] += 1
                return resp
            if kind == NODATA:
                self._rcodes[0] += 1
                return wire.build_empty(qid, flags, question, wire.RCODE_NOERROR, edns)
        return q

    def _forward_later(
        self, sb: ServedSandbox, data: bytes, q: wire.Query, tcp: bool, reply: Reply
    ) -> None:
        qid, flags, _qname, _qtype, _qclass, question, edns = q
        upstreams: list[Upstream] = []
        # forward=False (internal networks) never leaves: even a container's own --dns servers
        # would be reached from the daemon's namespace, a way out of the isolation.
        if sb.forward and not sb.closed:
            upstreams = self._forwarder.upstreams_for(sb.dns_servers)
        if not upstreams:
            self._send(reply, wire.build_servfail(qid, flags, question, edns))
            return
        if sb.inflight >= self._max_forwards:
            self._send(reply, wire.build_refused(qid, flags, question, edns))
            return
        loop = self._loop or asyncio.get_running_loop()
        sb.inflight += 1
        self.stats.forwarded += 1
        task = loop.create_task(self._forward(sb, data, q, tcp, upstreams, reply))
        sb.tasks.add(task)
        task.add_done_callback(sb.tasks.discard)

    def _send(self, reply: Reply, msg: bytes) -> None:
        self._rcodes[msg[3] & 0xF] += 1
        reply(msg)

    async def _forward(
        self,
        sb: ServedSandbox,
        data: bytes,
        q: wire.Query,
        tcp: bool,
        upstreams: list[Upstream],
        reply: Reply,
    ) -> None:
        qid, flags, _qname, _qtype, _qclass, question, edns = q
        limit = wire.TCP_MAX if tcp else wire.udp_limit(edns)
        try:
            resp = await self._forwarder.ask(upstreams, data, question, tcp, limit)
            if resp is None:
                resp = wire.build_servfail(qid, flags, question, edns)
            self._send(reply, resp)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 -- the client still gets an answer (SERVFAIL)
            self.stats.internal_error()
            with contextlib.suppress(Exception):
                self._send(reply, wire.build_servfail(qid, flags, question, edns))
        finally:
            sb.inflight -= 1

    async def _serve_tcp(
        self, sb: ServedSandbox, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if sb.closed or len(sb.conns) >= MAX_TCP_CONNECTIONS or task is None:
            writer.close()
            return
        sb.conns.add(task)
        reply = TCPReply(writer)
        try:
            while not sb.closed:
                try:
                    async with asyncio.timeout(self._tcp_idle):
                        (length,) = _LEN.unpack(await reader.readexactly(2))
                        msg = await reader.readexactly(length)
                except (TimeoutError, EOFError, OSError):
                    break
                self.stats.queries_tcp += 1
                try:
                    r = self._handle(sb, msg, True)
                    if r is None:
                        continue
                    if type(r) is bytes:
                        reply(r)
                    else:
                        self._forward_later(sb, msg, r, True, reply)  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 -- drop this connection, keep serving
                    self.stats.internal_error()
                    break
        finally:
            sb.conns.discard(task)
            writer.close()

    # ---- metrics -------------------------------------------------------------------------

    def _inflight(self) -> int:
        return sum(sb.inflight for sb in self._sandboxes.values())

    def metrics(self) -> dict[str, int]:
        """Plain counters, for tests and the daemon's own summaries."""
        return self.stats.as_dict(
            self._inflight(), len(self._sandboxes), self._forwarder.pool_stats()
        )

    def metrics_text(self) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        sockets = self._forwarder.pool_stats()["upstream_sockets"]
        return self.stats.text(self._inflight(), len(self._sandboxes), sockets)
