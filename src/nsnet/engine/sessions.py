"""Sessions: exec instances, log following and attached readers, kept by the engine.

The API only translates: it hands a ``sink`` (an async function taking a stream number and
bytes, which frames and writes them) and these functions feed it, so the exec records, the
reapers of detached execs and the reader counts that auto-remove waits for all live here, where
reconcile and unit tests can see them. A sink that raises (the client went away) ends the
session: an attached exec's process is killed, a reader is counted out.

Input. A sink that is also an ``InputSink`` (a hijacked connection with stdin) is read here
and its bytes written to the process: the pty master for a TTY (the runtime's ``Terminals``
ability), the exec's stdin pipe otherwise. Reading is pulled one chunk at a time and waits on
the write, so a fast client is slowed to the program's pace rather than buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from nsnet.engine.ports import Runtime
from nsnet.engine.registry import Readers, Registry
from nsnet.errors import Conflict, Invalid, NotFound
from nsnet.model import Container, new_id
from nsnet.runtime.console import Console, InteractiveExec
from nsnet.runtime.runc import ProcessSpec

STDOUT, STDERR = 1, 2

Sink = Callable[[int, bytes], Awaitable[None]]


@runtime_checkable
class InputSink(Protocol):
    """A sink that also brings the client's input: b"" from ``read_input`` is its end."""

    async def __call__(self, stream: int, data: bytes) -> None: ...

    async def read_input(self) -> bytes: ...


@runtime_checkable
class Terminals(Protocol):
    """The runtime's optional pty ability (``Runc``): a fake runtime without it refuses
    TTYs and input with a 400 instead of pretending."""

    def console(self, cid: str) -> Console | None: ...

    def resize_console(self, cid: str, rows: int, cols: int) -> None: ...

    async def exec_interactive(
        self, cid: str, process: ProcessSpec, rows: int = 0, cols: int = 0
    ) -> InteractiveExec: ...


@runtime_checkable
class StdinPipes(Protocol):
    """The runtime's optional stdin ability for containers without a TTY (``docker run
    -i``): a pipe the daemon writes attached input to."""

    def open_stdin(self, cid: str) -> None: ...

    def stdin(self, cid: str) -> Console | None: ...

    def close_stdin(self, cid: str) -> None: ...


@dataclass
class ExecConfig:
    """A validated ``POST /containers/{id}/exec`` body."""

    cmd: list[str]
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    attach: bool = True
    tty: bool = False
    stdin: bool = False
    # ConsoleSize (rows, columns); 0 leaves the kernel's default.
    rows: int = 0
    cols: int = 0
    # DetachKeys as given ("": the default), shown by exec inspect.
    detach_keys: str = ""


@dataclass
class ExecRecord:
    """One exec instance, as ``GET /exec/{id}/json`` reports it."""

    id: str
    container_id: str
    cmd: list[str]
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    attach: bool = True
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    created: float = field(default_factory=time.time)
    tty: bool = False
    stdin: bool = False
    rows: int = 0
    cols: int = 0
    detach_keys: str = ""
    # The pty master while a TTY exec runs (resize writes its window size), and the task
    # giving its exit code (runc has returned: the command is reaped by pid).
    console: Console | None = field(default=None, repr=False, compare=False)
    exit_task: asyncio.Task[int] | None = field(default=None, repr=False, compare=False)


def tty_env(env: list[str], tty: bool) -> list[str]:
    """Docker gives a process on a TTY ``TERM=xterm`` unless its environment names one."""
    if tty and not any(v.startswith("TERM=") for v in env):
        return [*env, "TERM=xterm"]
    return list(env)


def exec_exit_code(code: int, stderr_tail: bytes) -> int:
    """runc exits 255 when it cannot start the command; Docker reports 127 (not found) or 126
    (not executable), which scripts test for."""
    if code != 255 or b"exec failed" not in stderr_tail:
        return code
    text = stderr_tail.decode(errors="replace").lower()
    if "not found" in text or "no such file" in text:
        return 127
    if "permission denied" in text or "not a directory" in text:
        return 126
    return code


class ExecSession:
    """An attached exec whose process runs: ``pump`` feeds its output to a sink until it
    ends, then records the exit code.

    A client that goes (the CLI's detach keys close its connection) or detaches (the
    daemon's) leaves the command running, as moby does: its output is read and dropped from
    then on, and its terminal stays open until it exits (closing it would hang the command
    up)."""

    def __init__(self, record: ExecRecord, proc: asyncio.subprocess.Process) -> None:
        self.record = record
        self.proc = proc
        self._client_gone = False

    def detach(self) -> None:
        """The client is leaving: output goes nowhere from now on, the command runs on."""
        self._client_gone = True

    async def _send(self, sink: Sink, kind: int, data: bytes) -> None:
        if self._client_gone:
            return
        try:
            await sink(kind, data)
        except (ConnectionError, RuntimeError):
            # The connection is gone, or its response was ended by a detach while this
            # write was under way (aiohttp: "Cannot call write() after write_eof()").
            self._client_gone = True

    async def pump(self, sink: Sink) -> None:
        feeder = None
        if self.record.stdin and isinstance(sink, InputSink):
            feeder = asyncio.ensure_future(self._feed(sink))
        try:
            await self._pump_output(sink)
        finally:
            if feeder is not None:
                feeder.cancel()
                with contextlib.suppress(BaseException):
                    await feeder
            if self.record.console is not None:
                self.record.console.close()
                self.record.console = None

    async def _feed(self, source: InputSink) -> None:
        """The client's input to the command until the client's input ends: then the stdin
        pipe is closed (``cat`` sees its end); a terminal stays open, as Docker leaves it."""
        console, stdin = self.record.console, self.proc.stdin
        while data := await source.read_input():
            if console is not None:
                await console.write(data)
            elif stdin is not None:
                stdin.write(data)
                await stdin.drain()
        if stdin is not None:
            stdin.close()

    async def _pump_output(self, sink: Sink) -> None:
        err_tail = bytearray()

        async def copy(stream: asyncio.StreamReader | None, kind: int) -> None:
            if stream is None:
                return
            while True:
                data = await stream.read(65536)
                if not data:
                    return
                if kind == STDERR:
                    err_tail.extend(data)
                    del err_tail[:-512]
                await self._send(sink, kind, data)

        async def copy_console(console: Console | None) -> None:
            while console is not None and (data := await console.read()):
                await self._send(sink, STDOUT, data)

        e, proc = self.record, self.proc
        try:
            await asyncio.gather(copy(proc.stdout, STDOUT), copy(proc.stderr, STDERR),
                                 copy_console(e.console))
            if e.exit_task is not None:
                e.exit_code = await asyncio.shield(e.exit_task)
            else:
                e.exit_code = exec_exit_code(await proc.wait(), bytes(err_tail))
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            e.running = False


class Sessions:
    """Exec instances by ID, the tasks reaping detached ones, and log/attach followers."""

    def __init__(self, registry: Registry, runtime: Runtime, readers: Readers) -> None:
        self.registry = registry
        self.runc = runtime
        self.readers = readers
        self.execs: dict[str, ExecRecord] = {}
        self.reapers: set[asyncio.Future[None]] = set()

    # -- exec -------------------------------------------------------------------------------

    def create_exec(self, ref: str, cfg: ExecConfig) -> ExecRecord:
        c = self.registry.find_container(ref)
        if c.state.status != "running":
            raise Conflict(f"container {c.id} is not running")
        if (cfg.tty or cfg.stdin) and not isinstance(self.runc, Terminals):
            raise Invalid("this runtime gives an exec neither a TTY nor stdin")
        e = ExecRecord(id=new_id(), container_id=c.id, cmd=cfg.cmd, env=cfg.env,
                       workdir=cfg.workdir, user=cfg.user, attach=cfg.attach, tty=cfg.tty,
                       stdin=cfg.stdin, rows=cfg.rows, cols=cfg.cols,
                       detach_keys=cfg.detach_keys)
        self._forget_gone()
        self.execs[e.id] = e
        return e

    def _forget_gone(self) -> None:
        """Exec records live as long as their container, as in Docker: a client creating execs
        in a loop must not grow the daemon without bound once the containers are removed."""
        gone = [k for k, e in self.execs.items()
                if e.container_id not in self.registry.containers and not e.running]
        for k in gone:
            del self.execs[k]

    def find_exec(self, exec_id: str) -> ExecRecord:
        e = self.execs.get(exec_id)
        if e is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return e

    async def _spawn(self, e: ExecRecord, detach: bool) -> asyncio.subprocess.Process:
        c = self.registry.find_container(e.container_id)
        if c.state.status != "running":
            raise Conflict(f"container {c.id} is not running")
        interactive = not detach and (e.tty or e.stdin)
        env = tty_env(list(c.env) + list(e.env), e.tty)
        spec = ProcessSpec(args=e.cmd, env=env, cwd=e.workdir or c.working_dir or "/",
                           user=e.user or c.user, tty=e.tty and interactive)
        if interactive and isinstance(self.runc, Terminals):
            started = await self.runc.exec_interactive(c.id, spec, e.rows, e.cols)
            e.console, e.exit_task = started.console, started.exit
            e.pid = started.pid
            return started.proc
        if detach and e.tty:
            raise Invalid("a detached exec with a TTY is not supported by nsnet yet")
        return await self.runc.exec(c.id, spec, detach)

    def resize_exec(self, exec_id: str, rows: int, cols: int) -> None:
        """Size a running TTY exec's terminal; an exec without one has nothing to size."""
        e = self.find_exec(exec_id)
        if e.console is not None:
            e.console.resize(rows, cols)

    def resize_container(self, c: Container, rows: int, cols: int) -> None:
        """Size a running TTY container's terminal (none to size without a TTY)."""
        if isinstance(self.runc, Terminals):
            self.runc.resize_console(c.id, rows, cols)

    async def start_exec(self, exec_id: str, detach: bool) -> ExecSession | None:
        """Start the command; detached, it is reaped in the background and None returned."""
        e = self.find_exec(exec_id)
        if e.running or e.exit_code is not None:
            raise Conflict(f"exec {e.id} has already been started")
        e.running = True
        try:
            proc = await self._spawn(e, detach)
        except BaseException:
            e.running = False
            e.exit_code = 126
            raise
        e.pid = e.pid or proc.pid or 0
        if not detach:
            return ExecSession(e, proc)
        detached = self.runc.take_detached(proc)

        async def reap() -> None:
            if detached is None:
                e.exit_code = await proc.wait()
            else:
                # The command itself, not runc (which returned as soon as it started).
                e.pid, task = detached
                e.exit_code = await asyncio.shield(task)
            e.running = False

        self.reapers.add(asyncio.ensure_future(reap()))
        for t in [t for t in self.reapers if t.done()]:
            self.reapers.discard(t)
        return None

    # -- logs and attach --------------------------------------------------------------------

    def _wanted(self, c: Container, stdout: bool, stderr: bool) -> list[tuple[int, Path]]:
        out_path, err_path = self.runc.log_paths(c.id)
        wanted = [(STDOUT, out_path)] if stdout else []
        if stderr:
            wanted.append((STDERR, err_path))
        return wanted

    def log_sizes(self, c: Container) -> dict[int, int]:
        sizes = {}
        for s, path in self._wanted(c, True, True):
            try:
                sizes[s] = path.stat().st_size
            except OSError:
                sizes[s] = 0
        return sizes

    async def stream_logs(self, c: Container, sink: Sink, stdout: bool, stderr: bool,
                          follow: bool, tail: int | None,
                          offsets: dict[int, int] | None = None) -> None:
        """Send what the logs hold; with ``offsets``, only what was written after them; with
        ``follow``, keep sending until the container stops."""
        wanted = self._wanted(c, stdout, stderr)
        pos: dict[int, int] = {}
        for s, path in wanted:
            start = offsets.get(s, 0) if offsets else 0
            if tail is not None and tail >= 0:
                start = max(start, _tail_start(path, tail))
            pos[s] = await _send_from(path, start, s, sink)
        if follow:
            await self._follow(c, sink, wanted, pos)

    async def _follow(self, c: Container, sink: Sink, wanted: list[tuple[int, Path]],
                      pos: dict[int, int]) -> None:
        ended_at = 0.0
        while True:
            cur = self.registry.containers.get(c.id)
            done = cur is None or cur.state.status not in ("running", "created")
            if done and c.tty and self._console_of(c) is not None:
                # A TTY's last output is copied to the log when its pty is drained, just
                # after the exit is recorded: wait for that (bounded, should it never come).
                ended_at = ended_at or time.monotonic()
                done = time.monotonic() - ended_at > 2.0
            for s, path in wanted:
                pos[s] = await _send_from(path, pos[s], s, sink)
            if done:
                return
            await asyncio.sleep(0.02)

    async def attach(self, ref: str, sink: Sink, stdout: bool, stderr: bool, logs: bool,
                     stream: bool) -> None:
        """``docker attach``: the logs so far if asked, then the output from now on; while it
        follows, an auto-remove of the container waits for it (``Readers``)."""
        c = self.registry.find_container(ref)
        if logs:
            await self.stream_logs(c, sink, stdout, stderr, False, None)
        if not stream:
            return
        # Follow from where the logs end now: a foreground run attaches before it starts.
        offsets = self.log_sizes(c)
        self.readers.add(c.id)
        feeder = None
        if isinstance(sink, InputSink) and (c.tty or c.open_stdin):
            feeder = asyncio.ensure_future(self._feed_container(c, sink))
        try:
            while self.registry.containers.get(c.id) is not None and \
                    self.registry.containers[c.id].state.status == "created":
                await asyncio.sleep(0.01)
            await self.stream_logs(c, sink, stdout, stderr, True, None, offsets)
        finally:
            self.readers.done(c.id)
            if feeder is not None:
                feeder.cancel()
                with contextlib.suppress(BaseException):
                    await feeder

    async def _feed_container(self, c: Container, source: InputSink) -> None:
        """Attached input to a TTY container's terminal, or to the stdin pipe of one started
        with ``OpenStdin``. A foreground ``run -i`` attaches before the start, so input
        waits here (one chunk held) for the terminal or pipe to exist. When the client's
        input ends, a ``StdinOnce`` container's stdin is closed (``echo x | docker run -i
        busybox cat`` ends)."""
        while data := await source.read_input():
            while (target := self._input_of(c)) is None:
                cur = self.registry.containers.get(c.id)
                if cur is None or cur.state.status not in ("created", "running"):
                    return
                await asyncio.sleep(0.01)
            await target.write(data)
        if c.stdin_once and not c.tty and isinstance(self.runc, StdinPipes):
            # Input may end before the start (an empty stdin): wait for the pipe to close it.
            while self.runc.stdin(c.id) is None:
                cur = self.registry.containers.get(c.id)
                if cur is None or cur.state.status not in ("created", "running"):
                    return
                await asyncio.sleep(0.01)
            self.runc.close_stdin(c.id)

    def _input_of(self, c: Container) -> Console | None:
        if c.tty:
            return self._console_of(c)
        return self.runc.stdin(c.id) if isinstance(self.runc, StdinPipes) else None

    def _console_of(self, c: Container) -> Console | None:
        return self.runc.console(c.id) if isinstance(self.runc, Terminals) else None


# A container decides how big its logs grow: they are read and sent a chunk at a time, so a
# 10 GB log neither fills the daemon's memory nor holds the event loop for one long read.
CHUNK = 1 << 20


async def _send_from(path: Path, start: int, stream: int, sink: Sink) -> int:
    """Send the log from ``start`` to its current end; the offset reached."""
    pos = start
    try:
        f = open(path, "rb")  # noqa: SIM115 - held across awaits, closed below
    except OSError:
        return pos
    with f:
        f.seek(start)
        while True:
            data = f.read(CHUNK)
            if not data:
                return pos
            pos += len(data)
            await sink(stream, data)


def _tail_start(path: Path, lines: int) -> int:
    """The offset where the last ``lines`` lines of the file begin, read backwards in chunks
    (a final line without a newline counts as a line, as Docker's tail does)."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError:
        return 0
    with f:
        end = f.seek(0, 2)
        if lines == 0:
            return end
        pos, seen = end, 0
        f.seek(end - 1 if end else 0)
        if end and f.read(1) == b"\n":
            seen = -1  # the file's final newline ends the last line, it starts none
        while pos > 0:
            step = min(CHUNK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            i = len(block)
            while (i := block.rfind(b"\n", 0, i)) >= 0:
                seen += 1
                if seen == lines:
                    return pos + i + 1
        return 0
