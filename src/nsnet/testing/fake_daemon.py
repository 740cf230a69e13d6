"""A fake nsnetd on a unix socket for client and CLI tests: no root, no kernel, no engine.

The fake records every request and answers canned Docker-shaped replies, including the two
tricky transports: hijacked streams (101 then frames) and `wait` (headers at once, body later).
It lives in `nsnet.testing` rather than in a test module so any test (or another package's
tests) can drive the real client and the real `nsnet` command against it without a daemon.
Routes are regexes on the unversioned, percent-decoded path; later registrations win, so a
test states only the replies it cares about and anything else is docker's 404.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socketserver
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from click.testing import CliRunner, Result

from nsnet.cli.main import cli


@dataclass
class Recorded:
    """One request as the fake saw it, so a test can assert on the exact wire shape."""

    method: str
    path: str  # unversioned, percent-decoded
    raw_path: str  # as sent, with the version prefix and query
    version: str | None
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Reply = Callable[["Handler", Recorded], None]


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed-stream frame: stream id, three zero bytes, big-endian length, data."""
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def send_json(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON reply (no body for `None`), with a Content-Length like aiohttp sends."""

    def reply(h: Handler, _req: Recorded) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        h.send_response(status)
        if data:
            h.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return reply


def send_error(status: int, message: str) -> Reply:
    """docker's error shape: `{"message": ...}` with a 4xx/5xx status."""
    return send_json(status, {"message": message})


def send_empty(status: int = 204) -> Reply:
    """An empty reply, what start/stop/connect answer."""

    def reply(h: Handler, _req: Recorded) -> None:
        h.send_response(status)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return reply


def send_text(status: int, text: str, content_type: str = "text/plain") -> Reply:
    """A non-JSON body, for checking that the client keeps an odd error text."""

    def reply(h: Handler, _req: Recorded) -> None:
        data = text.encode()
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return reply


def send_stream(
    frames: list[tuple[int, bytes]],
    *,
    upgrade: bool = True,
    together: bool = False,
    after: threading.Event | None = None,
    chunked: bool = False,
) -> Reply:
    """A hijacked (101) or plain (200) stream of frames, closed at the end.

    `together` writes the header block and the frames in one write, the case that loses
    output in clients reading the raw socket under a buffered reader.
    """

    def reply(h: Handler, req: Recorded) -> None:
        if upgrade and req.headers.get("upgrade", "").lower() == "tcp":
            head = (
                b"HTTP/1.1 101 UPGRADED\r\n"
                b"Content-Type: application/vnd.docker.multiplexed-stream\r\n"
                b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
            )
        elif chunked:
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
        else:
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                b"Connection: close\r\n\r\n"
            )
        payload = b"".join(frame(s, d) for s, d in frames)
        if chunked and not head.startswith(b"HTTP/1.1 101"):
            payload = (
                b"".join(
                    f"{len(frame(s, d)):x}\r\n".encode() + frame(s, d) + b"\r\n" for s, d in frames
                )
                + b"0\r\n\r\n"
            )
        if together:
            h.wfile.write(head + payload)
        else:
            h.wfile.write(head)
            h.wfile.flush()
            if after is not None:
                after.wait(5)
            h.wfile.write(payload)
        h.wfile.flush()
        h.close_connection = True

    return reply


def send_wait(status_code: int, release: threading.Event | None = None, error: str = "") -> Reply:
    """`wait`: headers at once (like moby), the body only when `release` is set."""

    def reply(h: Handler, _req: Recorded) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.flush()
        if release is not None:
            release.wait(5)
        body = {"StatusCode": status_code, "Error": {"Message": error} if error else None}
        h.wfile.write(json.dumps(body).encode() + b"\n")
        h.wfile.flush()
        h.close_connection = True

    return reply


class Handler(BaseHTTPRequestHandler):
    """Records each request, then lets the first matching route write the whole reply."""

    protocol_version = "HTTP/1.1"
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = io.BytesIO()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                out.write(self.rfile.read(size))
                self.rfile.readline()
            return out.getvalue()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        m = re.match(r"^/v(\d+\.\d+)(/.*)$", parts.path)
        version, path = (m.group(1), m.group(2)) if m else (None, parts.path)
        req = Recorded(
            method=self.command,
            path=unquote(path),
            raw_path=self.path,
            version=version,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self._body(),
        )
        with fake.lock:
            fake.requests.append(req)
            reply = fake.find(req)
        reply(self, req)

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _handle


class FakeServer(socketserver.ThreadingUnixStreamServer):
    """A thread per connection, as a `wait` and an attach must be served at the same time."""

    daemon_threads = True
    fake: FakeDaemon

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up early (a detached run dropping its wait) is normal.
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            return
        super().handle_error(request, client_address)


@dataclass
class FakeDaemon:
    """The routes a test registered and every request the client made, under one lock."""

    socket_path: str
    requests: list[Recorded] = field(default_factory=list)
    routes: list[tuple[str, re.Pattern[str], Reply]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def on(self, method: str, path: str, reply: Reply) -> FakeDaemon:
        """Answer `method path` (a regex on the unversioned, decoded path) with `reply`;
        later registrations win."""
        self.routes.insert(0, (method, re.compile(f"^{path}$"), reply))
        return self

    def find(self, req: Recorded) -> Reply:
        for method, pattern, reply in self.routes:
            if method == req.method and pattern.match(req.path):
                return reply
        return send_error(404, "page not found")

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    def one(self, method: str, path: str) -> Recorded:
        found = self.calls(method, path)
        assert len(found) == 1, f"{method} {path}: {len(found)} calls in {self.summary()}"
        return found[0]

    def summary(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]


@contextlib.contextmanager
def running_fake() -> Iterator[FakeDaemon]:
    """A fake serving on a fresh socket for the `with` block, torn down after."""
    # tmp_path can be longer than a unix socket path may be (108 bytes).
    tmp = tempfile.mkdtemp(prefix="nsnet-cli-")
    path = os.path.join(tmp, "d.sock")
    fake = FakeDaemon(path)
    server = FakeServer(path, Handler)
    server.fake = fake
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(tmp, ignore_errors=True)


def nsnet(fake: FakeDaemon, *args: str, input: str | bytes | None = None) -> Result:
    """Run the CLI in-process against the fake, the way a user would type it."""
    return CliRunner().invoke(cli, ["-H", fake.host, *args], input=input)
