"""The resolver on real sockets: local answers over UDP and TCP, robustness, lifecycle.

No root and no namespaces: the sockets are bound to 127.0.0.1 random ports in the test process,
standing in for the 127.0.0.11 sockets the engine opens inside a sandbox. The server runs on its
own event loop thread (asyncio and uvloop both) and dnspython's blocking client drives it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from dns_server_support import LoopThread, bind_pair

from nsnet.dns import DNSServer, Records


class Env:
    def __init__(self, lt: LoopThread) -> None:
        self.lt = lt
        self.records = Records()
        self.server = DNSServer(
            self.records, lambda: [], loop=lt.loop, upstream_timeout=0.3, tcp_idle_timeout=0.5
        )
        self.sockets: dict[str, tuple[socket.socket, socket.socket]] = {}

    def add(self, sandbox: str, **kw: Any) -> int:
        udp, tcp, port = bind_pair()
        self.sockets[sandbox] = (udp, tcp)
        self.lt.run(self.server.add_sandbox(sandbox, udp, tcp, **kw))
        return port


@pytest.fixture(params=["asyncio", "uvloop"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    lt = LoopThread(request.param)
    e = Env(lt)

    def populate() -> None:
        r = e.records
        r.set_network_name("n1", "front")
        r.set_network_name("n2", "back")
        r.set_endpoint("e-web", "n1", "sb-web", ["web", "www"], "10.1.0.2", "fd00:1::2")
        r.set_endpoint("e-api", "n1", "sb-api", ["api", "svc"], "10.1.0.3", None)
        r.set_endpoint("e-api2", "n1", "sb-api2", ["api2", "svc"], "10.1.0.4", None)
        r.set_endpoint("e-db", "n2", "sb-db", ["db"], "10.2.0.2", None)

    lt.call(populate)
    try:
        yield e
    finally:
        lt.run(e.server.close())
        lt.stop()


def ask(
    port: int, name: str, rdtype: str = "A", tcp: bool = False, **kw: Any
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=2)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=2)


def addresses(resp: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in resp.answer for rd in rrset)


@pytest.mark.parametrize("tcp", [False, True])
def test_local_a_aaaa_ptr(env: Env, tcp: bool) -> None:
    port = env.add("sb-web", forward=False)
    r = ask(port, "web.", tcp=tcp)
    assert r.rcode() == dns.rcode.NOERROR and addresses(r) == ["10.1.0.2"]
    assert r.answer[0].ttl == 600 and r.flags & dns.flags.RA
    assert addresses(ask(port, "WWW.front.", "AAAA", tcp=tcp)) == ["fd00:1::2"]
    assert addresses(ask(port, "svc.", tcp=tcp)) == ["10.1.0.3", "10.1.0.4"]
    nodata = ask(port, "api.", "AAAA", tcp=tcp)
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    ptr = ask(port, "3.0.1.10.in-addr.arpa.", "PTR", tcp=tcp)
    assert str(ptr.answer[0][0].target) == "api.front."


def test_scoping_between_sandboxes(env: Env) -> None:
    web = env.add("sb-web", forward=False)
    db = env.add("sb-db", forward=False)
    assert addresses(ask(db, "db.")) == ["10.2.0.2"]
    # not on a shared network: not a local name, and forwarding is off
    assert ask(db, "web.").rcode() == dns.rcode.SERVFAIL
    assert ask(web, "db.").rcode() == dns.rcode.SERVFAIL
    # connect web to the back network: now they share one
    env.lt.call(
        lambda: env.records.set_endpoint("e-web-b", "n2", "sb-web", ["web"], "10.2.0.3", None)
    )
    assert addresses(ask(db, "web.")) == ["10.2.0.3"]
    assert addresses(ask(web, "db.back.")) == ["10.2.0.2"]


def test_several_queries_on_one_tcp_connection_and_idle_timeout(env: Env) -> None:
    port = env.add("sb-web", forward=False)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        for name in ("web.", "api.", "www.", "svc."):
            q = dns.message.make_query(name, "A")
            r = dns.query.tcp(q, "127.0.0.1", port=port, timeout=2, sock=s)
            assert r.rcode() == dns.rcode.NOERROR and r.answer
        # two pipelined queries in one write
        q1 = dns.message.make_query("web.", "A").to_wire()
        q2 = dns.message.make_query("api.", "A").to_wire()
        s.sendall(len(q1).to_bytes(2, "big") + q1 + len(q2).to_bytes(2, "big") + q2)
        got = set()
        for _ in range(2):
            n = int.from_bytes(_recv_exact(s, 2), "big")
            got.add(dns.message.from_wire(_recv_exact(s, n)).id)
        assert got == {int.from_bytes(q1[:2], "big"), int.from_bytes(q2[:2], "big")}
        # idle: the server hangs up after tcp_idle_timeout (0.5 s here)
        s.settimeout(3)
        start = time.monotonic()
        assert s.recv(10) == b""
        assert time.monotonic() - start < 2.5


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def test_truncation_over_udp_and_full_answer_over_tcp(env: Env) -> None:
    def many() -> None:
        for i in range(40):
            env.records.set_endpoint(f"e-m{i}", "n1", f"sb-m{i}", ["many"], f"10.1.1.{i}", None)

    env.lt.call(many)
    port = env.add("sb-web", forward=False)
    r = ask(port, "many.")
    assert r.flags & dns.flags.TC and not r.answer
    r = ask(port, "many.", use_edns=0, payload=4096)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 40
    r = ask(port, "many.", tcp=True)
    assert len(r.answer[0]) == 40
    # the order is shuffled from one answer to the next
    orders = {tuple(rd.address for rd in ask(port, "many.", tcp=True).answer[0]) for _ in range(5)}
    assert len(orders) > 1


def test_server_survives_garbage(env: Env) -> None:
    port = env.add("sb-web", forward=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        for junk in (b"", b"\x01", b"\x12\x34", b"\xff" * 11, b"\x00" * 12, b"\xab" * 700):
            s.sendto(junk, ("127.0.0.1", port))
        # a 12-byte header with QDCOUNT=2 and nothing else: FORMERR carrying the id
        s.sendto(b"\xbe\xef\x01\x00\x00\x02" + b"\x00" * 6, ("127.0.0.1", port))
        replies = []
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            try:
                replies.append(s.recv(2048))
            except TimeoutError:
                break
        formerr = [r for r in replies if r[:2] == b"\xbe\xef"]
        assert formerr and formerr[0][3] & 0xF == dns.rcode.FORMERR
    # garbage over TCP: a frame of junk, then a frame length with nothing behind it
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"\x00\x05hello\x00\x40abc")
    assert addresses(ask(port, "web.")) == ["10.1.0.2"]
    assert addresses(ask(port, "web.", tcp=True)) == ["10.1.0.2"]
    m = env.server.metrics()
    assert m["internal_errors"] == 0 and m["rcode_FORMERR"] >= 1


def test_remove_sandbox_closes_sockets_and_stops_serving(env: Env) -> None:
    port = env.add("sb-web", forward=False)
    assert addresses(ask(port, "web.")) == ["10.1.0.2"]
    udp, tcp = env.sockets["sb-web"]
    env.lt.run(env.server.remove_sandbox("sb-web"))
    env.lt.run(env.server.remove_sandbox("sb-web"))  # idempotent
    assert udp.fileno() == -1 and tcp.fileno() == -1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    assert env.server.sandbox_ids() == []


def test_add_twice_is_a_conflict_and_unlistened_tcp_is_listened(env: Env) -> None:
    from nsnet.errors import Conflict

    udp, tcp, port = bind_pair()  # tcp not listening yet: add_sandbox must call listen()
    env.lt.run(env.server.add_sandbox("sb-web", udp, tcp, forward=False))
    assert addresses(ask(port, "web.", tcp=True)) == ["10.1.0.2"]
    u2, t2, _ = bind_pair()
    with pytest.raises(Conflict):
        env.lt.run(env.server.add_sandbox("sb-web", u2, t2))
    u2.close()
    t2.close()


def test_metrics_text(env: Env) -> None:
    port = env.add("sb-web", forward=False)
    ask(port, "web.")
    ask(port, "nothere.")
    text = env.server.metrics_text()
    assert "# TYPE nsnet_dns_queries_total counter" in text
    assert "nsnet_dns_queries_total 2" in text
    assert 'nsnet_dns_responses_total{rcode="NOERROR"} 1' in text
    assert 'nsnet_dns_responses_total{rcode="SERVFAIL"} 1' in text
    assert 'nsnet_dns_upstream_seconds_bucket{le="+Inf"} 0' in text
    assert "nsnet_dns_sandboxes 1" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) == 2
