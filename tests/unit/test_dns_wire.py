"""The hand-written parser and builders, checked against dnspython as the reference."""

from __future__ import annotations

import ipaddress
import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset

from nsnet.dns import wire


def question_bytes(name: str, qtype: int, qclass: int = 1) -> bytes:
    raw = dns.name.from_text(name).to_wire()
    assert raw is not None
    return raw + struct.pack(">HH", qtype, qclass)


def test_parses_plain_a_query() -> None:
    q = dns.message.make_query("web.", "A")
    data = q.to_wire()
    parsed = wire.parse_query(data)
    assert parsed is not None
    qid, flags, qname, qtype, qclass, question, edns = parsed
    assert qid == q.id
    assert flags & wire.FLAG_RD
    assert (qname, qtype, qclass) == ("web", 1, 1)
    assert question == question_bytes("web.", 1)
    assert edns is None


def test_parses_aaaa_with_edns_and_keeps_0x20_case_in_question() -> None:
    q = dns.message.make_query("WeB.MyNet.", "AAAA", use_edns=0, payload=4096)
    parsed = wire.parse_query(q.to_wire())
    assert parsed is not None
    _, _, qname, qtype, _, question, edns = parsed
    assert qname == "web.mynet"
    assert qtype == 28
    assert edns == 4096
    assert question == question_bytes("WeB.MyNet.", 28)


def test_small_edns_payload_counts_as_512() -> None:
    q = dns.message.make_query("a.", "A", use_edns=0, payload=100)
    parsed = wire.parse_query(q.to_wire())
    assert parsed is not None and parsed[6] == 512


def test_edns_with_options_still_fast() -> None:
    q = dns.message.make_query(
        "a.b.", "A", use_edns=0, options=[dns.edns.GenericOption(10, b"12345678")]
    )  # a client cookie
    parsed = wire.parse_query(q.to_wire())
    assert parsed is not None and parsed[2] == "a.b"


def test_uncommon_shapes_fall_back() -> None:
    base = dns.message.make_query("web.", "A")
    assert wire.parse_query(base.to_wire()[:-1]) is None  # truncated
    assert wire.parse_query(base.to_wire() + b"\x00") is None  # trailing junk
    resp = dns.message.make_response(base)
    assert wire.parse_query(resp.to_wire()) is None  # QR set
    notify = dns.message.make_query("web.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert wire.parse_query(notify.to_wire()) is None
    two = dns.message.make_query("web.", "A")
    two.question.append(dns.rrset.RRset(dns.name.from_text("db."), 1, 1))
    assert wire.parse_query(two.to_wire()) is None
    v1 = dns.message.make_query("web.", "A", use_edns=1)
    assert wire.parse_query(v1.to_wire()) is None
    # a compression pointer inside the question
    data = bytearray(base.to_wire())
    ptr = bytes(data[:12]) + b"\x03web\xc0\x0c" + b"\x00\x01\x00\x01"
    assert wire.parse_query(ptr) is None
    # a label containing a dot byte would alias "a.b"
    dotted = bytes(data[:12]) + b"\x03a.b\x00\x00\x01\x00\x01"
    assert wire.parse_query(dotted) is None
    assert wire.parse_query(b"") is None
    assert wire.parse_query(b"\x00" * 16) is None


def test_root_query() -> None:
    q = dns.message.make_query(".", "NS")
    parsed = wire.parse_query(q.to_wire())
    assert parsed is not None and parsed[2] == "" and parsed[3] == 2


def _query(name: str, rdtype: str, **kw: object) -> tuple[dns.message.Message, wire.Query]:
    q = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    parsed = wire.parse_query(q.to_wire())
    assert parsed is not None
    return q, parsed


def test_address_answer_parses_back() -> None:
    q, (qid, flags, _, qtype, _, question, edns) = _query("Web.", "A")
    packed = [ipaddress.ip_address("10.0.0.2").packed, ipaddress.ip_address("10.0.0.3").packed]
    data = wire.build_address_response(qid, flags, question, qtype, packed, edns, 512)
    r = dns.message.from_wire(data)
    assert r.id == q.id
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.QR and r.flags & dns.flags.RA and r.flags & dns.flags.RD
    assert not r.flags & dns.flags.AA  # Docker's resolver does not claim authority
    assert q.is_response(r)
    assert str(r.question[0].name) == "Web."  # the client's case comes back
    (rrset,) = r.answer
    assert rrset.ttl == 600
    assert rrset.rdtype == dns.rdatatype.A
    assert sorted(rd.address for rd in rrset) == ["10.0.0.2", "10.0.0.3"]
    assert r.edns < 0


def test_aaaa_answer_with_edns_carries_opt() -> None:
    q, (qid, flags, _, qtype, _, question, edns) = _query("db.", "AAAA", use_edns=0)
    packed = [ipaddress.ip_address("fd00::5").packed]
    data = wire.build_address_response(qid, flags, question, qtype, packed, edns, 4096)
    r = dns.message.from_wire(data)
    assert q.is_response(r)
    assert r.edns == 0 and r.payload == wire.EDNS_PAYLOAD
    assert [rd.address for rd in r.answer[0]] == ["fd00::5"]
    assert r.answer[0].ttl == 600


def test_round_robin_order_varies() -> None:
    _, (qid, flags, _, qtype, _, question, edns) = _query("api.", "A")
    packed = [bytes([10, 0, 0, i]) for i in range(1, 6)]
    orders = set()
    for _ in range(50):
        data = wire.build_address_response(qid, flags, question, qtype, packed, edns, 512)
        r = dns.message.from_wire(data)
        orders.add(tuple(rd.address for rd in r.answer[0]))
    assert len(orders) > 1
    assert all(sorted(o) == sorted(f"10.0.0.{i}" for i in range(1, 6)) for o in orders)


def test_udp_truncation_sets_tc_and_drops_answers() -> None:
    _, (qid, flags, _, qtype, _, question, edns) = _query("many.", "A")
    packed = [bytes([10, 0, 1, i]) for i in range(40)]  # 40 * 16 bytes > 512
    data = wire.build_address_response(qid, flags, question, qtype, packed, edns, 512)
    assert len(data) <= 512
    r = dns.message.from_wire(data)
    assert r.flags & dns.flags.TC and not r.answer
    # an EDNS client with room gets all of them
    _, (qid, flags, _, qtype, _, question, edns) = _query("many.", "A", use_edns=0, payload=4096)
    assert edns == 4096
    data = wire.build_address_response(qid, flags, question, qtype, packed, edns, edns)
    r = dns.message.from_wire(data)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 40


def test_ptr_answer() -> None:
    q, (qid, flags, _, _, _, question, edns) = _query("2.0.1.10.in-addr.arpa.", "PTR")
    data = wire.build_ptr_response(qid, flags, question, "web.front", edns, 512)
    r = dns.message.from_wire(data)
    assert q.is_response(r)
    assert r.answer[0].ttl == 600
    assert str(r.answer[0][0].target) == "web.front."


def test_error_builders() -> None:
    q, (qid, flags, _, _, _, question, edns) = _query("x.", "A", use_edns=0)
    for builder, rcode in (
        (wire.build_nxdomain, dns.rcode.NXDOMAIN),
        (wire.build_servfail, dns.rcode.SERVFAIL),
        (wire.build_refused, dns.rcode.REFUSED),
        (wire.build_nodata, dns.rcode.NOERROR),
    ):
        r = dns.message.from_wire(builder(qid, flags, question, edns))
        assert q.is_response(r)
        assert r.rcode() == rcode and not r.answer
    r = dns.message.from_wire(wire.build_formerr(qid, flags))
    assert r.id == q.id and r.rcode() == dns.rcode.FORMERR and not r.question
    r = dns.message.from_wire(wire.build_notimp(qid, flags))
    assert r.rcode() == dns.rcode.NOTIMP


def test_truncate_to_keeps_question() -> None:
    q = dns.message.make_query("big.", "TXT")
    r = dns.message.make_response(q)
    r.answer.append(
        dns.rrset.from_text("big.", 60, "IN", "TXT", *[f'"{c * 200}"' for c in "abcde"])
    )
    data = r.to_wire()
    assert len(data) > 512
    cut = wire.truncate_to(data, 512)
    back = dns.message.from_wire(cut)
    assert back.flags & dns.flags.TC and not back.answer
    assert q.is_response(back)
    assert wire.truncate_to(data, 65535) is data


def test_helpers() -> None:
    assert wire.udp_limit(None) == 512
    assert wire.udp_limit(100) == 512
    assert wire.udp_limit(4096) == 4096
    assert wire.encode_name("a.bc.") == b"\x01a\x02bc\x00"
    assert wire.encode_name("") == b"\x00"
    assert wire.rcode_of(b"") == wire.RCODE_SERVFAIL
    assert not wire.is_truncated(b"\x00")
