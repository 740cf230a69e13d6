"""A fake nsnetd on a unix socket, and the client tests that drive it.

The fake records every request and answers canned Docker-shaped replies, including the two
tricky transports: hijacked streams (101 then frames) and `wait` (headers at once, body later).
The CLI tests import it from here.
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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from click.testing import CliRunner, Result

from nsnet.cli.main import cli
from nsnet.client import (
    APIError,
    Client,
    ClientError,
    DaemonUnreachable,
    encode_filters,
    frames_text,
    iter_frames,
    socket_path_of,
)

# --- the fake daemon ------------------------------------------------------------------------


@dataclass
class Recorded:
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
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def send_json(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
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
    return send_json(status, {"message": message})


def send_empty(status: int = 204) -> Reply:
    def reply(h: Handler, _req: Recorded) -> None:
        h.send_response(status)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return reply


def send_text(status: int, text: str, content_type: str = "text/plain") -> Reply:
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
    daemon_threads = True
    fake: FakeDaemon

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up early (a detached run dropping its wait) is normal.
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            return
        super().handle_error(request, client_address)


@dataclass
class FakeDaemon:
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


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    with running_fake() as daemon:
        yield daemon


# --- client tests ---------------------------------------------------------------------------


def test_host_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NSNET_HOST", raising=False)
    assert socket_path_of(None) == "/run/nsnet/nsnet.sock"
    assert socket_path_of("unix:///tmp/x.sock") == "/tmp/x.sock"
    assert socket_path_of("/tmp/y.sock") == "/tmp/y.sock"
    monkeypatch.setenv("NSNET_HOST", "unix:///tmp/env.sock")
    assert socket_path_of(None) == "/tmp/env.sock"
    with pytest.raises(ClientError, match="unsupported host"):
        socket_path_of("tcp://1.2.3.4:2375")


def test_filters_encoding() -> None:
    assert encode_filters(None) is None
    assert encode_filters({}) is None
    assert encode_filters({"driver": "bridge", "label": ["a=b", "c"]}) == (
        '{"driver":{"bridge":true},"label":{"a=b":true,"c":true}}'
    )
    assert encode_filters({"name": {"x": True}}) == '{"name":{"x":true}}'


def test_frames_split_across_reads() -> None:
    data = frame(1, b"hello ") + frame(2, b"oops\n") + frame(1, b"") + frame(1, b"world\n")
    buf = io.BytesIO(data)

    def read(n: int) -> bytes:
        return buf.read(min(n, 3))  # short reads everywhere

    assert list(iter_frames(read)) == [
        (1, b"hello "),
        (2, b"oops\n"),
        (1, b""),
        (1, b"world\n"),
    ]


def test_missing_socket_is_a_clear_error(tmp_path: Any) -> None:
    client = Client(f"unix://{tmp_path}/nope.sock")
    with pytest.raises(DaemonUnreachable) as exc:
        client.ping()
    assert str(exc.value) == (
        f"cannot connect to the nsnet daemon at unix://{tmp_path}/nope.sock: is nsnetd running?"
    )


def test_versioned_paths_and_errors(fake: FakeDaemon) -> None:
    fake.on("GET", "/_ping", send_text(200, "OK"))
    fake.on("GET", "/networks/(.*)", send_error(404, "network test 01 not found"))
    client = Client(fake.host)
    assert client.ping() == "OK"
    with pytest.raises(APIError) as exc:
        client.networks.inspect("test 01")
    assert exc.value.status == 404
    assert exc.value.message == "network test 01 not found"
    assert fake.requests[0].raw_path == "/v1.45/_ping"
    assert fake.requests[1].raw_path == "/v1.45/networks/test%2001"
    assert fake.requests[1].path == "/networks/test 01"


def test_non_json_error_body_is_kept(fake: FakeDaemon) -> None:
    fake.on("GET", "/info", send_text(500, "boom\n"))
    with pytest.raises(APIError) as exc:
        Client(fake.host).info()
    assert (exc.value.status, exc.value.message) == (500, "boom")


def test_query_booleans_and_filters(fake: FakeDaemon) -> None:
    fake.on("GET", "/containers/json", send_json(200, []))
    fake.on("DELETE", "/containers/c1", send_empty())
    fake.on("POST", "/networks/prune", send_json(200, {"NetworksDeleted": ["a"]}))
    client = Client(fake.host)
    client.containers.list(all=True, filters={"network": ["n1"]})
    client.containers.remove("c1", force=True)
    assert client.networks.prune({"until": "24h"}) == {"NetworksDeleted": ["a"]}
    lst, rm, prune = fake.requests
    assert lst.query == {"all": "1", "filters": '{"network":{"n1":true}}'}
    assert rm.query == {"force": "1"}
    assert prune.query == {"filters": '{"until":{"24h":true}}'}
    assert prune.body == b""


@pytest.mark.parametrize("together", [False, True])
def test_exec_start_hijack(fake: FakeDaemon, together: bool) -> None:
    frames = [(1, b"out\n"), (2, b"err\n"), (1, b"more\n")]
    fake.on("POST", "/exec/e1/start", send_stream(frames, together=together))
    stream = Client(fake.host).containers.exec_start("e1")
    assert stream.upgraded
    assert frames_text(iter(stream)) == (b"out\nmore\n", b"err\n")
    req = fake.one("POST", "/exec/e1/start")
    assert req.headers["upgrade"] == "tcp"
    assert req.headers["connection"].lower() == "upgrade"
    assert req.json == {"Detach": False, "Tty": False}


@pytest.mark.parametrize("chunked", [False, True])
def test_stream_without_upgrade(fake: FakeDaemon, chunked: bool) -> None:
    frames = [(1, b"a" * 70000), (2, b"b")]
    fake.on("POST", "/containers/c/attach", send_stream(frames, upgrade=False, chunked=chunked))
    stream = Client(fake.host).containers.attach("c")
    assert not stream.upgraded
    assert list(stream) == frames


def test_logs_params(fake: FakeDaemon) -> None:
    fake.on("GET", "/containers/c/logs", send_stream([(1, b"l1\n")], upgrade=False))
    with Client(fake.host).containers.logs("c", follow=True, tail=5) as stream:
        assert list(stream) == [(1, b"l1\n")]
    assert fake.requests[0].query == {"stdout": "1", "stderr": "1", "follow": "1", "tail": "5"}


def test_wait_headers_before_body(fake: FakeDaemon) -> None:
    release = threading.Event()
    fake.on("POST", "/containers/c/wait", send_wait(7, release))
    started = time.monotonic()
    pending = Client(fake.host).containers.wait_begin("c", "next-exit")
    assert time.monotonic() - started < 2  # returned on headers, not on the body
    release.set()
    assert pending.result() == {"StatusCode": 7, "Error": None}
    assert fake.requests[0].query == {"condition": "next-exit"}


def test_import_is_chunked(fake: FakeDaemon, tmp_path: Any) -> None:
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(b"x" * 200000)
    lines = b'{"status":"sha256:abc"}\r\n'
    fake.on("POST", "/images/create", send_text(200, lines.decode(), "application/json"))
    msgs = Client(fake.host).images.import_tar(str(tar), "bb:1")
    assert msgs == [{"status": "sha256:abc"}]
    req = fake.requests[0]
    assert req.query == {"fromSrc": "-", "repo": "bb:1"}
    assert req.headers["transfer-encoding"] == "chunked"
    assert req.headers["content-type"] == "text/plain"
    assert req.body == b"x" * 200000


def test_import_stream_error(fake: FakeDaemon) -> None:
    body = '{"errorDetail":{"message":"bad tar"},"error":"bad tar"}\n'
    fake.on("POST", "/images/create", send_text(200, body, "application/json"))
    with pytest.raises(APIError, match="bad tar"):
        Client(fake.host).images.import_tar(io.BytesIO(b"data"), "x")


def test_image_paths_keep_colons(fake: FakeDaemon) -> None:
    fake.on("GET", "/images/.*/json", send_json(200, {"Id": "sha256:1"}))
    Client(fake.host).images.inspect("alpine:3.10")
    assert fake.requests[0].raw_path == "/v1.45/images/alpine:3.10/json"


def test_connect_disconnect_bodies(fake: FakeDaemon) -> None:
    fake.on("POST", "/networks/n/(connect|disconnect)", send_empty(200))
    client = Client(fake.host)
    client.networks.connect("n", "c", {"Aliases": ["a"]})
    client.networks.connect("n", "c")
    client.networks.disconnect("n", "c", force=True)
    assert [r.json for r in fake.requests] == [
        {"Container": "c", "EndpointConfig": {"Aliases": ["a"]}},
        {"Container": "c"},
        {"Container": "c", "Force": True},
    ]
