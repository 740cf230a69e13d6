"""Forwarding: fake upstream DNS servers on 127.0.0.1, failover, overrides, limits.

Everything stays on 127.0.0.1. Each fake upstream is a UDP socket and a TCP listener on one port,
served by a thread, answering in one of a few fixed ways and recording what it received.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest
from dns_server_support import LoopThread, bind_pair

from nsnet.dns import DNSServer, Records
from nsnet.dns.upstream import UDPUpstreams


class FakeUpstream:
    """mode: answer | servfail | refused | nxdomain | silent | tc (TC over UDP, full over TCP)."""

    def __init__(self, mode: str = "answer", address: str = "192.0.2.1") -> None:
        self.mode = mode
        self.address = address
        self.udp, self.tcp, self.port = bind_pair()
        self.tcp.listen(16)
        self.received: list[bytes] = []
        self.received_tcp: list[bytes] = []
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def spec(self) -> str:
        return f"127.0.0.1:{self.port}"

    def respond(self, data: bytes, tcp: bool) -> bytes | None:
        q = dns.message.from_wire(data)
        mode = self.mode
        if mode == "silent":
            return None
        r = dns.message.make_response(q)
        if mode == "servfail":
            r.set_rcode(dns.rcode.SERVFAIL)
        elif mode == "refused":
            r.set_rcode(dns.rcode.REFUSED)
        elif mode == "nxdomain":
            r.set_rcode(dns.rcode.NXDOMAIN)
        elif mode == "tc" and not tcp:
            r.flags |= dns.flags.TC
        else:
            name = q.question[0].name
            r.answer.append(dns.rrset.from_text(name, 30, "IN", "A", self.address))
        return r.to_wire()

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self.udp, self.tcp, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            if self.udp in ready:
                data, addr = self.udp.recvfrom(65535)
                self.received.append(data)
                out = self.respond(data, False)
                if out is not None:
                    self.udp.sendto(out, addr)
            if self.tcp in ready:
                conn, _ = self.tcp.accept()
                with conn:
                    conn.settimeout(2)
                    try:
                        n = int.from_bytes(conn.recv(2), "big")
                        data = b""
                        while len(data) < n:
                            chunk = conn.recv(n - len(data))
                            if not chunk:
                                break
                            data += chunk
                        self.received_tcp.append(data)
                        out = self.respond(data, True)
                        if out is not None:
                            conn.sendall(len(out).to_bytes(2, "big") + out)
                    except OSError:
                        pass

    def close(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join(5)
        for s in (self.udp, self.tcp, self._stop_r, self._stop_w):
            s.close()


class Env:
    def __init__(self, lt: LoopThread) -> None:
        self.lt = lt
        self.records = Records()
        self.host: list[str] = []
        self.server = DNSServer(
            self.records,
            lambda: list(self.host),
            upstream_timeout=0.3,
            tcp_idle_timeout=2,
            host_upstreams_ttl=0,
        )
        self.upstreams: list[FakeUpstream] = []

    def upstream(self, mode: str = "answer", address: str = "192.0.2.1") -> FakeUpstream:
        up = FakeUpstream(mode, address)
        self.upstreams.append(up)
        return up

    def add(self, sandbox: str, **kw: Any) -> int:
        udp, tcp, port = bind_pair()
        self.lt.run(self.server.add_sandbox(sandbox, udp, tcp, **kw))
        return port


@pytest.fixture(params=["asyncio", "uvloop"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    lt = LoopThread(request.param)
    e = Env(lt)
    lt.call(lambda: e.records.set_endpoint("e1", "n1", "sb", ["web"], "10.0.0.2", None))
    try:
        yield e
    finally:
        lt.run(e.server.close())
        lt.stop()
        for up in e.upstreams:
            up.close()


def ask(
    port: int, name: str = "example.com.", tcp: bool = False, timeout: float = 5
) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=timeout)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)


def addresses(resp: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in resp.answer for rd in rrset)


def test_forwards_unknown_names_verbatim(env: Env) -> None:
    up = env.upstream()
    env.host[:] = [up.spec]
    port = env.add("sb")
    q = dns.message.make_query("ExAmple.COM.", "A")
    wire_q = q.to_wire()
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=5)
    assert r.id == q.id and addresses(r) == ["192.0.2.1"]
    # The client's bytes, unchanged but for the query id, which is the resolver's own.
    assert len(up.received) == 1 and up.received[0][2:] == wire_q[2:]
    # local names never leave
    assert addresses(ask(port, "web.")) == ["10.0.0.2"]
    assert len(up.received) == 1
    m = env.server.metrics()
    assert m["forwarded"] == 1
    assert "nsnet_dns_upstream_seconds_count 1" in env.server.metrics_text()


def test_failover_from_a_dead_upstream(env: Env) -> None:
    dead = env.upstream("silent")
    live = env.upstream()
    env.host[:] = [dead.spec, live.spec]
    port = env.add("sb")
    start = time.monotonic()
    r = ask(port)
    took = time.monotonic() - start
    assert addresses(r) == ["192.0.2.1"]
    assert len(dead.received) == 1 and len(live.received) == 1
    assert 0.25 < took < 2.0  # one timeout (0.3 s) spent on the dead one
    assert env.server.metrics()["upstream_timeout"] == 1


def test_failover_from_a_closed_port_is_immediate(env: Env) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    live = env.upstream()
    env.host[:] = [closed, live.spec]
    port = env.add("sb")
    start = time.monotonic()
    assert addresses(ask(port)) == ["192.0.2.1"]
    assert time.monotonic() - start < 0.25  # ICMP port unreachable, not the 0.3 s timeout
    assert env.server.metrics()["upstream_error"] == 1


def test_failover_on_servfail_and_refused(env: Env) -> None:
    bad1 = env.upstream("servfail")
    bad2 = env.upstream("refused")
    live = env.upstream(address="192.0.2.7")
    env.host[:] = [bad1.spec, bad2.spec, live.spec]
    port = env.add("sb")
    assert addresses(ask(port)) == ["192.0.2.7"]
    m = env.server.metrics()
    assert m["upstream_servfail"] == 1 and m["upstream_refused"] == 1


def test_nxdomain_is_returned_as_is(env: Env) -> None:
    nx = env.upstream("nxdomain")
    other = env.upstream()
    env.host[:] = [nx.spec, other.spec]
    port = env.add("sb")
    assert ask(port).rcode() == dns.rcode.NXDOMAIN
    assert other.received == []


def test_all_failing_gives_servfail_and_only_three_are_tried(env: Env) -> None:
    ups = [env.upstream("refused") for _ in range(4)]
    env.host[:] = [u.spec for u in ups]
    port = env.add("sb")
    assert ask(port).rcode() == dns.rcode.SERVFAIL
    assert [len(u.received) for u in ups] == [1, 1, 1, 0]


def test_no_upstreams_gives_servfail(env: Env) -> None:
    port = env.add("sb")
    assert ask(port).rcode() == dns.rcode.SERVFAIL
    env.host[:] = ["not an address", "300.1.1.1"]
    assert ask(port).rcode() == dns.rcode.SERVFAIL


def test_forward_false_never_forwards(env: Env) -> None:
    up = env.upstream()
    env.host[:] = [up.spec]
    port = env.add("sb", forward=False, dns_servers=[up.spec])
    assert ask(port).rcode() == dns.rcode.SERVFAIL
    assert addresses(ask(port, "web.")) == ["10.0.0.2"]
    assert up.received == []
    env.lt.call(lambda: env.server.update_sandbox("sb", forward=True))
    assert addresses(ask(port)) == ["192.0.2.1"]


def test_dns_servers_override_host_upstreams(env: Env) -> None:
    host = env.upstream(address="192.0.2.1")
    own = env.upstream(address="192.0.2.2")
    env.host[:] = [host.spec]
    port = env.add("sb", dns_servers=[own.spec])
    assert addresses(ask(port)) == ["192.0.2.2"]
    assert host.received == []
    env.lt.call(lambda: env.server.update_sandbox("sb", dns_servers=None))
    assert addresses(ask(port)) == ["192.0.2.1"]


def test_truncated_upstream_answer_is_retried_over_tcp(env: Env) -> None:
    up = env.upstream("tc")
    env.host[:] = [up.spec]
    port = env.add("sb")
    r = ask(port)
    assert not r.flags & dns.flags.TC and addresses(r) == ["192.0.2.1"]
    assert len(up.received) == 1 and len(up.received_tcp) == 1


def test_tcp_client_is_forwarded_over_tcp(env: Env) -> None:
    up = env.upstream()
    env.host[:] = [up.spec]
    port = env.add("sb")
    r = ask(port, tcp=True)
    assert addresses(r) == ["192.0.2.1"]
    assert up.received == [] and len(up.received_tcp) == 1


def test_concurrent_forward_cap_refuses(env: Env) -> None:
    slow = env.upstream("silent")
    env.host[:] = [slow.spec]
    env.server = DNSServer(
        env.records,
        lambda: list(env.host),
        upstream_timeout=1.0,
        max_concurrent_forwards=2,
        host_upstreams_ttl=0,
    )
    port = env.add("sb")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        queries = [dns.message.make_query(f"q{i}.example.", "A") for i in range(3)]
        for q in queries:
            s.sendto(q.to_wire(), ("127.0.0.1", port))
        r = dns.message.from_wire(s.recv(2048))  # the third one, refused at once
        assert r.id == queries[2].id and r.rcode() == dns.rcode.REFUSED
    assert env.server.metrics()["inflight"] == 2
    # closing the server (fixture teardown) cancels the two still waiting on the upstream


def test_garbage_from_upstream_is_ignored(env: Env) -> None:
    # an upstream answering with the wrong id is ignored until the timeout, then failover
    class WrongId(FakeUpstream):
        def respond(self, data: bytes, tcp: bool) -> bytes | None:
            out = super().respond(data, tcp)
            assert out is not None
            return bytes([out[0] ^ 0xFF]) + out[1:]

    bad = WrongId()
    env.upstreams.append(bad)
    live = env.upstream(address="192.0.2.9")
    env.host[:] = [bad.spec, live.spec]
    port = env.add("sb")
    assert addresses(ask(port)) == ["192.0.2.9"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_forwarded_queries_share_a_few_sockets_per_upstream(env: Env) -> None:
    # A flood of names the upstream never answers used to hold one descriptor per query.
    silent = env.upstream("silent")
    env.host[:] = [silent.spec]
    port = env.add("sb")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        before = open_fds()
        # In bursts of 50: 300 datagrams at once overflow a default socket receive buffer on
        # a loaded machine, and a dropped query says nothing about descriptors.
        for burst in range(6):
            for i in range(burst * 50, burst * 50 + 50):
                s.sendto(dns.message.make_query(f"q{i}.example.", "A").to_wire(),
                         ("127.0.0.1", port))
            assert wait(lambda n=burst * 50 + 50: len(silent.received) == n)
        during = open_fds()
    assert during - before <= 4, during - before
    assert env.server.metrics()["upstream_sockets"] <= 4
    assert len({q[:2] for q in silent.received}) > 250  # ids of our own, spread out


def test_multiplexed_answers_go_to_the_right_client(env: Env) -> None:
    class Named(FakeUpstream):
        """Answers every name with an address made from its first label."""

        def respond(self, data: bytes, tcp: bool) -> bytes | None:
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            name = q.question[0].name
            r.answer.append(dns.rrset.from_text(name, 30, "IN", "A",
                                                f"198.51.100.{name.labels[0].decode()[1:]}"))
            return r.to_wire()

    up = Named()
    env.upstreams.append(up)
    env.host[:] = [up.spec]
    port = env.add("sb")
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
    try:
        queries = [dns.message.make_query(f"h{i}.example.", "A") for i in range(40)]
        for s, q in zip(socks, queries, strict=True):
            s.settimeout(3)
            s.sendto(q.to_wire(), ("127.0.0.1", port))
        for i, (s, q) in enumerate(zip(socks, queries, strict=True)):
            r = dns.message.from_wire(s.recv(2048))
            assert r.id == q.id and addresses(r) == [f"198.51.100.{i}"]
    finally:
        for s in socks:
            s.close()


def test_answer_echoing_another_question_is_ignored(env: Env) -> None:
    # Right id, wrong question: a spoofed answer that guessed our id. Ignored, then failover.
    class OtherQuestion(FakeUpstream):
        def respond(self, data: bytes, tcp: bool) -> bytes | None:
            q = dns.message.from_wire(data)
            r = dns.message.make_response(dns.message.make_query("evil.example.", "A", id=q.id))
            r.answer.append(dns.rrset.from_text("evil.example.", 30, "IN", "A", "203.0.113.66"))
            return r.to_wire()

    bad = OtherQuestion()
    env.upstreams.append(bad)
    live = env.upstream(address="192.0.2.9")
    env.host[:] = [bad.spec, live.spec]
    port = env.add("sb")
    assert addresses(ask(port)) == ["192.0.2.9"]
    assert env.server.metrics()["upstream_timeout"] == 1


def test_forwards_past_the_pool_bound_get_servfail_at_once(env: Env) -> None:
    silent = env.upstream("silent")
    env.host[:] = [silent.spec]
    env.server = DNSServer(env.records, lambda: list(env.host), upstream_timeout=2.0,
                           host_upstreams_ttl=0, udp_upstreams=UDPUpstreams(max_pending=2))
    port = env.add("sb")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        queries = [dns.message.make_query(f"p{i}.example.", "A") for i in range(3)]
        for q in queries:
            s.sendto(q.to_wire(), ("127.0.0.1", port))
        r = dns.message.from_wire(s.recv(2048))
        assert r.id == queries[2].id and r.rcode() == dns.rcode.SERVFAIL
    m = env.server.metrics()
    assert m["upstream_busy"] == 1 and m["upstream_pending"] == 2


def test_idle_upstream_sockets_are_closed(env: Env) -> None:
    up = env.upstream()
    env.host[:] = [up.spec]
    env.server = DNSServer(env.records, lambda: list(env.host), upstream_timeout=1.0,
                           host_upstreams_ttl=0, udp_upstreams=UDPUpstreams(idle=0.2))
    port = env.add("sb")
    assert addresses(ask(port)) == ["192.0.2.1"]
    assert env.server.metrics()["upstream_sockets"] == 1
    assert wait(lambda: env.server.metrics()["upstream_sockets"] == 0, timeout=2)
    assert addresses(ask(port)) == ["192.0.2.1"]  # and a new one is opened when needed


def wait(pred: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())
