"""nsnet.dns: the embedded resolver (docs/architecture.md rule 6).

``Records`` holds who may see which names, ``DNSServer`` serves the 127.0.0.11 sockets of every
sandbox from the daemon's loop, ``wire`` is the byte-level fast path both rely on and
``slowpath`` the dnspython one for odd messages; ``forward`` asks upstream servers (over
``upstream``'s shared UDP sockets), ``metrics`` counts, ``sandbox`` is the per-sandbox state.
"""

from nsnet.dns.forward import parse_upstream
from nsnet.dns.records import ANSWER_MISS, ANSWER_NODATA, HIT, MISS, NODATA, Answer, Records
from nsnet.dns.server import DNSServer

__all__ = [
    "ANSWER_MISS",
    "ANSWER_NODATA",
    "HIT",
    "MISS",
    "NODATA",
    "Answer",
    "DNSServer",
    "Records",
    "parse_upstream",
]
