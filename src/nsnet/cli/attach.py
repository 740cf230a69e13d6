"""Attach plumbing: how `run` and `start -a` stream a container's output and end with its code.

docker's order matters and is kept: attach first, then `wait` (its headers come back at once,
so the exit cannot be missed), then start; output is copied until the stream ends, and the exit
code comes from the wait body. While attached, Ctrl-C and TERM are forwarded to the container
(docker's sig-proxy) rather than ending the CLI. Kept apart from the commands so the stream
handling can be read, and changed, in one place.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable, Iterator
from typing import Any

from nsnet.cli.base import CLIExit, binary_stream, daemon_error, warn
from nsnet.client import STDERR, APIError, Client, ClientError, FrameStream
from nsnet.exit_codes import classify_start_error


def pump(frames: Iterable[tuple[int, bytes]]) -> None:
    """Copy stream frames to our stdout/stderr as they come, like docker's stdcopy."""
    out = binary_stream("stdout")
    err = binary_stream("stderr")
    for stream, data in frames:
        target = err if stream == STDERR else out
        target.write(data)
        target.flush()


@contextlib.contextmanager
def forward_signals(client: Client, container: str) -> Iterator[None]:
    """docker's sig-proxy: Ctrl-C and TERM go to the container, which decides whether to end."""

    def handler(signum: int, _frame: Any) -> None:
        try:
            client.containers.kill(container, signal=signal.Signals(signum).name)
        except ClientError:
            pass

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, old)


def start_error(exc: ClientError) -> CLIExit:
    """docker's toStatusError: 127 for a missing program, 126 for one that cannot run, 125 for
    anything else; the words are the daemon's own list, so both report the same code."""
    msg = daemon_error(exc) if isinstance(exc, APIError) else str(exc)
    code = classify_start_error(exc.message) or 125  # docker's own failure, not the command's
    return CLIExit(code, f"nsnet: {msg}")


def run_attached(client: Client, cid: str, auto_remove: bool) -> int:
    """docker's order: attach, then wait (headers back), then start; output until the stream
    ends; the exit code comes from the wait body."""
    stream: FrameStream = client.containers.attach(cid, stream=True, stdout=True, stderr=True)
    try:
        waiter = client.containers.wait_begin(cid, "removed" if auto_remove else "next-exit")
    except ClientError:
        stream.close()
        raise
    with forward_signals(client, cid):
        try:
            client.containers.start(cid)
        except ClientError as exc:
            stream.close()
            if auto_remove:
                with contextlib.suppress(ClientError):
                    waiter.result(timeout=10)
            waiter.close()
            raise start_error(exc) from None
        try:
            pump(stream)
        finally:
            stream.close()
        try:
            status = waiter.result()
        finally:
            waiter.close()
    error = status.get("Error")
    if isinstance(error, dict) and error.get("Message"):
        warn(f"Error waiting for container: {error['Message']}")
        return 125
    return int(status.get("StatusCode") or 0)
