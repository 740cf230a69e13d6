"""A tiny authoritative DNS server for tests: fixed answers, NXDOMAIN otherwise.

Run inside a test host namespace: ``python fake_dns.py PORT name=ip [name=ip ...]``.
Optional ``--rcode servfail|refused`` answers every query with that code instead (failover).
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rrset


def parse_args(args: list[str]) -> tuple[dict[str, str], int | None]:
    answers: dict[str, str] = {}
    rcode: int | None = None
    while args:
        a = args.pop(0)
        if a == "--rcode":
            rcode = dns.rcode.from_text(args.pop(0).upper())
        elif "=" in a:
            k, v = a.split("=", 1)
            answers[k.rstrip(".").lower() + "."] = v
    return answers, rcode


def make_answer(answers: dict[str, str], rcode: int | None) -> Callable[[bytes], bytes | None]:
    def answer(data: bytes) -> bytes | None:
        try:
            q = dns.message.from_wire(data)
        except Exception:  # noqa: BLE001 - a test server ignores garbage
            return None
        r = dns.message.make_response(q)
        name = q.question[0].name.to_text().lower()
        if rcode is not None:
            r.set_rcode(rcode)
        elif name in answers and q.question[0].rdtype == 1:
            r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", answers[name]))
        elif name not in answers:
            r.set_rcode(dns.rcode.NXDOMAIN)
        return bytes(r.to_wire())

    return answer


def read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def serve_tcp(t: socket.socket, answer: Callable[[bytes], bytes | None]) -> None:
    while True:
        conn, _ = t.accept()
        with conn:
            try:
                out = answer(read_exactly(conn, int.from_bytes(conn.recv(2), "big")))
                if out is not None:
                    conn.sendall(len(out).to_bytes(2, "big") + out)
            except OSError:
                continue


def main() -> None:
    port = int(sys.argv[1])
    answer = make_answer(*parse_args(sys.argv[2:]))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("127.0.0.1", port))
    t.listen(16)
    threading.Thread(target=serve_tcp, args=(t, answer), daemon=True).start()
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(4096)
        out = answer(data)
        if out is not None:
            s.sendto(out, addr)


if __name__ == "__main__":
    main()
