"""Small server pieces that need no sockets: upstream specs, the host list cache, metrics."""

from __future__ import annotations

import dns.message

from nsnet.dns import DNSServer, Records, parse_upstream
from nsnet.dns.forward import upstream_list
from nsnet.dns.sandbox import ServedSandbox


def test_parse_upstream() -> None:
    assert parse_upstream("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_upstream(" 192.0.2.1:5353 ") == ("192.0.2.1", 5353)
    assert parse_upstream("2001:db8::1") == ("2001:db8::1", 53)
    assert parse_upstream("[2001:db8::1]:54") == ("2001:db8::1", 54)
    assert parse_upstream("[2001:db8::1]") == ("2001:db8::1", 53)
    for bad in ("", "dns.google", "1.2.3.4:0", "1.2.3.4:70000", "[::1]x", "1.2.3.4:x"):
        assert parse_upstream(bad) is None, bad


def test_at_most_three_distinct_upstreams() -> None:
    specs = ("10.0.0.1", "10.0.0.1:53", "bogus", "10.0.0.2", "10.0.0.3", "10.0.0.4")
    assert upstream_list(specs) == [
        ("10.0.0.1", 53),
        ("10.0.0.2", 53),
        ("10.0.0.3", 53),
    ]


def test_host_upstreams_are_cached_and_failures_keep_the_last_list() -> None:
    calls: list[int] = []
    answers: list[object] = [["10.0.0.1"], RuntimeError("resolv.conf vanished"), ["10.0.0.9"]]

    def host() -> list[str]:
        calls.append(1)
        a = answers[min(len(calls) - 1, len(answers) - 1)]
        if isinstance(a, Exception):
            raise a
        return a  # type: ignore[return-value]

    cached = DNSServer(Records(), host, host_upstreams_ttl=3600)
    assert cached._forwarder.host_specs() == ("10.0.0.1",)
    assert cached._forwarder.host_specs() == ("10.0.0.1",)
    assert len(calls) == 1
    calls.clear()
    fresh = DNSServer(Records(), host, host_upstreams_ttl=0)
    assert fresh._forwarder.host_specs() == ("10.0.0.1",)
    assert fresh._forwarder.host_specs() == ("10.0.0.1",)  # the callable raised: keep the last list
    assert fresh._forwarder.host_specs() == ("10.0.0.9",)


def test_metrics_counts_local_answers() -> None:
    records = Records()
    records.set_endpoint("e", "n", "sb", ["web"], "10.0.0.2", None)
    server = DNSServer(records, lambda: [])
    sb = ServedSandbox("sb", None, None, None, False)  # type: ignore[arg-type]
    for name in ("web.", "web.", "WEB."):
        r = server._handle(sb, dns.message.make_query(name, "A").to_wire(), False)
        assert isinstance(r, bytes)
    server.stats.observe(0.003)
    server.stats.observe(30.0)
    text = server.metrics_text()
    assert "nsnet_dns_queries_total 3" in text
    assert 'nsnet_dns_responses_total{rcode="NOERROR"} 3' in text
    assert 'nsnet_dns_upstream_seconds_bucket{le="0.0025"} 0' in text
    assert 'nsnet_dns_upstream_seconds_bucket{le="0.005"} 1' in text
    assert 'nsnet_dns_upstream_seconds_bucket{le="5.0"} 1' in text
    assert 'nsnet_dns_upstream_seconds_bucket{le="+Inf"} 2' in text
    assert "nsnet_dns_upstream_seconds_count 2" in text
