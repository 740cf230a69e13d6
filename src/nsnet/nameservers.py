"""How a nameserver is written: ``ip``, ``ip:port``, ``[v6]:port`` or a bare IPv6 address.

nsnet accepts a port where Docker takes only an address (a resolver on a loopback port is how
the tests and some labs run one), so the API's validation and the resolver's forwarding must
agree on one grammar: this module is that grammar, pure and importable from any layer.
"""

from __future__ import annotations

import ipaddress


def parse_nameserver(spec: str) -> tuple[str, int] | None:
    """The address and port a spec names, or None when it names none."""
    s = spec.strip()
    port = 53
    try:
        if s.startswith("["):
            host, _, rest = s[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    return None
                port = int(rest[1:])
        elif s.count(":") == 1:
            host, p = s.split(":")
            port = int(p)
        else:
            host = s
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not 0 < port < 65536:
        return None
    return str(ip), port
