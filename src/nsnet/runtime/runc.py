"""The OCI runtime driver: bundles on overlayfs, and runc calls.

Containers are started with ``runc run -d``: no shim process per container. The daemon is a
child subreaper, so when ``runc run -d`` exits the container's init is reparented to the
daemon, which then learns its exit status with a pidfd (``reaper.wait_exit``).

Layout (``cid`` is the container id)::

    <exec_root>/runc/                     runc's state (--root), private to this daemon
    <exec_root>/containers/<cid>/bundle/  config.json, rootfs/ (the overlay mount), pid
    <data_root>/containers/<cid>/         upper/, work/ (the writable layer), stdout.log,
                                          stderr.log

A TTY container or exec gets a pty from runc (``--console-socket``, see ``console``): the
daemon keeps the master, copies a container's output into stdout.log (attach and logs read it
there, as for any container) and writes attached input to it.

Nothing here forks per operation except runc itself: config.json is built by the pure
``oci_spec`` and written in Python, the overlay is mounted with mount(2) (``mounts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Final

from nsnet.errors import Invalid, SystemError_
from nsnet.runtime.bundles import PRIVATE_FILE_MODE, Bundles, check_id
from nsnet.runtime.console import (
    Console,
    InteractiveExec,
    copy_to_file,
    drain_to_file,
    listen_console_socket,
    set_window_size,
    take_master_now,
)
from nsnet.runtime.errors import NOT_RUNNING, runc_error_text
from nsnet.runtime.oci_spec import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    NEW_NETNS,
    HostFacts,
    ProcessSpec,
    check_cwd,
    process_dict,
)
from nsnet.runtime.reaper import DetachedReaper, become_subreaper, wait_exit
from nsnet.runtime.seccomp import kernel_version
from nsnet.runtime.users import lookup_user_async

# Where the engine and the tests have always found them.
__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_PATH",
    "NEW_NETNS",
    "ProcessSpec",
    "Runc",
    "become_subreaper",
    "host_facts",
]

_CPU_SYSFS: Final = "/sys/devices/system/cpu"

def _thermal_throttle_paths() -> tuple[str, ...]:
    """The per-CPU thermal_throttle directories this host has: Docker masks those present,
    and sysfs only has them on some CPUs (Intel's thermal driver)."""
    try:
        names = os.listdir(_CPU_SYSFS)
    except OSError:
        return ()
    cpus = sorted((n for n in names if re.fullmatch(r"cpu\d+", n)), key=lambda n: int(n[3:]))
    return tuple(
        p for p in (f"{_CPU_SYSFS}/{n}/thermal_throttle" for n in cpus) if os.path.isdir(p)
    )


def host_facts() -> HostFacts:
    """The host facts the spec depends on, read once per daemon, not per container."""
    uname = os.uname()
    return HostFacts(uname.machine, kernel_version(uname.release), _thermal_throttle_paths())


class Runc:
    """runc for one daemon: its own ``--root``, bundles and writable layers."""

    def __init__(
        self,
        exec_root: Path,
        data_root: Path,
        runc_binary: str = "runc",
        cgroup_parent: str = "",
    ) -> None:
        """``cgroup_parent`` "" puts each container in a cgroup below the daemon's own (so a
        supervisor's limits and kill-on-stop cover the containers too); an absolute path such
        as "/nsnet" gives Docker's layout, where containers outlive a daemon stopped by
        systemd."""
        self.exec_root = Path(exec_root)
        self.data_root = Path(data_root)
        self.state_root = self.exec_root / "runc"
        # Resolved once: runc is exec'd on every start, and a PATH search per call adds up.
        self.runc_binary = shutil.which(runc_binary) or runc_binary
        # Host facts the seccomp profile and masks depend on: read once, not per container.
        self.bundles = Bundles(self.exec_root, self.data_root, cgroup_parent, host_facts())
        self._reaper = DetachedReaper()
        self.state_root.mkdir(parents=True, exist_ok=True)
        # Containers prepared with a terminal, and the pty masters of those running.
        self._tty: set[str] = set()
        self.consoles: dict[str, Console] = {}
        # ``docker run -i`` without a TTY: the write end of the container's stdin pipe.
        self.stdins: dict[str, Console] = {}
        self._want_stdin: set[str] = set()
        self._console_copies: dict[str, asyncio.Task[None]] = {}

    # ---- files (``bundles``) -----------------------------------------------------------

    def bundle_dir(self, cid: str) -> Path:
        return self.bundles.bundle_dir(cid)

    def data_dir(self, cid: str) -> Path:
        return self.bundles.data_dir(cid)

    def log_paths(self, cid: str) -> tuple[Path, Path]:
        return self.bundles.log_paths(cid)

    def private_files(self) -> list[Path]:
        """config.json and logs of every container on disk, for the daemon to make root-only
        at start (nsnet.file_modes)."""
        return self.bundles.private_files()

    def cgroups_path(self, cid: str) -> str:
        return self.bundles.cgroups_path(cid)

    def prepare(
        self,
        cid: str,
        rootfs_lower: Path,
        process: ProcessSpec,
        hostname: str,
        netns_path: str | None,
        bind_files: dict[str, Path],
        readonly_binds: bool = False,
    ) -> Path:
        """Mount the container's root and write its config.json (``Bundles.prepare``); a
        ``tty`` process gets ``terminal: true`` there, and ``start`` a console socket."""
        bundle = self.bundles.prepare(
            cid, rootfs_lower, process, hostname, netns_path, bind_files, readonly_binds
        )
        self._tty.discard(cid)
        if process.tty:  # its config.json says terminal: true (oci_spec.process_dict)
            self._tty.add(cid)
        return bundle

    def remove_data(self, cid: str) -> None:
        """Drop the writable layer and logs (``Bundles.remove_data``). Idempotent."""
        self.bundles.remove_data(cid)

    # ---- processes -----------------------------------------------------------------------

    def _base_args(self) -> list[str]:
        return [self.runc_binary, "--root", str(self.state_root)]

    async def _runc(self, *args: str) -> tuple[int, bytes, str]:
        """A short runc command; errors come back as text (its JSON log on stderr)."""
        proc = await asyncio.create_subprocess_exec(
            *self._base_args(),
            "--log-format",
            "json",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out, runc_error_text(err)

    async def start(self, cid: str) -> int:
        """``runc run -d``; returns the container init's host pid.

        runc hands its own stdout/stderr to the container, so those are the log files, and
        runc's errors go to a ``--log`` file instead. On failure runc has also printed the
        error to its stderr, i.e. into stderr.log: that tail is cut off again, so a failed
        start leaves no runc text in the container's log.
        """
        bundle = self.bundle_dir(cid)
        out_path, err_path = self.log_paths(cid)
        pid_file = bundle / "pid"
        runc_log = bundle / "runc.log"
        console_args: list[str] = []
        console_sock = None
        console_path = self._console_socket_path()
        if cid in self._tty:
            console_sock = listen_console_socket(console_path)
            console_args = ["--console-socket", str(console_path)]
        self.close_stdin(cid)
        stdin_r = None
        if cid in self._want_stdin and cid not in self._tty:
            self._want_stdin.discard(cid)
            stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
            self.stdins[cid] = Console(stdin_w)  # only ever written
        try:
            try:
                pid = await self._run_detached(cid, bundle, out_path, err_path, pid_file,
                                               runc_log, console_args, stdin_r)
            except BaseException:
                self.close_stdin(cid)
                raise
            if console_sock is not None:
                self._keep_console(cid, Console(take_master_now(console_sock)), out_path)
        finally:
            if stdin_r is not None:
                os.close(stdin_r)  # the container holds its own copy now
            if console_sock is not None:
                console_sock.close()
                with contextlib.suppress(FileNotFoundError):
                    console_path.unlink()
        return pid

    def _console_socket_path(self) -> Path:
        """A fresh socket path short enough for sun_path (108 bytes): a bundle's path is
        not (it holds the 64-character id)."""
        d = self.exec_root / "console"
        d.mkdir(mode=0o700, exist_ok=True)
        return d / f"{secrets.token_hex(6)}.sock"

    def _keep_console(self, cid: str, console: Console, out_path: Path) -> None:
        """The master of a TTY container's pty, copied to its log from now on."""
        self.consoles[cid] = console
        self._console_copies[cid] = asyncio.create_task(
            copy_to_file(console, out_path, PRIVATE_FILE_MODE))

    def open_stdin(self, cid: str) -> None:
        """The next ``start`` of ``cid`` gives its process a stdin pipe (``stdin``)."""
        self._want_stdin.add(cid)

    def stdin(self, cid: str) -> Console | None:
        """The write end of a running container's stdin pipe (None without one)."""
        return self.stdins.get(cid)

    def close_stdin(self, cid: str) -> None:
        """End of input for the container (``StdinOnce``, or it went away)."""
        pipe = self.stdins.pop(cid, None)
        if pipe is not None:
            pipe.close()

    def console(self, cid: str) -> Console | None:
        """The pty master of a running TTY container (None without a terminal)."""
        return self.consoles.get(cid)

    def _drop_console(self, cid: str) -> None:
        """The output still in the pty goes to the log, then the master is closed."""
        self.close_stdin(cid)
        self._tty.discard(cid)
        console = self.consoles.pop(cid, None)
        task = self._console_copies.pop(cid, None)
        if console is None:
            return
        with contextlib.suppress(OSError):
            drain_to_file(console, self.log_paths(cid)[0], PRIVATE_FILE_MODE)
        console.close()
        if task is not None:
            task.cancel()

    async def _run_detached(self, cid: str, bundle: Path, out_path: Path, err_path: Path,
                            pid_file: Path, runc_log: Path, console_args: list[str],
                            stdin_fd: int | None = None) -> int:
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        with contextlib.suppress(FileNotFoundError):
            runc_log.unlink()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        out_fd = os.open(out_path, flags, PRIVATE_FILE_MODE)
        try:
            err_fd = os.open(err_path, flags, PRIVATE_FILE_MODE)
        except BaseException:
            os.close(out_fd)
            raise
        try:
            # A log kept from an older version (or a restart) may have been made 0640.
            os.fchmod(out_fd, PRIVATE_FILE_MODE)
            os.fchmod(err_fd, PRIVATE_FILE_MODE)
            err_size = os.fstat(err_fd).st_size
            proc = await asyncio.create_subprocess_exec(
                *self._base_args(),
                "--log",
                str(runc_log),
                "--log-format",
                "json",
                "run",
                "--detach",
                "--pid-file",
                str(pid_file),
                *console_args,
                "--bundle",
                str(bundle),
                cid,
                stdin=asyncio.subprocess.DEVNULL if stdin_fd is None else stdin_fd,
                stdout=out_fd,
                stderr=err_fd,
            )
        finally:
            os.close(out_fd)
            os.close(err_fd)
        rc = await proc.wait()
        if rc != 0:
            printed = b""
            with contextlib.suppress(OSError), open(err_path, "rb+") as f:
                f.seek(err_size)
                printed = f.read(1 << 16)
                f.truncate(err_size)
            logged = b""
            with contextlib.suppress(OSError):
                logged = runc_log.read_bytes()
            msg = runc_error_text(logged) or runc_error_text(printed)
            raise SystemError_(msg or f"runc run exited with {rc}")
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError) as e:
            raise SystemError_(f"runc run did not leave a pid for {cid}: {e}") from e

    async def wait_exit(self, pid: int) -> int:
        """Wait for a container init to end and reap it (``reaper.wait_exit``): Docker's exit
        code, 255 when its status is not ours to read. Call it once per pid."""
        return await wait_exit(pid)

    async def kill(self, cid: str, sig: int) -> None:
        """Signal the container's init; a container already gone is not an error (stop races
        the process's own exit)."""
        check_id(cid)
        rc, _, err = await self._runc("kill", cid, str(int(sig)))
        if rc != 0 and not any(s in err for s in NOT_RUNNING):
            raise SystemError_(f"runc kill {cid}: {err or rc}")

    async def delete(self, cid: str) -> None:
        """Forget the container in runc, unmount its root, remove the bundle. Idempotent: it
        is the undo of start and runs again at reconcile."""
        check_id(cid)
        rc, _, err = await self._runc("delete", "--force", cid)
        self._drop_console(cid)
        self.bundles.remove_bundle(cid)
        if rc != 0 and "does not exist" not in err:
            raise SystemError_(f"runc delete {cid}: {err or rc}")

    async def pause(self, cid: str) -> None:
        """Freeze every process of the container (runc's cgroup freezer). The processes keep
        their memory and sockets; signals other than SIGKILL wait for ``resume``."""
        check_id(cid)
        rc, _, err = await self._runc("pause", cid)
        if rc != 0:
            raise SystemError_(f"runc pause {cid}: {err or rc}")

    async def resume(self, cid: str) -> None:
        """Thaw a container frozen by ``pause``."""
        check_id(cid)
        rc, _, err = await self._runc("resume", cid)
        if rc != 0:
            raise SystemError_(f"runc resume {cid}: {err or rc}")

    async def pids(self, cid: str) -> list[int]:
        """Host pids of every process in the container's cgroup (``runc ps --format json``):
        exec'd commands included, which the init's pid alone would miss."""
        check_id(cid)
        rc, out, err = await self._runc("ps", "--format", "json", cid)
        if rc != 0:
            raise SystemError_(f"runc ps {cid}: {err or rc}")
        try:
            data = json.loads(out or b"null")
        except ValueError as e:
            raise SystemError_(f"runc ps {cid}: unreadable output: {e}") from e
        if data is None:
            return []
        if not isinstance(data, list) or not all(isinstance(p, int) for p in data):
            raise SystemError_(f"runc ps {cid}: unexpected output")
        return list(data)

    async def top(self, cid: str, ps_args: list[str]) -> tuple[list[str], list[list[str]]]:
        """The host's ``ps`` over the container's processes, as moby's ``ContainerTop`` runs
        it: the arguments go to ps as argv (never a shell), first with ``-q <pids>`` and,
        when ps refuses that combination (``f`` and ``q`` do not mix), again without; the
        output is then cut down to the container's pids by its PID column."""
        pids = await self.pids(cid)
        rc, out, err = await _run_ps([*ps_args, "-q", ",".join(map(str, pids))])
        if rc != 0:
            rc, out, err = await _run_ps(ps_args)
            if rc != 0:
                first = err.decode("utf-8", "replace").strip().splitlines()
                raise SystemError_("ps: " + (first[0] if first else f"exit status {rc}"))
        return parse_ps_output(out.decode("utf-8", "replace"), set(pids))

    async def state(self, cid: str) -> dict[str, Any] | None:
        check_id(cid)
        rc, out, err = await self._runc("state", cid)
        if rc == 0:
            result: dict[str, Any] = json.loads(out)
            return result
        if "does not exist" in err:
            return None
        raise SystemError_(f"runc state {cid}: {err or rc}")

    async def exec(
        self, cid: str, process: ProcessSpec, detach: bool
    ) -> asyncio.subprocess.Process:
        """``runc exec``. Attached: the returned process's stdout/stderr are pipes carrying the
        command's output (and runc's own error text if the command could not start); its exit
        code is the command's. Detached: returns once the command runs (already waited; a
        failure to start raises SystemError_), and the command is reaped in the background.

        The process description goes through a memfd (``--process /proc/self/fd/N``), so
        there is no temporary file to clean up when the caller walks away.
        """
        if not process.args:
            raise Invalid("No exec command specified")
        check_cwd(process.cwd)
        bundle = self.bundle_dir(cid)
        rootfs = bundle / "rootfs"
        uid, gid, extra = await lookup_user_async(rootfs, process.user)
        spec = process_dict(process, uid, gid, extra)
        memfd = os.memfd_create("nsnet-exec-process", os.MFD_CLOEXEC)
        try:
            os.write(memfd, json.dumps(spec).encode())
            process_arg = f"/proc/self/fd/{memfd}"
            if not detach:
                # --log /dev/null: runc then prints only its final error, as plain text, on
                # stderr (without --log it prints logrus lines with timestamps instead).
                return await asyncio.create_subprocess_exec(
                    *self._base_args(),
                    "--log",
                    "/dev/null",
                    "exec",
                    "--process",
                    process_arg,
                    cid,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    pass_fds=(memfd,),
                )
            token = secrets.token_hex(6)
            pid_file = bundle / f"exec-{token}.pid"
            runc_log = bundle / f"exec-{token}.log"
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._base_args(),
                    "--log",
                    str(runc_log),
                    "--log-format",
                    "json",
                    "exec",
                    "--detach",
                    "--pid-file",
                    str(pid_file),
                    "--process",
                    process_arg,
                    cid,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    pass_fds=(memfd,),
                )
                rc = await proc.wait()
                if rc != 0:
                    logged = b""
                    with contextlib.suppress(OSError):
                        logged = runc_log.read_bytes()
                    raise SystemError_(runc_error_text(logged) or f"runc exec exited with {rc}")
                pid = int(pid_file.read_text().strip())
            finally:
                for p in (pid_file, runc_log):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
            # Keyed by the runc process the caller holds: its pid is unique while it lives.
            self._reaper.reap_later(proc, pid)
            return proc
        finally:
            os.close(memfd)

    async def exec_interactive(
        self, cid: str, process: ProcessSpec, rows: int = 0, cols: int = 0
    ) -> InteractiveExec:
        """An attached exec that takes input. Without ``process.tty`` the command's stdin is
        a pipe (``proc.stdin``) and its exit code runc's. With it, runc refuses a console
        socket unless it detaches (it would proxy its own stdio instead), so the command is
        started as a detached exec on a new pty of ``rows`` x ``cols`` (0: the kernel's
        default) whose master runc sends us, and reaped by pid like any detached exec."""
        if not process.args:
            raise Invalid("No exec command specified")
        check_cwd(process.cwd)
        bundle = self.bundle_dir(cid)
        uid, gid, extra = await lookup_user_async(bundle / "rootfs", process.user)
        spec = process_dict(process, uid, gid, extra)
        if process.tty and rows and cols:
            spec["consoleSize"] = {"height": min(rows, 0xFFFF), "width": min(cols, 0xFFFF)}
        memfd = os.memfd_create("nsnet-exec-process", os.MFD_CLOEXEC)
        try:
            os.write(memfd, json.dumps(spec).encode())
            process_arg = f"/proc/self/fd/{memfd}"
            if not process.tty:
                proc = await asyncio.create_subprocess_exec(
                    *self._base_args(), "--log", "/dev/null", "exec", "--process", process_arg,
                    cid, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, pass_fds=(memfd,))
                return InteractiveExec(proc, proc.pid or 0)
            return await self._exec_on_console(cid, bundle, process_arg, memfd)
        finally:
            os.close(memfd)

    async def _exec_on_console(self, cid: str, bundle: Path, process_arg: str,
                               memfd: int) -> InteractiveExec:
        token = secrets.token_hex(6)
        pid_file = bundle / f"exec-{token}.pid"
        runc_log = bundle / f"exec-{token}.log"
        sock_path = self._console_socket_path()
        sock = listen_console_socket(sock_path)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._base_args(), "--log", str(runc_log), "--log-format", "json", "exec",
                "--detach", "--pid-file", str(pid_file), "--console-socket", str(sock_path),
                "--process", process_arg, cid, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                pass_fds=(memfd,))
            rc = await proc.wait()
            if rc != 0:
                logged = b""
                with contextlib.suppress(OSError):
                    logged = runc_log.read_bytes()
                raise SystemError_(runc_error_text(logged) or f"runc exec exited with {rc}")
            console = Console(take_master_now(sock))
            try:
                pid = int(pid_file.read_text().strip())
            except BaseException:
                console.close()
                raise
        finally:
            sock.close()
            for p in (sock_path, pid_file, runc_log):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        exit_task = self._reaper.reap_later(proc, pid)
        self._reaper.take(proc)  # the task is the session's: no entry left behind per exec
        return InteractiveExec(proc, pid, console, exit_task)

    def resize_console(self, cid: str, rows: int, cols: int) -> None:
        """Size a TTY container's terminal; a container without one has nothing to size."""
        console = self.consoles.get(cid)
        if console is not None:
            set_window_size(console.fd, rows, cols)

    def take_detached(
        self, proc: asyncio.subprocess.Process
    ) -> tuple[int, asyncio.Task[int]] | None:
        """For a detached exec: the command's own pid and a task giving its exit code."""
        return self._reaper.take(proc)

    def list_ids(self) -> list[str]:
        """Containers runc keeps under our --root, read from its state dir (no fork)."""
        try:
            entries = list(os.scandir(self.state_root))
        except FileNotFoundError:
            return []
        return sorted(
            e.name
            for e in entries
            if e.is_dir(follow_symlinks=False)
            and os.path.exists(os.path.join(e.path, "state.json"))
        )


async def _run_ps(args: list[str]) -> tuple[int, bytes, bytes]:
    """``ps`` from the host's PATH with ``args`` as argv; C locale so the titles are ps's
    own and the columns split on ASCII blanks."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
    try:
        proc = await asyncio.create_subprocess_exec(
            "ps", *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
    except OSError as e:
        raise SystemError_(f"ps: {e}") from e
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


def parse_ps_output(output: str, pids: set[int]) -> tuple[list[str], list[list[str]]]:
    """``ps`` text to Docker's ``Titles`` and ``Processes``: the rows whose PID column is one
    of ``pids``; the fields beyond the titles (a command line's words) are joined into the
    last one with single blanks, as moby's parsePSOutput does."""
    lines = output.splitlines()
    if not lines:
        raise SystemError_("ps printed nothing")
    titles = lines[0].split()
    try:
        pid_col = titles.index("PID")
    except ValueError:
        raise SystemError_("Couldn't find PID field in ps output") from None
    rows: list[list[str]] = []
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) <= pid_col:
            continue
        try:
            pid = int(fields[pid_col])
        except ValueError:
            raise SystemError_(f"Unexpected pid '{fields[pid_col]}' in ps output") from None
        if pid in pids:
            n = len(titles)
            rows.append([*fields[: n - 1], " ".join(fields[n - 1 :])])
    return titles, rows
