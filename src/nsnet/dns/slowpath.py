"""The general path: dnspython reads what the fast parser in ``wire`` declined.

Rare messages (no question, several, a compressed or escaped name, an EDNS version we do not
speak, a header too short to answer) cost ~190 µs here instead of a few on the fast path, and
never reach ``Records`` in a different spelling: the question is rebuilt uncompressed and
case-preserving, and the name is dnspython's text form, lowercased, as the fast path gives it.
"""

from __future__ import annotations

import struct

import dns.exception
import dns.message
import dns.name

from nsnet.dns import wire


def slow_parse(data: bytes) -> wire.Query | bytes | None:
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
    return qid, flags, qname, int(rrset.rdtype), int(rrset.rdclass), question, edns


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
