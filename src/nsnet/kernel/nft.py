"""nftables through libnftables in-process (ctypes), not the ``nft`` binary.

A fork of ``nft`` costs 3-10 ms per change; the library applies a whole batch as one atomic
netlink transaction in ~0.2 ms. Every libnftables call runs in one dedicated thread with a
private descriptor table (see ``_NftThread``): the library select()s on its netlink socket, which
aborts the process once that socket's number reaches 1024. A context's socket belongs to the
namespace it was opened in, so sandbox tables are written by ``run_in_namespace``, which enters
the sandbox in that thread.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from nsnet.errors import SystemError_, Unavailable
from nsnet.fds import own_fd_table
from nsnet.kernel.netns import enter_netns

T = TypeVar("T")

_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
        except OSError as e:
            raise Unavailable("libnftables.so.1 is missing: install Debian's libnftables1") from e
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        _lib = lib
    return _lib


NFT_CTX_OUTPUT_JSON = 1 << 4


class NftError(SystemError_):
    pass


Job = Callable[[int], T]


class _NftThread:
    """The one thread that calls libnftables, with a descriptor table of its own.

    libnftables select()s on its netlink socket, and glibc aborts the process if that socket's
    number is >= 1024. In this thread's private table (``fds.own_fd_table``) only libnftables'
    sockets and a namespace fd or two are ever open, so their numbers stay tiny however many
    descriptors the rest of the daemon holds. Jobs get the thread's home-namespace fd so they
    can come back after working in a sandbox. Jobs must not open descriptors for the caller:
    a number from this table means another file (or nothing) everywhere else.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Job[Any], Future[Any]]] = queue.SimpleQueue()
        self._broken: BaseException | None = None
        ready: Future[None] = Future()
        threading.Thread(target=self._main, args=(ready,), name="nsnet-nft", daemon=True).start()
        ready.result()

    def _main(self, ready: Future[None]) -> None:
        try:
            own_fd_table()
            # The thread was born in its creator's namespace, which may be a sandbox's (the
            # namespace thread): home is the main thread's, which never moves (DESIGN rule 1).
            home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            enter_netns(home)
        except BaseException as e:  # noqa: BLE001 -- reported to the creator
            ready.set_exception(e)
            return
        ready.set_result(None)
        while True:
            fn, fut = self._jobs.get()
            if not fut.set_running_or_notify_cancel():
                continue
            if self._broken is not None:
                fut.set_exception(self._broken)
                continue
            try:
                fut.set_result(fn(home))
            except BaseException as e:  # noqa: BLE001 -- handed to the caller
                fut.set_exception(e)
            try:
                enter_netns(home)  # a job that failed half-way must not strand the thread
            except OSError as e:
                self._broken = e

    def call(self, fn: Job[T]) -> T:
        """Run ``fn(home_ns_fd)`` in the thread; blocks the caller (jobs are ~0.2 ms)."""
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut.result()


_thread: _NftThread | None = None
_thread_lock = threading.Lock()


def _nft_thread() -> _NftThread:
    global _thread
    with _thread_lock:
        if _thread is None:
            _thread = _NftThread()
        return _thread


def _new_ctx(lib: ctypes.CDLL, json_output: bool) -> int:
    """In the nft thread: the netlink socket is opened here, in its current namespace."""
    ctx: int | None = lib.nft_ctx_new(0)
    if not ctx:
        raise SystemError_("nft_ctx_new failed")
    lib.nft_ctx_buffer_output(ctx)
    lib.nft_ctx_buffer_error(ctx)
    if json_output:
        lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
    return ctx


def _run(lib: ctypes.CDLL, ctx: int, commands: str) -> str:
    rc = lib.nft_run_cmd_from_buffer(ctx, commands.encode())
    out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
    err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
    if rc != 0:
        raise NftError(f"nftables: {err.strip() or 'failed'}")
    return out


class Nft:
    """One libnftables context in the daemon's own namespace, living in the nft thread."""

    def __init__(self, json_output: bool = False) -> None:
        lib = self._lib = _load()
        self._ctx: int | None = _nft_thread().call(lambda _home: _new_ctx(lib, json_output))

    def run(self, commands: str) -> str:
        """Apply ``commands`` as one atomic batch; raise with nft's own message on failure."""

        def job(_home: int) -> str:
            if self._ctx is None:
                raise SystemError_("nftables context is closed")
            return _run(self._lib, self._ctx, commands)

        return _nft_thread().call(job)

    def close(self) -> None:
        def job(_home: int) -> None:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None

        _nft_thread().call(job)


def run_in_namespace(ns_path: str, commands: str) -> str:
    """Apply ``commands`` inside the namespace pinned at ``ns_path`` (a sandbox's table).

    A context's netlink socket belongs to the namespace it was opened in, so each call opens a
    throwaway one there; the thread goes back home before its next job.
    """
    lib = _load()

    def job(_home: int) -> str:
        fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            enter_netns(fd)
        finally:
            os.close(fd)
        ctx = _new_ctx(lib, False)
        try:
            return _run(lib, ctx, commands)
        finally:
            lib.nft_ctx_free(ctx)

    return _nft_thread().call(job)


def list_json(nft_json: Nft, what: str) -> list[dict[str, Any]]:
    out = nft_json.run(f"list {what}")
    data = json.loads(out or '{"nftables": []}')
    items: list[dict[str, Any]] = data.get("nftables", [])
    return items
