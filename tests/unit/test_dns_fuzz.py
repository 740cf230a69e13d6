"""Hostile input never escapes the datagram handler, and every reply is well formed.

hypothesis is not installed; a seeded ``random`` makes the corpus reproducible.
"""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

import dns.message

from nsnet.dns import DNSServer, Records
from nsnet.dns import server as server_mod

SEED = 20240611
COUNT = 20_000


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return False


def records() -> Records:
    r = Records()
    r.set_network_name("n1", "net")
    r.set_endpoint("e1", "n1", "sb", ["web", "www"], "10.0.0.2", "fd00::2")
    r.set_endpoint("e2", "n1", "sb2", ["db", "www"], "10.0.0.3", None)
    return r


NAMES = ["web.", "WeB.", "www.net.", "db.", "example.com.", "2.0.0.10.in-addr.arpa.", "."]
TYPES = ["A", "AAAA", "PTR", "MX", "TXT", "ANY", "SRV", "NS"]


def valid_query(rng: random.Random) -> bytes:
    kw: dict[str, Any] = {}
    if rng.random() < 0.5:
        kw = {"use_edns": 0, "payload": rng.choice([512, 1232, 4096, 100])}
    q = dns.message.make_query(rng.choice(NAMES), rng.choice(TYPES), **kw)
    return q.to_wire()


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(9)
    if kind == 0 and b:  # flip bytes
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:  # truncate
        b = b[: rng.randrange(len(b) + 1)]
    elif kind == 2:  # append junk
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    elif kind == 3 and len(b) >= 12:  # header counts
        struct.pack_into(">HHHH", b, 4, *(rng.choice([0, 1, 2, 0xFFFF]) for _ in range(4)))
    elif kind == 4 and len(b) >= 12:  # compression pointer loop in the question
        b = b[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    elif kind == 5 and len(b) >= 12:  # pointer chain bouncing between two offsets
        b = b[:12] + b"\x01a\xc0\x10\xc0\x0c" + b"\x00\x01\x00\x01"
    elif kind == 6 and len(b) >= 12:  # a name longer than 255 bytes
        b = b[:12] + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01"
    elif kind == 7 and len(b) >= 4:  # opcode / flag bits
        b[2] = rng.randrange(256)
        b[3] = rng.randrange(256)
    elif kind == 8 and len(b) >= 12:  # label length beyond the end
        b = b[:12] + bytes([rng.randrange(64, 256)]) + b"abc"
    return bytes(b)


def corpus(rng: random.Random) -> list[bytes]:
    out: list[bytes] = []
    for i in range(COUNT):
        r = i % 4
        if r == 0:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80))))
        elif r == 1:
            out.append(valid_query(rng))
        else:
            data = valid_query(rng)
            for _ in range(rng.randint(1, 3)):
                data = mutate(rng, data)
            out.append(data)
    return out


async def _run(packets: list[bytes]) -> tuple[DNSServer, FakeTransport, list[bytes]]:
    server = DNSServer(records(), lambda: ["127.0.0.1:9"])

    async def no_network(sb: Any, data: bytes, q: Any, tcp: bool, ups: Any, reply: Any) -> None:
        # stands in for the upstream exchange; the decision to forward is what is exercised
        sb.inflight -= 1
        reply(server_mod.wire.build_servfail(q[0], q[1], q[5], q[6]))

    server._forward = no_network  # type: ignore[method-assign]
    sb = server_mod._Sandbox("sb", None, None, None, True)  # type: ignore[arg-type]
    proto = server_mod._ClientUDP(server, sb)
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    tcp_replies: list[bytes] = []
    for i, data in enumerate(packets):
        proto.datagram_received(data, ("127.0.0.1", 40000 + (i % 1000)))
        if i % 10 == 0:  # the TCP path shares _handle with a different size limit
            r = server._handle(sb, data, True)
            if isinstance(r, bytes):
                tcp_replies.append(r)
        if i % 500 == 0:
            await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    return server, transport, tcp_replies


def test_fuzz_handler_never_raises_and_replies_are_valid() -> None:
    rng = random.Random(SEED)
    packets = corpus(rng)
    server, transport, tcp_replies = asyncio.run(_run(packets))
    m = server.metrics()
    assert m["internal_errors"] == 0
    assert m["queries"] == COUNT + len(range(0, COUNT, 10))
    assert len(transport.sent) > COUNT // 2  # most packets get some answer
    by_id: dict[int, int] = {}
    for data, _addr in transport.sent:
        assert len(data) >= 12
        assert data[2] & 0x80  # QR
        msg = dns.message.from_wire(data)  # every reply is parseable
        by_id[msg.id] = by_id.get(msg.id, 0) + 1
        if msg.flags & 0x0200 == 0 and msg.rcode() == 0 and msg.answer:
            assert all(rrset.ttl == 600 for rrset in msg.answer)
    for data in tcp_replies:
        dns.message.from_wire(data)


def test_fuzz_replies_carry_the_query_id() -> None:
    rng = random.Random(SEED + 1)
    packets = [mutate(rng, valid_query(rng)) for _ in range(2000)]
    server = DNSServer(records(), lambda: [])

    async def go() -> list[tuple[bytes, bytes]]:
        sb = server_mod._Sandbox("sb", None, None, None, False)  # type: ignore[arg-type]
        pairs = []
        for data in packets:
            r = server._handle(sb, data, False)
            if isinstance(r, bytes):
                pairs.append((data, r))
        return pairs

    pairs = asyncio.run(go())
    assert pairs
    for query, reply in pairs:
        assert reply[:2] == query[:2]


def test_responses_are_dropped_not_answered() -> None:
    q = dns.message.make_query("web.", "A")
    resp = dns.message.make_response(q).to_wire()
    server = DNSServer(records(), lambda: [])
    sb = server_mod._Sandbox("sb", None, None, None, False)  # type: ignore[arg-type]
    assert server._handle(sb, resp, False) is None
    assert server._handle(sb, b"", False) is None
    assert server._handle(sb, b"\x12", False) is None
    # two bytes carry an id: FORMERR
    r = server._handle(sb, b"\x12\x34", False)
    assert isinstance(r, bytes) and r[:2] == b"\x12\x34" and r[3] & 0xF == 1


def test_slow_path_answers_what_the_fast_path_declines() -> None:
    data = dns.message.make_query("web.", "A").to_wire()
    # EDNS version 1 is not the common shape: dnspython reads it and we answer BADVERS
    v1 = dns.message.make_query("web.", "A", use_edns=1).to_wire()
    server = DNSServer(records(), lambda: [])
    sb = server_mod._Sandbox("sb", None, None, None, False)  # type: ignore[arg-type]
    r = server._handle(sb, v1, False)
    assert isinstance(r, bytes)
    msg = dns.message.from_wire(r)
    assert msg.rcode() == 16  # BADVERS
    # the fast path and the slow path agree on ordinary queries
    slow = server_mod._slow_parse(data)
    fast = server_mod.wire.parse_query(data)
    assert slow == fast
    edns = dns.message.make_query("WeB.", "AAAA", use_edns=0, payload=1400).to_wire()
    assert server_mod._slow_parse(edns) == server_mod.wire.parse_query(edns)
    # trailing junk: dnspython rejects it -> FORMERR
    r = server._handle(sb, data + b"junk", False)
    assert isinstance(r, bytes) and r[3] & 0xF == 1
    # NOTIFY opcode -> NOTIMP
    n = bytearray(data)
    n[2] = (n[2] & 0x87) | (4 << 3)
    r = server._handle(sb, bytes(n), False)
    assert isinstance(r, bytes) and r[3] & 0xF == 4
    # a label holding a dot byte is legal DNS; it cannot be a local name, so it is forwarded
    odd = data[:12] + b"\x03w.b\x00\x00\x01\x00\x01"
    r = server._handle(sb, odd, False)
    assert isinstance(r, tuple) and r[2] == "w\\.b"
