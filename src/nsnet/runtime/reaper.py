"""Exit codes of processes runc leaves behind: container inits and detached execs.

Containers are started with ``runc run -d`` and there is no shim process per container. The
daemon is a child subreaper (``become_subreaper``), so when ``runc run -d`` (or ``runc exec
-d``) exits, the process it started is reparented to the daemon, which learns its exit status
through a pidfd (``wait_exit``): an ordinary readable fd on the event loop, so no thread, no
SIGCHLD handler, and nothing else's children reaped by mistake.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from typing import Any, Final

from nsnet.fds import raise_fd

log = logging.getLogger("nsnet.runtime.runc")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]  # fmt: skip
_PR_SET_CHILD_SUBREAPER: Final = 36
# Docker's code when a container's exit status is lost (its init was not our child).
LOST_STATUS: Final = 255


def become_subreaper(enable: bool = True) -> None:
    """Make orphaned descendants (container inits after ``runc run -d``) our children.

    Without it they go to the host's init and their exit status is lost to us. Call once at
    daemon start, before the first container starts. ``enable=False`` undoes it (tests that
    share a process with others).
    """
    if _libc.prctl(_PR_SET_CHILD_SUBREAPER, int(enable), 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(e)}")


async def wait_exit(pid: int) -> int:
    """Wait for a process to end and reap it; Docker's exit code (signal N: 128+N).

    When the process is not our child (the daemon restarted and the container was
    reparented to the host's init), its status is not ours to read: we still wait for it
    to end, then report 255, the code Docker also reports when the status is lost.
    Call it once per pid: the first caller reaps, a second would get 255.
    """
    try:
        pidfd = raise_fd(os.pidfd_open(pid))
    except ProcessLookupError:
        return LOST_STATUS
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                await _wait_readable(loop, pidfd)
                return LOST_STATUS
            if res is not None:
                if res.si_code == os.CLD_EXITED:
                    return res.si_status
                return 128 + res.si_status
            await _wait_readable(loop, pidfd)
    finally:
        os.close(pidfd)


async def _wait_readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """A pidfd becomes readable when its process exits."""
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


class DetachedReaper:
    """Reaps detached exec'd commands in the background and keeps each one's exit code until
    its session asks (exec inspect); without it they would linger as zombies of the daemon."""

    def __init__(self) -> None:
        self._background: set[asyncio.Task[Any]] = set()
        self._detached: dict[int, tuple[int, asyncio.Task[int]]] = {}

    def reap_later(self, key: object, pid: int) -> asyncio.Task[int]:
        """Start reaping ``pid``; ``key`` (the runc process the caller holds, unique while
        it lives) is how ``take`` finds it."""

        async def reap() -> int:
            code = await wait_exit(pid)
            log.debug("detached exec pid %d exited with %d", pid, code)
            return code

        task = asyncio.get_running_loop().create_task(reap())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        self._detached[id(key)] = (pid, task)
        return task

    def take(self, key: object) -> tuple[int, asyncio.Task[int]] | None:
        """The command's own pid and a task giving its exit code, once per ``key``."""
        return self._detached.pop(id(key), None)
