"""TTYs and stdin (issue 11), driven as a user drives them: the real docker CLI on a pty made
here with Python's ``pty`` module, typing into it and reading the screen back; the window size
read from inside with ``stty size``; a container that floods its terminal, with the daemon's
memory read from /proc; stdin without a TTY through ``docker exec -i``."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from helpers import api_error, run, wait_for

from nsnet.testing.hosts import Daemon

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not Path(DOCKER).exists(), reason="needs the docker CLI"),
]


class Terminal:
    """The docker CLI on a pty of a given size, as in a user's terminal window."""

    def __init__(self, d: Daemon, args: list[str], rows: int = 37, cols: int = 123) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen([DOCKER, *args], stdin=slave, stdout=slave, stderr=slave,
                                     env=d.env, start_new_session=True)
        os.close(slave)
        self.screen = b""

    def read_until(self, want: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while want not in self.screen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # EIO: docker exited and closed the terminal
                    break
                if not data:
                    break
                self.screen += data
        return self.screen

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self, timeout: float = 20) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.read_until(b"\0never\0", timeout=0.3)
            os.close(self.master)
        return rc


def test_docker_run_it_shell_is_interactive(daemon: Daemon) -> None:
    t = Terminal(daemon, ["run", "-it", "--rm", "--name", "tty1", "busybox", "sh"])
    t.read_until(b"# ")  # the shell's prompt: its output reached us through the pty
    # What the shell prints (42, the size) differs from what was typed, so the terminal's
    # echo of the typing cannot satisfy the checks.
    t.type("echo hi$((6*7)); tty; stty size; exit 7\r")
    screen = t.read_until(b"37 123")
    rc = t.finish()
    assert b"hi42" in screen, screen
    assert b"/dev/pts/0" in screen, screen  # a real pty inside, not a pipe
    assert b"37 123" in screen, screen  # the window size from the CLI's resize call
    assert rc == 7, screen
    assert wait_for(lambda: "tty1" not in daemon.docker("ps", "-a").stdout)


def test_docker_exec_it_shell_is_interactive(daemon: Daemon) -> None:
    c = daemon.client()
    cid = run(c, name="ttyx")
    t = Terminal(daemon, ["exec", "-it", "ttyx", "sh"], rows=29, cols=81)
    t.read_until(b"# ")
    t.type("echo hi$((6*7)); tty; stty size; echo $TERM; exit 3\r")
    screen = t.read_until(b"xterm")
    rc = t.finish()
    assert b"hi42" in screen and b"/dev/pts/" in screen, screen
    assert b"29 81" in screen, screen  # ConsoleSize at exec create
    assert b"xterm" in screen, screen
    assert rc == 3, screen
    # The pty is gone with the exec: nothing of it is left in the daemon.
    assert not _ptmx_fds(daemon), "the daemon still holds a pty master"
    c.containers.remove(cid, force=True)


def test_detach_keys_leave_the_shell_running_for_the_next_attach(daemon: Daemon) -> None:
    """Ctrl-P Ctrl-Q (and ``--detach-keys``) detach the CLI; the container's shell keeps
    running with its state, and ``docker attach`` gets back to it (a TTY's stdin is not closed
    when its client goes, StdinOnce or not, as in moby)."""
    t = Terminal(daemon, ["run", "-it", "--name", "det", "busybox", "sh"])
    t.read_until(b"# ")
    t.type("X=kept$((20+22))\r")
    t.type("\x10\x11")  # ctrl-p ctrl-q
    assert t.finish(timeout=10) == 0, t.screen  # docker run -it ends quietly on a detach
    c = daemon.client()
    assert c.containers.inspect("det")["State"]["Running"]
    a = Terminal(daemon, ["attach", "--detach-keys", "ctrl-x,x", "det"])
    a.type("echo $X\r")
    assert b"kept42" in a.read_until(b"kept42"), a.screen
    a.type("\x18x")  # ctrl-x x
    rc = a.finish(timeout=10)
    # docker attach reports the detach as its error, with status 1 (the CLI's, not ours).
    assert b"read escape sequence" in a.screen and rc == 1, a.screen
    assert c.containers.inspect("det")["State"]["Running"]
    c.containers.remove("det", force=True)


def test_an_api_client_detaches_with_its_keys_and_the_container_goes_on(
        daemon: Daemon) -> None:
    """The Docker SDK's attach socket has no CLI to watch for the keys: the daemon finds
    ``detachKeys`` in the input, ends the session, and the shell keeps running. Bad keys are
    moby's 400 before anything is hijacked."""
    import docker

    c = daemon.client()
    cid = run(c, name="apidet", cmd=["sh"], Tty=True, OpenStdin=True)
    sdk = docker.DockerClient(base_url=f"unix://{daemon.socket}")
    sock = sdk.api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stream": 1,
                                              "detachKeys": "ctrl-x,x"})
    raw = sock._sock
    raw.settimeout(10)
    raw.sendall(b"echo hi$((6*7))\r")
    seen = b""
    while b"hi42" not in seen:
        seen += raw.recv(4096)
    raw.sendall(b"\x18x")  # ctrl-x x: the daemon ends the session, so the socket closes
    while chunk := raw.recv(4096):
        seen += chunk
    assert b"\x18" not in seen  # the keys never reached the terminal (it would echo ^X)
    sock.close()
    assert c.containers.inspect(cid)["State"]["Running"]
    e = api_error(c.transport.call, "POST",
                  f"/containers/{cid}/attach?stream=1&stdin=1&detachKeys=ctrl-1")
    assert e.status == 400 and "Invalid detach keys (ctrl-1) provided" in e.message
    sdk.close()
    c.containers.remove(cid, force=True)


TICKING = "echo up; while :; do echo tick; sleep 0.1; done"


def _ticking(d: Daemon, marker: str) -> tuple[int, int]:
    """(pid, tty_nr) of the ticking loop named ``marker`` ($0), from /proc on the host."""
    out = d.docker("top", "exdet", "-o", "pid,args").stdout
    pid = int(next(ln.split()[0] for ln in out.splitlines() if marker in ln))
    return pid, int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[4])


def test_a_detached_exec_runs_on_with_its_terminal(daemon: Daemon) -> None:
    """``docker exec -it`` left with Ctrl-P Ctrl-Q (the CLI's keys: it just closes the
    connection), then an API client with its own ``DetachKeys`` (found by the daemon): both
    commands go on printing to their terminal, as in moby. The first output after the client
    left used to end the session, close the terminal and hang the command up."""
    import docker

    c = daemon.client()
    cid = run(c, name="exdet")
    t = Terminal(daemon, ["exec", "-it", "exdet", "sh", "-c", TICKING, "tick601"])
    t.read_until(b"up")
    pid1, tty1 = _ticking(daemon, "tick601")
    t.type("\x10\x11")
    t.finish(timeout=10)
    sdk = docker.DockerClient(base_url=f"unix://{daemon.socket}")
    ex = sdk.api.exec_create(cid, ["sh", "-c", TICKING, "tick602"], stdin=True, tty=True,
                             detach_keys="ctrl-x,x")
    assert sdk.api.exec_inspect(ex["Id"])["DetachKeys"] == "ctrl-x,x"
    sock = sdk.api.exec_start(ex["Id"], tty=True, socket=True)
    raw = sock._sock
    raw.settimeout(10)
    seen = b""
    while b"tick" not in seen:
        seen += raw.recv(4096)
    raw.sendall(b"\x18x")
    while raw.recv(4096):  # the daemon ends the session
        pass
    sock.close()
    pid2, tty2 = _ticking(daemon, "tick602")
    time.sleep(1)  # ten more ticks each, with nobody reading
    assert _ticking(daemon, "tick601") == (pid1, tty1) and tty1 != 0
    assert _ticking(daemon, "tick602") == (pid2, tty2) and tty2 != 0
    assert sdk.api.exec_inspect(ex["Id"])["Running"]
    bad = api_error(c.transport.call, "POST", f"/containers/{cid}/exec",
                    body={"Cmd": ["true"], "AttachStdin": True, "DetachKeys": "ctrl-"})
    assert bad.status == 400 and "Invalid detach keys (ctrl-) provided" in bad.message
    sdk.close()
    c.containers.remove(cid, force=True)


def test_resize_reaches_a_running_tty_container(daemon: Daemon) -> None:
    daemon.docker("run", "-dit", "--name", "sized", "busybox", "sh")
    try:
        p = subprocess.run([DOCKER, "exec", "sized", "stty", "-F", "/dev/pts/0", "size"],
                           capture_output=True, text=True, env=daemon.env, timeout=30)
        assert p.returncode == 0, p.stderr
        daemon.client().containers.resize("sized", height=11, width=222)
        p = subprocess.run([DOCKER, "exec", "sized", "stty", "-F", "/dev/pts/0", "size"],
                           capture_output=True, text=True, env=daemon.env, timeout=30)
        assert p.stdout.strip() == "11 222", p
        assert _ptmx_fds(daemon), "the daemon holds the TTY container's master"
    finally:
        daemon.docker("rm", "-f", "sized")
    assert wait_for(lambda: not _ptmx_fds(daemon)), "the master outlived its container"


def test_exec_stdin_without_a_tty_reaches_the_command_and_ends(daemon: Daemon) -> None:
    """docker exec -i (docker-compose exec -T sets AttachStdin too): cat sees the input and
    its end, so it exits."""
    cid = run(daemon.client(), name="stdin1")
    p = daemon.docker("exec", "-i", "stdin1", "sh", "-c", "cat; echo end:$?",
                      input="line one\nline two\n", timeout=30)
    assert p.stdout == "line one\nline two\nend:0\n"
    daemon.client().containers.remove(cid, force=True)


def test_a_flooding_tty_container_does_not_grow_the_daemon(daemon: Daemon) -> None:
    before = _rss_kib(daemon)
    size = 40_000_000
    t0 = time.monotonic()
    daemon.docker("run", "-dt", "--name", "flood", "busybox", "sh", "-c",
                  f"yes | head -c {size}; sleep 3600")
    log = None
    try:
        cid = daemon.docker("inspect", "-f", "{{.Id}}", "flood").stdout.strip()
        log = daemon.data_root / "containers" / cid / "stdout.log"
        assert wait_for(lambda: log.stat().st_size >= size, timeout=120), log.stat().st_size
        took = time.monotonic() - t0
        grown = _rss_kib(daemon) - before
        print(f"a TTY container wrote {log.stat().st_size} bytes to its log in {took:.1f} s; "
              f"daemon RSS grew {grown} KiB")
        assert grown < 64 * 1024, grown
        # The daemon stays responsive meanwhile and after.
        assert "flood" in daemon.docker("ps").stdout
    finally:
        daemon.docker("rm", "-f", "flood")


def _daemon_pid(d: Daemon) -> int:
    assert d.proc is not None
    return d.proc.pid


def _rss_kib(d: Daemon) -> int:
    for line in Path(f"/proc/{_daemon_pid(d)}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _ptmx_fds(d: Daemon) -> list[str]:
    """The daemon's open pty masters (/dev/ptmx, or /dev/pts/ptmx in a container's devpts)."""
    fd_dir = Path(f"/proc/{_daemon_pid(d)}/fd")
    out = []
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith("ptmx"):
            out.append(target)
    return out


def test_a_tty_containers_output_is_raw_in_run_logs_and_attach(daemon: Daemon) -> None:
    """One raw stream, as Docker sends a TTY's output: the docker CLI prints it as it is, and
    a multiplexing header would show up as garbage before the text."""
    p = daemon.docker("run", "-t", "--name", "rawtty", "busybox", "sh", "-c",
                      "echo out; echo err >&2")
    # Both on the one terminal, no frame header before either (runc clears the pty's
    # ONLCR, so the lines end as the program wrote them).
    assert p.stdout.replace("\r\n", "\n") == "out\nerr\n", p
    assert daemon.docker("logs", "rawtty").stdout == p.stdout
    api = daemon.client()
    assert api.containers.inspect("rawtty")["Config"]["Tty"] is True
    daemon.docker("rm", "rawtty")


def test_docker_run_i_without_a_tty_feeds_stdin_and_ends_with_it(daemon: Daemon) -> None:
    """``echo ... | docker run -i --rm busybox ...``: OpenStdin gives the process a pipe the
    attached input goes to; StdinOnce closes it when the client's input ends."""
    p = daemon.docker("run", "-i", "--rm", "busybox", "sh", "-c",
                      "while read x; do echo got:$x; done; echo end", input="one\ntwo\n",
                      timeout=60)
    assert p.stdout == "got:one\ngot:two\nend\n", p
    p = daemon.docker("run", "-i", "--rm", "busybox", "cat", input="", timeout=60)
    assert p.returncode == 0 and p.stdout == ""
    # Without -i the process reads an empty stdin, as before.
    p = daemon.docker("run", "--rm", "busybox", "sh", "-c", "cat; echo done", input="x\n",
                      timeout=60)
    assert p.stdout == "done\n"
    inspect = daemon.docker("create", "-i", "--name", "openin", "busybox", "cat").stdout
    assert inspect.strip()
    cfg = daemon.client().containers.inspect("openin")["Config"]
    assert cfg["OpenStdin"] is True and cfg["StdinOnce"] is True  # as the docker CLI sent them
    daemon.docker("rm", "openin")
