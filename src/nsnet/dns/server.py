"""The embedded resolver: one asyncio server for the 127.0.0.11 sockets of every sandbox.

DESIGN.md rule 6 puts a resolver in each sandbox but rule 1 forbids the loop from entering
namespaces, so the engine opens a UDP and a TCP socket inside each sandbox (bound to
127.0.0.11:<random port>, port 53 DNATed to it) and hands them here. A socket keeps the namespace
it was created in, so serving it from the daemon's namespace is enough; the sandbox id travels with
the socket and scopes every lookup.

Local names are answered from ``Records`` through the byte-level fast path in ``wire``. Everything
else is forwarded (under a query id of our own) to up to three upstreams over sockets made here,
that is from the daemon's own namespace (so a host upstream like 127.0.0.53 works, as in Docker).
UDP forwards share a small pool of sockets per upstream (``upstream.UDPUpstreams``) and TCP ones
a bounded number of connections, so no container can make the daemon hold descriptors without
bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import struct
import time
from collections.abc import Callable
from functools import lru_cache

import dns.exception
import dns.message
import dns.name

from nsnet.dns import wire
from nsnet.dns.records import HIT, NODATA, Records
from nsnet.dns.upstream import PoolFull, UDPUpstreams
from nsnet.errors import Conflict, Invalid, NotFound
from nsnet.nameservers import parse_nameserver

log = logging.getLogger("nsnet.dns")

MAX_UPSTREAMS = 3  # Docker's maxExtDNS
MAX_CONCURRENT_FORWARDS = 1024  # Docker's maxConcurrent, per sandbox
MAX_TCP_CONNECTIONS = 128  # per sandbox; each one holds a file descriptor of the daemon
MAX_UPSTREAM_TCP = 64  # TCP connections to upstreams at once, over all sandboxes
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_RCODE_NAMES = (
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "DSOTYPENI", "RCODE12", "RCODE13", "RCODE14", "RCODE15",
)  # fmt: skip
_FAILURE_REASONS = ("timeout", "error", "servfail", "refused", "busy")
_LEN = struct.Struct(">H")


class _Unset(enum.Enum):
    UNSET = 0


UNSET = _Unset.UNSET

Upstream = tuple[str, int]
Reply = Callable[[bytes], None]


@lru_cache(maxsize=256)
def parse_upstream(spec: str) -> Upstream | None:
    """Accepts "ip", "ip:port", "[v6]:port" or a bare IPv6 address; None if unusable."""
    return parse_nameserver(spec)


def _upstream_list(specs: tuple[str, ...]) -> list[Upstream]:
    out: list[Upstream] = []
    for spec in specs:
        up = parse_upstream(spec)
        if up is not None and up not in out:
            out.append(up)
        if len(out) == MAX_UPSTREAMS:
            break
    return out


class _Sandbox:
    __slots__ = (
        "closed",
        "conns",
        "dns_servers",
        "forward",
        "id",
        "inflight",
        "tasks",
        "tcp",
        "tcp_server",
        "udp",
        "udp_protocol",
        "udp_transport",
    )

    def __init__(
        self,
        sandbox_id: str,
        udp: socket.socket,
        tcp: socket.socket,
        dns_servers: list[str] | None,
        forward: bool,
    ) -> None:
        self.id = sandbox_id
        self.udp = udp
        self.tcp = tcp
        self.dns_servers: tuple[str, ...] = tuple(dns_servers or ())
        self.forward = forward
        self.inflight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.conns: set[asyncio.Task[None]] = set()
        self.udp_transport: asyncio.DatagramTransport | None = None
        self.udp_protocol: _ClientUDP | None = None
        self.tcp_server: asyncio.AbstractServer | None = None
        self.closed = False


class _ClientUDP(asyncio.DatagramProtocol):
    """Serves one sandbox's UDP socket. Local answers are sent before the callback returns."""

    def __init__(self, server: DNSServer, sb: _Sandbox) -> None:
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
            server._forward_later(self._sb, data, r, False, _UDPReply(transport, addr))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 -- a bug must cost one query, not the sandbox's socket
            server._internal_error()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors about a client that went away: nothing to do.
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.lost.done():
            self.lost.set_result(None)


class _UDPReply:
    __slots__ = ("addr", "transport")

    def __init__(self, transport: asyncio.DatagramTransport, addr: tuple[str, int]) -> None:
        self.transport = transport
        self.addr = addr

    def __call__(self, msg: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.sendto(msg, self.addr)


class _TCPReply:
    __slots__ = ("writer",)

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def __call__(self, msg: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(_LEN.pack(len(msg)) + msg)


def _is_reply_to(msg: bytes, query: bytes, question: bytes) -> bool:
    """Accepts only the reply to this query.

    Checking the echoed question as well as the id shuts out spoofed replies that guessed the
    (client-chosen, so not secret) id; the socket's random source port does the rest.
    """
    if len(msg) < 12 or msg[:2] != query[:2] or not msg[2] & 0x80:
        return False
    if msg[4:6] == b"\x00\x01" and question:
        return msg[12 : 12 + len(question)].lower() == question.lower()
    return True


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
        self._host_upstreams = host_upstreams
        # The caller typically reads resolv.conf in host_upstreams; once a second is plenty.
        self._host_ttl = host_upstreams_ttl
        self._host_cache: tuple[float, tuple[str, ...]] = (float("-inf"), ())
        self._loop = loop
        self._timeout = upstream_timeout
        self._tcp_idle = tcp_idle_timeout
        self._max_forwards = max_concurrent_forwards
        self._sandboxes: dict[str, _Sandbox] = {}
        self._lookup = records.lookup
        self._udp_upstreams = udp_upstreams or UDPUpstreams()
        self._tcp_slots: asyncio.Semaphore | None = None
        # metrics
        self._queries = 0
        self._queries_tcp = 0
        self._dropped = 0
        self._forwarded = 0
        self._internal_errors = 0
        self._rcodes = [0] * 16
        self._failures = dict.fromkeys(_FAILURE_REASONS, 0)
        self._hist = [0] * (len(UPSTREAM_BUCKETS) + 1)
        self._hist_sum = 0.0
        self._last_error_log = 0.0

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
        sb = _Sandbox(sandbox_id, udp, tcp, dns_servers, forward)
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
            sb.udp_protocol = protocol

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
        self._udp_upstreams.close()

    def sandbox_ids(self) -> list[str]:
        return list(self._sandboxes)

    async def _teardown(self, sb: _Sandbox) -> None:
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
        if sb.udp_protocol is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(sb.udp_protocol.lost), 1.0)
        if sb.tcp_server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(sb.tcp_server.wait_closed(), 1.0)
        # Transports close the sockets they wrap (leaving fileno() == -1); this covers a failure
        # before they were wrapped.
        for s in (sb.udp, sb.tcp):
            with contextlib.suppress(OSError):
                s.close()

    # ---- query handling ------------------------------------------------------------------

    def _handle(self, sb: _Sandbox, data: bytes, tcp: bool) -> bytes | wire.Query | None:
        """Answers locally when it can; a Query back means "forward this"; None means drop."""
        self._queries += 1
        q = wire.parse_query(data)
        if q is None:
            slow = _slow_parse(data)
            if slow is None:
                self._dropped += 1
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
        self, sb: _Sandbox, data: bytes, q: wire.Query, tcp: bool, reply: Reply
    ) -> None:
        qid, flags, _qname, _qtype, _qclass, question, edns = q
        upstreams: list[Upstream] = []
        # forward=False (internal networks) never leaves: even a container's own --dns servers
        # would be reached from the daemon's namespace, a way out of the isolation.
        if sb.forward and not sb.closed:
            specs = sb.dns_servers or self._host_specs()
            upstreams = _upstream_list(specs)
        if not upstreams:
            self._send(reply, wire.build_servfail(qid, flags, question, edns))
            return
        if sb.inflight >= self._max_forwards:
            self._send(reply, wire.build_refused(qid, flags, question, edns))
            return
        loop = self._loop or asyncio.get_running_loop()
        sb.inflight += 1
        self._forwarded += 1
        task = loop.create_task(self._forward(sb, data, q, tcp, upstreams, reply))
        sb.tasks.add(task)
        task.add_done_callback(sb.tasks.discard)

    def _host_specs(self) -> tuple[str, ...]:
        now = time.monotonic()
        stamp, specs = self._host_cache
        if now - stamp >= self._host_ttl or not specs:
            try:
                specs = tuple(self._host_upstreams())
            except Exception:  # keep the last good list; a bad read must not fail queries
                log.warning("resolver: reading the host's upstream servers failed", exc_info=True)
            self._host_cache = (now, specs)
        return specs

    def _send(self, reply: Reply, msg: bytes) -> None:
        self._rcodes[msg[3] & 0xF] += 1
        reply(msg)

    async def _forward(
        self,
        sb: _Sandbox,
        data: bytes,
        q: wire.Query,
        tcp: bool,
        upstreams: list[Upstream],
        reply: Reply,
    ) -> None:
        qid, flags, _qname, _qtype, _qclass, question, edns = q
        limit = wire.TCP_MAX if tcp else wire.udp_limit(edns)
        try:
            resp = await self._ask_upstreams(upstreams, data, question, tcp, limit)
            if resp is None:
                resp = wire.build_servfail(qid, flags, question, edns)
            self._send(reply, resp)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 -- the client still gets an answer (SERVFAIL)
            self._internal_error()
            with contextlib.suppress(Exception):
                self._send(reply, wire.build_servfail(qid, flags, question, edns))
        finally:
            sb.inflight -= 1

    async def _ask_upstreams(
        self, upstreams: list[Upstream], data: bytes, question: bytes, tcp: bool, limit: int
    ) -> bytes | None:
        for host, port in upstreams:
            start = time.monotonic()
            try:
                if tcp:
                    resp = await self._exchange_tcp(host, port, data)
                else:
                    resp = await self._exchange_udp(host, port, data, question)
                    if wire.is_truncated(resp):
                        full: bytes | None = None
                        with contextlib.suppress(OSError, EOFError, TimeoutError):
                            full = await self._exchange_tcp(host, port, data)
                        # The client asked over UDP: the TCP answer only helps if it fits,
                        # otherwise the client gets the TC answer and retries over TCP itself.
                        if full is not None and len(full) <= limit:
                            resp = full
            except TimeoutError:
                self._failures["timeout"] += 1
                continue
            except PoolFull:
                self._failures["busy"] += 1
                continue
            except (OSError, EOFError):
                self._failures["error"] += 1
                continue
            self._observe(time.monotonic() - start)
            rcode = wire.rcode_of(resp)
            if rcode == wire.RCODE_SERVFAIL:
                self._failures["servfail"] += 1
                continue
            if rcode == wire.RCODE_REFUSED:
                self._failures["refused"] += 1
                continue
            return resp
        return None

    async def _exchange_udp(self, host: str, port: int, data: bytes, question: bytes) -> bytes:
        async with asyncio.timeout(self._timeout):
            return await self._udp_upstreams.exchange((host, port), data, question)

    async def _exchange_tcp(self, host: str, port: int, data: bytes) -> bytes:
        if self._tcp_slots is None:
            self._tcp_slots = asyncio.Semaphore(MAX_UPSTREAM_TCP)
        # The wait for a free slot counts against the upstream timeout, like a slow upstream.
        async with asyncio.timeout(self._timeout), self._tcp_slots:
            return await self._tcp_query(host, port, data)

    async def _tcp_query(self, host: str, port: int, data: bytes) -> bytes:
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
                if _is_reply_to(msg, data, b""):
                    return msg
        finally:
            if writer is not None:
                writer.close()
            else:
                sock.close()

    async def _serve_tcp(
        self, sb: _Sandbox, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if sb.closed or len(sb.conns) >= MAX_TCP_CONNECTIONS or task is None:
            writer.close()
            return
        sb.conns.add(task)
        reply = _TCPReply(writer)
        try:
            while not sb.closed:
                try:
                    async with asyncio.timeout(self._tcp_idle):
                        (length,) = _LEN.unpack(await reader.readexactly(2))
                        msg = await reader.readexactly(length)
                except (TimeoutError, EOFError, OSError):
                    break
                self._queries_tcp += 1
                try:
                    r = self._handle(sb, msg, True)
                    if r is None:
                        continue
                    if type(r) is bytes:
                        reply(r)
                    else:
                        self._forward_later(sb, msg, r, True, reply)  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 -- drop this connection, keep serving
                    self._internal_error()
                    break
        finally:
            sb.conns.discard(task)
            writer.close()

    # ---- metrics -------------------------------------------------------------------------

    def _observe(self, seconds: float) -> None:
        self._hist_sum += seconds
        for i, le in enumerate(UPSTREAM_BUCKETS):
            if seconds <= le:
                self._hist[i] += 1
                return
        self._hist[-1] += 1

    def _internal_error(self) -> None:
        self._internal_errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 60.0:
            self._last_error_log = now
            log.exception("resolver: unexpected error while handling a query")

    def metrics(self) -> dict[str, int]:
        """Plain counters, for tests and the daemon's own summaries."""
        out = {
            "queries": self._queries,
            "queries_tcp": self._queries_tcp,
            "dropped": self._dropped,
            "forwarded": self._forwarded,
            "internal_errors": self._internal_errors,
            "inflight": sum(sb.inflight for sb in self._sandboxes.values()),
            "sandboxes": len(self._sandboxes),
            **self._udp_upstreams.stats(),
        }
        for code, count in enumerate(self._rcodes):
            if count:
                out["rcode_" + _RCODE_NAMES[code]] = count
        for reason, count in self._failures.items():
            out["upstream_" + reason] = count
        return out

    def metrics_text(self) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for suffix, value in samples:
                text = repr(value) if isinstance(value, float) else str(value)
                lines.append(f"{name}{suffix} {text}")

        metric(
            "nsnet_dns_queries_total", "counter",
            "DNS messages received by the embedded resolver (UDP and TCP).",
            [("", self._queries)],
        )  # fmt: skip
        metric(
            "nsnet_dns_tcp_queries_total", "counter",
            "DNS messages received over TCP.", [("", self._queries_tcp)],
        )  # fmt: skip
        metric(
            "nsnet_dns_responses_total", "counter", "Responses sent, by rcode.",
            [(f'{{rcode="{_RCODE_NAMES[c]}"}}', n) for c, n in enumerate(self._rcodes)
             if n or c in (0, 1, 2, 3, 5)],
        )  # fmt: skip
        metric(
            "nsnet_dns_dropped_total", "counter",
            "Messages dropped without a response (no readable header, or not a query).",
            [("", self._dropped)],
        )  # fmt: skip
        metric(
            "nsnet_dns_forwarded_total", "counter",
            "Queries forwarded to upstream servers.", [("", self._forwarded)],
        )  # fmt: skip
        metric(
            "nsnet_dns_upstream_failures_total", "counter",
            "Upstream attempts that failed over to the next server, by reason.",
            [(f'{{reason="{r}"}}', n) for r, n in self._failures.items()],
        )  # fmt: skip
        metric(
            "nsnet_dns_internal_errors_total", "counter",
            "Unexpected errors while handling a query (bugs).", [("", self._internal_errors)],
        )  # fmt: skip
        metric(
            "nsnet_dns_inflight_forwards", "gauge", "Forwarded queries awaiting an upstream.",
            [("", sum(sb.inflight for sb in self._sandboxes.values()))],
        )  # fmt: skip
        metric(
            "nsnet_dns_sandboxes", "gauge", "Sandboxes served.", [("", len(self._sandboxes))],
        )  # fmt: skip
        metric(
            "nsnet_dns_upstream_sockets", "gauge",
            "UDP sockets open to upstream servers (shared by all forwarded queries).",
            [("", self._udp_upstreams.stats()["upstream_sockets"])],
        )  # fmt: skip
        name = "nsnet_dns_upstream_seconds"
        lines.append(f"# HELP {name} Latency of upstream exchanges that returned a response.")
        lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for le, count in zip(UPSTREAM_BUCKETS, self._hist, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
        cumulative += self._hist[-1]
        lines.append(f'{name}_bucket{{le="+Inf"}} {cumulative}')
        lines.append(f"{name}_sum {self._hist_sum!r}")
        lines.append(f"{name}_count {cumulative}")
        return "\n".join(lines) + "\n"


def _slow_parse(data: bytes) -> wire.Query | bytes | None:
    """The general path: dnspython reads what the fast parser declined.

    Returns a Query, a finished error response, or None to drop the message (no id to answer,
    or it is itself a response: answering those could start a loop).
    """
    n = len(data)
    if n < 2:
        return None
    qid = (data[0] << 8) | data[1]
    flags = ((data[2] << 8) | data[3]) if n >= 4 else ((data[2] << 8) if n == 3 else 0)
    if flags & wire.FLAG_QR:
        return None
    if n < 12:
        return wire.build_formerr(qid, flags)
    if (flags >> 11) & 0xF != 0:
        return wire.build_notimp(qid, flags)
    try:
        msg = dns.message.from_wire(data)
    except Exception:  # noqa: BLE001 -- dnspython raises many kinds on hostile input: FORMERR
        return wire.build_formerr(qid, flags)
    if len(msg.question) != 1:
        return wire.build_formerr(qid, flags)
    rrset = msg.question[0]
    if msg.edns > 0:
        return _badvers(qid, flags, rrset.name, rrset.rdtype, rrset.rdclass)
    name = rrset.name
    try:
        question = _name_wire(name) + struct.pack(">HH", rrset.rdtype, rrset.rdclass)
    except (ValueError, dns.exception.DNSException):
        return wire.build_formerr(qid, flags)
    qname = "" if name == dns.name.root else name.to_text(omit_final_dot=True).lower()
    edns = max(wire.UDP_MIN, msg.payload) if msg.edns >= 0 else None
    return qid, flags, qname, int(rrset.rdtype), int(rrset.rdclass), question, edns  # type: ignore[return-value]


def _badvers(qid: int, flags: int, name: dns.name.Name, rdtype: int, rdclass: int) -> bytes:
    """RFC 6891: an unknown EDNS version gets BADVERS (extended rcode 16) with our version 0."""
    question = _name_wire(name) + struct.pack(">HH", rdtype, rdclass)
    hdr = struct.pack(
        ">HHHHHH",
        qid,
        wire.FLAG_QR | wire.FLAG_RA | (flags & (wire.FLAG_RD | wire.FLAG_CD)),
        1, 0, 0, 1,
    )  # fmt: skip
    opt = b"\x00" + struct.pack(">HHIH", wire.TYPE_OPT, wire.EDNS_PAYLOAD, 1 << 24, 0)
    return hdr + (question or b"") + opt


def _name_wire(name: dns.name.Name) -> bytes:
    """Uncompressed and case-preserving, so the echoed question matches what the client sent."""
    raw = name.to_wire()
    if raw is None:  # only when writing to a file, which we never do
        raise ValueError("name did not render")
    return raw
