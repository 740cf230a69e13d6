"""The client against the fake daemon (nsnet.testing.fake_daemon): paths, queries, errors and
the two tricky transports (hijacked streams and `wait`)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

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
from nsnet.testing.fake_daemon import (
    FakeDaemon,
    frame,
    running_fake,
    send_empty,
    send_error,
    send_json,
    send_stream,
    send_text,
    send_wait,
)


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
