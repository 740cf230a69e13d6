"""The pty side of TTY containers and execs without runc: real ptys from ``os.openpty``, the
console socket with a real SCM_RIGHTS message, an exec session pumping a real shell, and the
hijacked connection's input through nsnet's own HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from nsnet.api.server import ApiServer
from nsnet.api.streams import InputSink, hijack
from nsnet.engine.registry import Readers, Registry
from nsnet.engine.sessions import STDOUT, ExecConfig, ExecRecord, ExecSession, Sessions, tty_env
from nsnet.errors import Invalid, NotFound, SystemError_
from nsnet.model import Container, ContainerState
from nsnet.runtime.console import (
    Console,
    InteractiveExec,
    copy_to_file,
    drain_to_file,
    listen_console_socket,
    take_master_now,
    window_size,
)
from nsnet.testing.fake_store import MemoryStore


def _read_until(fd: int, want: bytes, timeout: float = 5.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    os.set_blocking(fd, False)
    while want not in got and time.monotonic() < deadline:
        try:
            got += os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.01)
    return got


def test_console_reads_writes_and_sizes_a_real_pty() -> None:
    master, slave = os.openpty()

    async def main() -> bytes:
        c = Console(master)
        os.write(slave, b"from the program\n")
        out = await c.read()
        await c.write(b"typed\n")
        c.resize(33, 101)
        assert window_size(slave) == (33, 101)
        c.resize(70000, 5)  # Docker's sizes are 32-bit, the kernel's 16-bit: clamped
        assert window_size(slave) == (65535, 5)
        assert b"typed" in _read_until(slave, b"typed")
        c.close()
        c.close()  # idempotent
        return out

    try:
        out = asyncio.run(main())
        assert b"from the program" in out
    finally:
        os.close(slave)


def test_read_ends_when_the_terminal_hangs_up_and_close_wakes_a_reader() -> None:
    master, slave = os.openpty()
    master2, slave2 = os.openpty()

    async def main() -> tuple[bytes, bytes, bytes]:
        c = Console(master)
        os.write(slave, b"last words")
        os.close(slave)  # every holder of the slave gone: the master reads EIO
        first = await c.read()
        end = await c.read()
        c.close()
        waiting = Console(master2)
        task = asyncio.ensure_future(waiting.read())
        await asyncio.sleep(0.05)
        assert not task.done()
        waiting.close()
        return first, end, await asyncio.wait_for(task, 2)

    try:
        first, end, woken = asyncio.run(main())
    finally:
        os.close(slave2)
    assert (first, end, woken) == (b"last words", b"", b"")


def test_a_flood_is_copied_to_the_log_while_the_loop_serves_others(tmp_path: Path) -> None:
    master, slave = os.openpty()
    log = tmp_path / "stdout.log"
    total = 4 * 1024 * 1024
    ticks = 0

    def flood() -> None:
        block = b"y" * 8192
        for _ in range(total // len(block)):
            os.write(slave, block)
        os.close(slave)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def main() -> None:
        c = Console(master)
        other = asyncio.ensure_future(ticker())
        writer = threading.Thread(target=flood)
        writer.start()
        await asyncio.wait_for(copy_to_file(c, log, 0o600), 30)
        writer.join()
        other.cancel()
        drain_to_file(c, log, 0o600)  # nothing left: a no-op
        c.close()

    asyncio.run(main())
    assert log.stat().st_size == total and log.stat().st_mode & 0o777 == 0o600
    assert ticks > 10  # the loop was never held for the whole copy


def test_close_ends_a_copy_in_progress(tmp_path: Path) -> None:
    master, slave = os.openpty()

    async def main() -> None:
        c = Console(master)
        copy = asyncio.ensure_future(copy_to_file(c, tmp_path / "log", 0o600))
        os.write(slave, b"some output")
        await asyncio.sleep(0.05)
        c.close()
        await asyncio.wait_for(copy, 2)

    try:
        asyncio.run(main())
    finally:
        os.close(slave)
    assert (tmp_path / "log").read_bytes() == b"some output"


def _send_fd(path: Path, fd: int | None) -> threading.Thread:
    def run() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            if fd is None:
                s.sendall(b"no descriptor here")
            else:
                socket.send_fds(s, [b"console"], [fd])

    t = threading.Thread(target=run)
    t.start()
    return t


def test_the_console_socket_hands_over_the_master(tmp_path: Path) -> None:
    master, slave = os.openpty()
    path = tmp_path / "console.sock"
    sock = listen_console_socket(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        _send_fd(path, master).join()  # runc run --detach: sent before it exited
        got = take_master_now(sock)
        assert os.fstat(got).st_rdev == os.fstat(master).st_rdev and got != master
        os.close(got)

        _send_fd(path, None).join()
        with pytest.raises(SystemError_, match="no console descriptor"):
            take_master_now(sock)
        with pytest.raises(SystemError_, match="did not send"):
            take_master_now(sock)  # nobody connected
    finally:
        sock.close()
        os.close(master)
        os.close(slave)


class _Client:
    """An InputSink double: hands out scripted input, keeps the output."""

    def __init__(self, inputs: list[bytes]) -> None:
        self.inputs = inputs
        self.out: list[tuple[int, bytes]] = []

    async def __call__(self, stream: int, data: bytes) -> None:
        self.out.append((stream, data))

    async def read_input(self) -> bytes:
        while not self.out and self.inputs and self.inputs[0] == b"":
            await asyncio.sleep(0.01)  # end the input only once the program answered
        return self.inputs.pop(0) if self.inputs else b""


def test_an_exec_on_a_pty_gets_the_input_and_ends_with_its_program() -> None:
    async def main() -> tuple[ExecRecord, bytes]:
        master, slave = os.openpty()
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", "read x; echo got:$x; exit 3", stdin=slave, stdout=slave,
            stderr=slave, start_new_session=True)
        os.close(slave)  # the program holds the only slave: its exit hangs the pty up
        rec = ExecRecord(id="e1", container_id="c1", cmd=["sh"], tty=True, stdin=True,
                         running=True, console=Console(master))
        client = _Client([b"hi\n"])
        await asyncio.wait_for(ExecSession(rec, proc).pump(client), 10)
        return rec, b"".join(d for s, d in client.out if s == STDOUT)

    rec, out = asyncio.run(main())
    assert b"got:hi" in out
    assert (rec.exit_code, rec.running, rec.console) == (3, False, None)


def test_an_exec_without_a_tty_reads_stdin_until_the_client_ends_it() -> None:
    async def main() -> tuple[ExecRecord, bytes]:
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        rec = ExecRecord(id="e2", container_id="c1", cmd=["cat"], stdin=True, running=True)
        client = _Client([b"one ", b"two", b""])
        await asyncio.wait_for(ExecSession(rec, proc).pump(client), 10)
        return rec, b"".join(d for s, d in client.out if s == STDOUT)

    rec, out = asyncio.run(main())
    assert (out, rec.exit_code) == (b"one two", 0)


def test_tty_env_adds_term_unless_given() -> None:
    assert tty_env(["A=1"], True) == ["A=1", "TERM=xterm"]
    assert tty_env(["TERM=vt100"], True) == ["TERM=vt100"]
    assert tty_env(["A=1"], False) == ["A=1"]


def _hijack_roundtrip(sock_path: Path, early: bytes, late: bytes) -> tuple[bytes, bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(b"POST /v1.45/containers/x/attach?stdin=1 HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        head, _, body = head.partition(b"\r\n\r\n")
        s.sendall(early)  # at once, as the docker CLI does once it read the 101
        time.sleep(0.05)
        s.sendall(late)
        s.shutdown(socket.SHUT_WR)  # the docker CLI's end of stdin
        while chunk := s.recv(4096):
            body += chunk
    return head, body


def test_hijacked_input_reaches_the_handler_raw_and_ends_at_half_close(
        tmp_path: Path) -> None:
    """What a client writes once it read the 101 is input (none of it parsed as a request),
    a TTY's output goes back unframed, and the client's half-close ends the input."""
    sock_path = tmp_path / "api.sock"

    async def handler(req: web.BaseRequest) -> web.StreamResponse:
        sink = InputSink(req, raw=True)
        resp = await hijack(req, tty=True)
        sink.start(resp)
        while data := await sink.read_input():
            await sink(STDOUT, data.upper())
        await sink(STDOUT, b"|eof")
        await resp.write_eof()
        return resp

    async def main() -> tuple[bytes, bytes]:
        runner = web.ServerRunner(ApiServer(handler, access_log=None), handle_signals=False)
        await runner.setup()
        await web.UnixSite(runner, str(sock_path)).start()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, _hijack_roundtrip, sock_path, b"early-",
                                              b"late")
        finally:
            await runner.cleanup()

    head, body = asyncio.run(main())
    assert head.startswith(b"HTTP/1.1 101")
    assert b"application/vnd.docker.raw-stream" in head
    assert body == b"EARLY-LATE|eof"


def _sessions(runtime: object) -> tuple[Sessions, Container]:
    registry = Registry(MemoryStore())
    s = Sessions(registry, cast(Any, runtime), Readers())
    c = Container(id="c" * 64, name="a", image="busybox", image_id="", created="", tty=True,
                  state=ContainerState(status="running"))
    registry.containers[c.id] = c
    return s, c


class _PtyRuntime:
    """The Terminals ability over a real pty, without runc."""

    def __init__(self, console: Console) -> None:
        self.consoles = {"c" * 64: console}
        self.sized: list[tuple[str, int, int]] = []

    def console(self, cid: str) -> Console | None:
        return self.consoles.get(cid)

    def resize_console(self, cid: str, rows: int, cols: int) -> None:
        self.sized.append((cid, rows, cols))
        self.consoles[cid].resize(rows, cols)

    async def exec_interactive(self, cid: str, process: Any, rows: int = 0,
                               cols: int = 0) -> InteractiveExec:
        raise AssertionError("not started here")


def test_a_runtime_without_terminals_refuses_tty_and_stdin_execs() -> None:
    s, c = _sessions(object())
    for cfg in (ExecConfig(cmd=["sh"], tty=True), ExecConfig(cmd=["cat"], stdin=True)):
        with pytest.raises(Invalid, match="neither a TTY nor stdin"):
            s.create_exec(c.id, cfg)
    assert s.create_exec(c.id, ExecConfig(cmd=["true"])).tty is False


def test_resize_reaches_the_container_and_the_exec_pty() -> None:
    master, slave = os.openpty()
    master2, slave2 = os.openpty()
    try:
        rt = _PtyRuntime(Console(master))
        s, c = _sessions(rt)
        s.resize_container(c, 40, 132)
        assert window_size(slave) == (40, 132) and rt.sized == [(c.id, 40, 132)]
        e = s.create_exec(c.id, ExecConfig(cmd=["sh"], tty=True, stdin=True, rows=5, cols=9))
        assert (e.tty, e.stdin, e.rows, e.cols) == (True, True, 5, 9)
        s.resize_exec(e.id, 1, 2)  # not started: no pty yet, nothing to size
        e.console = Console(master2)
        s.resize_exec(e.id, 50, 60)
        assert window_size(slave2) == (50, 60)
        with pytest.raises(NotFound):
            s.resize_exec("nope", 1, 1)
    finally:
        for fd in (master, slave, master2, slave2):
            with contextlib.suppress(OSError):
                os.close(fd)
