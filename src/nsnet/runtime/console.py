"""Pseudo-terminals: runc's console socket and the daemon's end of a container's pty.

A process started with ``terminal: true`` gets the slave side of a new pty; runc makes it
inside the container and hands the master to whoever listens on ``--console-socket``, one
descriptor in one ``SCM_RIGHTS`` message. The daemon keeps that master: it is the only way to
the process's input and output, and its ``TIOCSWINSZ`` is the window size.

The master is non-blocking and driven by loop readers and writers, so a quiet shell costs no
thread and a flood never blocks the loop. Reading is pulled by the consumer (``read`` returns at
most one chunk), so memory stays one chunk per console whatever the process writes: a consumer
slower than the process (a full disk, a slow client) slows the process down through the pty's
own kernel buffer instead of growing the daemon.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import struct
import termios
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nsnet.errors import SystemError_

CHUNK: Final = 1 << 16
# A window size the kernel and every terminal program accept (rows, columns).
MAX_WINDOW: Final = 0xFFFF


@dataclass
class InteractiveExec:
    """An attached exec with input: ``proc`` is runc (its stdin the command's, without a
    TTY); on a TTY, runc has already returned and ``console`` and ``exit`` (the command's
    exit code, reaped by pid) are what is left of it."""

    proc: asyncio.subprocess.Process
    pid: int
    console: Console | None = None
    exit: asyncio.Task[int] | None = None


def listen_console_socket(path: Path) -> socket.socket:
    """The unix socket runc connects to with the master: root-only, one connection."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _recv_fd(conn: socket.socket) -> int | None:
    """The one descriptor of an ``SCM_RIGHTS`` message; None when the message has none.
    Any extra descriptor a confused sender passed is closed, never leaked."""
    fds = array.array("i")
    _, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not fds:
        return None
    for extra in fds[1:]:
        os.close(extra)
    return fds[0]


def take_master_now(sock: socket.socket) -> int:
    """The master runc already sent: runc sends it before a detached ``run`` or ``exec``
    returns (runc takes a console socket only when it detaches), so once it has exited the
    message waits in the socket and nothing blocks."""
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        raise SystemError_("runc did not send the console of a TTY container") from None
    with conn:
        conn.setblocking(False)
        try:
            fd = _recv_fd(conn)
        except BlockingIOError:
            fd = None
    if fd is None:
        raise SystemError_("runc sent no console descriptor")
    return fd


def window_size(fd: int) -> tuple[int, int]:
    """(rows, columns) of a pty, as ``TIOCGWINSZ`` reads it."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def set_window_size(fd: int, rows: int, cols: int) -> None:
    """``TIOCSWINSZ``: the kernel signals SIGWINCH to the terminal's foreground group.
    Docker's API takes 32-bit sizes, the kernel 16-bit ones: clamped, not wrapped."""
    rows, cols = min(rows, MAX_WINDOW), min(cols, MAX_WINDOW)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Console:
    """The daemon's end of one pty: output pulled a chunk at a time, input written without
    blocking the loop, the window sized. Closing it hangs the terminal up."""

    def __init__(self, master_fd: int) -> None:
        os.set_blocking(master_fd, False)
        self.fd = master_fd
        self.closed = False
        # Waits in progress, woken by ``close`` so no reader outlives the descriptor.
        self._pending: set[asyncio.Future[None]] = set()

    async def _wait(self, write: bool) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        add, remove = (loop.add_writer, loop.remove_writer) if write else \
            (loop.add_reader, loop.remove_reader)
        add(self.fd, wake)
        self._pending.add(fut)
        try:
            await fut
        finally:
            self._pending.discard(fut)
            if not self.closed:
                remove(self.fd)

    async def read(self) -> bytes:
        """The next chunk of output; b"" once every process holding the slave has gone (the
        master then reads EIO) or the console was closed."""
        while not self.closed:
            try:
                return os.read(self.fd, CHUNK)
            except BlockingIOError:
                await self._wait(write=False)
            except OSError as e:
                if e.errno == errno.EIO:
                    return b""
                raise
        return b""

    def read_available(self) -> bytes:
        """What the pty holds right now, without waiting (bounded by the pty's own buffer):
        the last words of a process that has just ended, before the console is closed."""
        out = bytearray()
        while not self.closed and len(out) < 16 * CHUNK:
            try:
                data = os.read(self.fd, CHUNK)
            except OSError:
                break
            if not data:
                break
            out += data
        return bytes(out)

    async def write(self, data: bytes) -> None:
        """All of ``data`` to the terminal's input; waits (never blocks) while the pty's input
        buffer is full, so a client pasting faster than the program reads is slowed, not
        buffered here."""
        view = memoryview(data)
        while view and not self.closed:
            try:
                n = os.write(self.fd, view)
                view = view[n:]
            except BlockingIOError:
                await self._wait(write=True)
            except OSError as e:
                if e.errno == errno.EIO:
                    return  # the terminal hung up: input has nowhere to go
                raise

    def resize(self, rows: int, cols: int) -> None:
        if not self.closed:
            set_window_size(self.fd, rows, cols)

    async def pour(self, out_fd: int) -> None:
        """All the terminal's output written to ``out_fd`` as it comes, until it hangs up or
        is closed. One loop reader stays registered throughout and each wake-up reads what
        the pty holds, a chunk at a time, each written before the next is read: a reader
        and a future per chunk (``read``) cost more CPU than the copy itself. A failed write
        (a full disk) ends the copy with its error; the program then blocks on its full pty
        instead of the daemon buffering."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def stop(error: OSError | None = None) -> None:
            loop.remove_reader(self.fd)
            if not done.done():
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)

        def readable() -> None:
            for _ in range(8):  # then let the loop serve others
                try:
                    data = os.read(self.fd, CHUNK)
                except BlockingIOError:
                    return
                except OSError:
                    data = b""  # EIO: every holder of the slave is gone
                if not data:
                    stop()
                    return
                try:
                    _write_all(out_fd, data)
                except OSError as e:
                    stop(e)
                    return

        if self.closed:
            return
        loop.add_reader(self.fd, readable)
        self._pending.add(done)
        try:
            await done
        finally:
            self._pending.discard(done)
            if not self.closed:
                loop.remove_reader(self.fd)

    def close(self) -> None:
        """Idempotent. Wakes a pending ``read`` (which then returns b"")."""
        if self.closed:
            return
        self.closed = True
        if self._pending:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.fd)
            loop.remove_writer(self.fd)
            for fut in self._pending:
                if not fut.done():
                    fut.set_result(None)
        os.close(self.fd)


async def copy_to_file(console: Console, path: Path, mode: int) -> None:
    """A TTY container's output into its log file (``docker logs`` and attach read it there);
    ends when the terminal hangs up or is closed."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        await console.pour(fd)
    finally:
        os.close(fd)


def drain_to_file(console: Console, path: Path, mode: int) -> None:
    """What the terminal still holds when its container ended, appended to the log."""
    data = console.read_available()
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
