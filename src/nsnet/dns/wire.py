"""DNS wire format for the common case, by hand.

dnspython costs ~190 µs to parse and render one message; the resolver must do ~46,000 a second
(docs/architecture.md, costs). Almost every query a container sends is the same shape: one
question, standard opcode, maybe one OPT record. ``parse_query`` reads exactly that shape and
returns None for anything else, so the caller can hand the odd message to dnspython. Responses are
assembled from byte strings: the question is echoed verbatim (keeping the client's 0x20 case) and
every answer names it with a pointer to offset 12.

Nothing here raises on hostile input: the parser checks every bound before it reads.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

RCODE_NOERROR: Final = 0
RCODE_FORMERR: Final = 1
RCODE_SERVFAIL: Final = 2
RCODE_NXDOMAIN: Final = 3
RCODE_NOTIMP: Final = 4
RCODE_REFUSED: Final = 5

TYPE_A: Final = 1
TYPE_PTR: Final = 12
TYPE_AAAA: Final = 28
TYPE_OPT: Final = 41
CLASS_IN: Final = 1

TTL: Final = 600
# A UDP answer must fit the client's limit: 512 without EDNS (RFC 1035), else its advertised size.
UDP_MIN: Final = 512
TCP_MAX: Final = 65535
# What we advertise in our own OPT record (DNS flag day 2020 value).
EDNS_PAYLOAD: Final = 1232

FLAG_QR: Final = 0x8000
FLAG_AA: Final = 0x0400
FLAG_TC: Final = 0x0200
FLAG_RD: Final = 0x0100
FLAG_RA: Final = 0x0080
FLAG_CD: Final = 0x0010
# Docker's resolver replies with miekg's SetReply (copies RD and CD) plus RecursionAvailable; it
# does not claim authority. We do the same so clients see what they see under Docker.
_RESPONSE_FLAGS: Final = FLAG_QR | FLAG_RA
_COPIED_FLAGS: Final = FLAG_RD | FLAG_CD

_HEADER = struct.Struct(">HHHHHH")
_TYPE_CLASS = struct.Struct(">HH")
_OPT_FIXED = struct.Struct(">HHIH")  # type, class(payload), ttl(ext-rcode, version, flags), rdlen

_RR_A: Final = b"\xc0\x0c" + struct.pack(">HHIH", TYPE_A, CLASS_IN, TTL, 4)
_RR_AAAA: Final = b"\xc0\x0c" + struct.pack(">HHIH", TYPE_AAAA, CLASS_IN, TTL, 16)
_OPT_RR: Final = b"\x00" + struct.pack(">HHIH", TYPE_OPT, EDNS_PAYLOAD, 0, 0)

# Name bytes dnspython's text form leaves as they are (plus the label separator).
_PLAIN: Final = bytes(b for b in range(0x21, 0x7F) if b not in b'"().;\\@$') + b"."

# id, flags, qname (lowercase text, no trailing dot), qtype, qclass, question bytes,
# EDNS payload size or None
Query = tuple[int, int, str, int, int, bytes, int | None]


def parse_query(data: bytes) -> Query | None:
    """Reads the common query shape; None means "not the common shape", not "invalid"."""
    n = len(data)
    if n < 17:
        return None
    qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    # QR set, or an opcode other than QUERY: not ours to fast-path.
    if flags & 0xF800 or qd != 1 or an or ns or ar > 1:
        return None
    pos = 12
    labels: list[bytes] = []
    while True:
        if pos >= n:
            return None
        length = data[pos]
        if length == 0:
            break
        if length > 63:  # compression pointer or reserved label type
            return None
        pos += 1
        end = pos + length
        if end >= n:
            return None
        labels.append(data[pos:end])
        pos = end
    if pos - 12 + 1 > 255:
        return None
    qend = pos + 5
    if qend > n:
        return None
    qtype, qclass = _TYPE_CLASS.unpack_from(data, pos + 1)
    raw = b".".join(labels)
    # A label holding a dot byte would alias another name in text form, and dnspython writes
    # spaces, control bytes, non-ASCII and ``"().;\@$`` escaped (``\000``): such a name goes to
    # the slow path, so both paths give one name one text form.
    if labels and (raw.count(b".") != len(labels) - 1 or raw.translate(None, _PLAIN)):
        return None
    qname = raw.lower().decode("latin-1")
    edns: int | None = None
    if ar:
        edns = _opt_payload(data, qend, n)
        if edns is None:
            return None
    elif qend != n:
        return None
    return qid, flags, qname, qtype, qclass, data[12:qend], edns


def _opt_payload(data: bytes, qend: int, n: int) -> int | None:
    """The payload size of the one OPT record that ends the message; None when it is not the
    common shape (a named owner, another type, trailing bytes, an EDNS version other than 0,
    which the slow path answers with BADVERS). A function of its own only to keep
    ``parse_query`` readable: it runs for EDNS queries only, one call each."""
    if qend + 11 > n or data[qend] != 0:
        return None
    otype, payload, ttl, rdlen = _OPT_FIXED.unpack_from(data, qend + 1)
    if otype != TYPE_OPT or qend + 11 + rdlen != n:
        return None
    if (ttl >> 16) & 0xFF != 0:
        return None
    return payload if payload > UDP_MIN else UDP_MIN


def udp_limit(edns: int | None) -> int:
    """The largest UDP response the client accepts."""
    return UDP_MIN if edns is None else max(UDP_MIN, min(edns, TCP_MAX))


def _header(
    qid: int, qflags: int, rcode: int, qd: int, an: int, ar: int, tc: bool = False
) -> bytes:
    flags = _RESPONSE_FLAGS | (qflags & _COPIED_FLAGS) | (rcode & 0xF)
    if tc:
        flags |= FLAG_TC
    return _HEADER.pack(qid, flags, qd, an, 0, ar)


def _finish(
    qid: int,
    qflags: int,
    question: bytes,
    rrs: Sequence[bytes],
    edns: int | None,
    limit: int,
) -> bytes:
    opt = _OPT_RR if edns is not None else b""
    ar = 1 if edns is not None else 0
    msg = b"".join((_header(qid, qflags, RCODE_NOERROR, 1, len(rrs), ar), question, *rrs, opt))
    if len(msg) > limit:
        # Clients retry over TCP on TC; a partial RRset would be cached as complete by some.
        return _header(qid, qflags, RCODE_NOERROR, 1, 0, ar, tc=True) + question + opt
    return msg


def build_address_response(
    qid: int,
    qflags: int,
    question: bytes,
    qtype: int,
    packed: Sequence[bytes],
    edns: int | None,
    limit: int,
) -> bytes:
    """A or AAAA answers for the question; several addresses come back in random order."""
    prefix = _RR_A if qtype == TYPE_A else _RR_AAAA
    if len(packed) == 1:
        rrs: list[bytes] = [prefix + packed[0]]
    else:
        rrs = [prefix + p for p in packed]
        random.shuffle(rrs)  # round robin, like Docker's shuffleAddr
    return _finish(qid, qflags, question, rrs, edns, limit)


@lru_cache(maxsize=4096)
def encode_name(name: str) -> bytes:
    """Text name (no escapes) to uncompressed wire form; cached because PTR targets repeat."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if not label:
            continue
        raw = label.encode("ascii", "replace")[:63]
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def build_ptr_response(
    qid: int, qflags: int, question: bytes, target: str, edns: int | None, limit: int
) -> bytes:
    rdata = encode_name(target)
    rr = b"\xc0\x0c" + struct.pack(">HHIH", TYPE_PTR, CLASS_IN, TTL, len(rdata)) + rdata
    return _finish(qid, qflags, question, [rr], edns, limit)


def build_empty(
    qid: int, qflags: int, question: bytes | None, rcode: int, edns: int | None = None
) -> bytes:
    """A response with no records: NODATA (rcode 0), NXDOMAIN, SERVFAIL, REFUSED, FORMERR..."""
    ar = 1 if edns is not None else 0
    if question is None:
        return _header(qid, qflags, rcode, 0, 0, ar) + (_OPT_RR if ar else b"")
    return _header(qid, qflags, rcode, 1, 0, ar) + question + (_OPT_RR if ar else b"")


def build_nodata(qid: int, qflags: int, question: bytes, edns: int | None = None) -> bytes:
    return build_empty(qid, qflags, question, RCODE_NOERROR, edns)


def build_nxdomain(qid: int, qflags: int, question: bytes, edns: int | None = None) -> bytes:
    return build_empty(qid, qflags, question, RCODE_NXDOMAIN, edns)


def build_servfail(qid: int, qflags: int, question: bytes | None, edns: int | None = None) -> bytes:
    return build_empty(qid, qflags, question, RCODE_SERVFAIL, edns)


def build_refused(qid: int, qflags: int, question: bytes | None, edns: int | None = None) -> bytes:
    return build_empty(qid, qflags, question, RCODE_REFUSED, edns)


def build_formerr(qid: int, qflags: int = 0) -> bytes:
    """FORMERR echoes no question: whatever the client sent could not be trusted."""
    return _header(qid, qflags, RCODE_FORMERR, 0, 0, 0)


def build_notimp(qid: int, qflags: int) -> bytes:
    flags = FLAG_QR | (qflags & 0x7800) | (qflags & _COPIED_FLAGS) | FLAG_RA | RCODE_NOTIMP
    return _HEADER.pack(qid, flags, 0, 0, 0, 0)


def truncate_to(msg: bytes, limit: int) -> bytes:
    """Cuts an upstream answer we received over TCP down to a TC-flagged question-only reply."""
    if len(msg) <= limit:
        return msg
    if len(msg) < 12:
        return msg
    qid, flags, qd, _an, _ns, _ar = _HEADER.unpack_from(msg)
    question = b""
    if qd == 1:
        qend = question_end(msg)
        if qend is not None:
            question = msg[12:qend]
    hdr = _HEADER.pack(qid, flags | FLAG_TC, 1 if question else 0, 0, 0, 0)
    return hdr + question


def question_end(msg: bytes) -> int | None:
    """Offset just past the first question, if it is uncompressed and in bounds."""
    n = len(msg)
    pos = 12
    while True:
        if pos >= n:
            return None
        length = msg[pos]
        if length == 0:
            break
        if length > 63:
            return None
        pos += 1 + length
    end = pos + 5
    return end if end <= n else None


def rcode_of(msg: bytes) -> int:
    return msg[3] & 0x0F if len(msg) >= 4 else RCODE_SERVFAIL


def is_truncated(msg: bytes) -> bool:
    return len(msg) >= 4 and bool(msg[2] & 0x02)
