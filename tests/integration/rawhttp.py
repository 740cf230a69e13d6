"""Raw requests to the daemon's socket and a snapshot of what exists, for hostile-input tests.

The typed client refuses to send malformed bodies; these tests need the exact bytes on the wire
(numbers where strings belong, NUL bytes, 50,000-deep JSON, 100 MB bodies).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from nsnet.testing.hosts import Daemon


@dataclass
class Reply:
    status: int
    ctype: str
    body: bytes

    def message(self) -> str:
        """The error message; fails unless the body is Docker's JSON error shape."""
        assert self.ctype == "application/json", f"{self.status}: Content-Type {self.ctype!r}"
        data = json.loads(self.body)
        assert isinstance(data, dict) and isinstance(data.get("message"), str), data
        return str(data["message"])


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def request(d: Daemon, method: str, path: str, body: Any = None,
            query: dict[str, str] | None = None, timeout: float = 30) -> Reply:
    url = path + ("?" + urlencode(query) if query else "")
    conn = _UnixHTTP(str(d.socket), timeout)
    try:
        if body is None:
            conn.request(method, url)
        else:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            conn.request(method, url, body=data, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return Reply(r.status, r.headers.get("Content-Type", ""), r.read())
    finally:
        conn.close()


def oversized(d: Daemon, path: str, size: int, timeout: float = 30) -> Reply:
    """POST ``size`` bytes as a client that keeps sending until the server answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(d.socket))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              f"Content-Length: {size}\r\n\r\n".encode())

    def send() -> None:
        chunk = b" " * (1 << 16)
        sent = 0
        try:
            while sent < size:
                s.sendall(chunk[:size - sent])
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed: what we want

    t = threading.Thread(target=send, daemon=True)
    t.start()
    try:
        r = http.client.HTTPResponse(s)
        r.begin()
        return Reply(r.status, r.headers.get("Content-Type", ""), r.read())
    finally:
        s.close()
        t.join(timeout=timeout)


def state(d: Daemon) -> dict[str, Any]:
    """Everything a refused request must leave as it was: networks, containers, links, files."""
    c = d.client()
    return {
        "networks": sorted((n["Id"], n["Name"]) for n in c.networks.list()),
        "containers": sorted((x["Id"], x["State"]) for x in c.containers.list(all=True)),
        "links": sorted(str(x["ifname"]) for x in d.host.ip_json("link", "show")),
        "sandboxes": sorted(p.name for p in (d.exec_root / "sandboxes").glob("*")),
    }
