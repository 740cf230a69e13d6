"""Issue 11: the API's access log (``nsnet.api.server``): one line per request, its level by status,
secret-looking query values masked, never the body."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path

import pytest
from aiohttp import web

from nsnet.api.server import ApiServer, access_level, access_line
from nsnet.daemon import parse_args


def test_line_and_levels() -> None:
    line = access_line("GET", "/v1.41/containers/json", {"all": "1", "X-Auth": "hunter2",
                                                         "registry_token": "t0k"}, 200, 0.0042)
    assert line == "GET /v1.41/containers/json?all=1&X-Auth=***&registry_token=*** 200 4.2ms"
    assert "hunter2" not in line and "t0k" not in line
    assert access_line("DELETE", "/networks/my net", {}, 404, 0.001) == \
        "DELETE /networks/my%20net 404 1.0ms"
    forged = access_line("GET", "/x\n2026 ERROR forged", {"q": "a\nb"}, 200, 0)
    assert "\n" not in forged and forged.startswith("GET /x%0A2026%20ERROR%20forged?q=a%0Ab ")
    assert [access_level(s) for s in (200, 204, 304, 400, 404, 409, 500, 503)] == [
        logging.DEBUG, logging.DEBUG, logging.DEBUG, logging.INFO, logging.INFO, logging.INFO,
        logging.ERROR, logging.ERROR]


def test_log_level_flag_takes_dockerds_words() -> None:
    assert parse_args(["--log-level", "debug"]).log_level == logging.DEBUG
    assert parse_args(["--log-level", "warn"]).log_level == logging.WARNING
    assert parse_args(["--log-level", "FATAL"]).log_level == logging.CRITICAL
    with pytest.raises(SystemExit):
        parse_args(["--log-level", "loud"])


def _http(path: Path, raw: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_served_requests_are_logged_without_their_body(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        if request.path == "/boom":
            return web.json_response({"message": "internal"}, status=500)
        if request.path == "/nope":
            return web.json_response({"message": "no such thing"}, status=404)
        return web.json_response({"ok": True})

    sock = tmp_path / "api.sock"

    async def main() -> list[bytes]:
        server = ApiServer(handler, access_log=None)
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        await web.UnixSite(runner, str(sock)).start()
        body = json.dumps({"Env": ["PASSWORD=sekrit"]}).encode()
        loop = asyncio.get_running_loop()
        try:
            return [await loop.run_in_executor(None, _http, sock, raw) for raw in (
                b"POST /v1.41/containers/create?name=web HTTP/1.1\r\nHost: x\r\n"
                b"Connection: close\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
                b"GET /nope?auth=abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")]
        finally:
            await runner.cleanup()

    with caplog.at_level(logging.DEBUG, logger="nsnet.api.server"):
        replies = asyncio.run(main())
    assert [r.split(b" ", 2)[1] for r in replies] == [b"200", b"404", b"500"]
    got = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "nsnet.api.server"]
    assert [(lvl, msg.rsplit(" ", 1)[0]) for lvl, msg in got] == [
        (logging.DEBUG, "POST /v1.41/containers/create?name=web 200"),
        (logging.INFO, "GET /nope?auth=*** 404"),
        (logging.ERROR, "GET /boom 500"),
    ]
    assert all(msg.endswith("ms") for _, msg in got)
    assert not any("sekrit" in r.getMessage() or "abc" in r.getMessage()
                   for r in caplog.records)
