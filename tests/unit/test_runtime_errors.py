"""Which failures mean "the command cannot run" (exit_codes.py), how runc's JSON log becomes
one message (runtime/errors.py), and the pidfd reaper (runtime/reaper.py), all without root."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import pytest

from nsnet.exit_codes import classify_start_error
from nsnet.runtime.errors import runc_error_text
from nsnet.runtime.reaper import DetachedReaper, wait_exit


@pytest.mark.parametrize(
    ("message", "code"),
    [
        # runc run / runc exec, as they say it on this host
        ('runc run failed: unable to start container process: exec: "nosuchcmd": '
         "executable file not found in $PATH", 127),
        ('exec failed: unable to start container process: exec: "/nope": stat /nope: '
         "no such file or directory", 127),
        ('exec: "/etc/passwd": permission denied', 126),
        ('exec: "/bin": is a directory', 126),
        ("The System Cannot Find The File Specified.", 127),  # Windows' ENOENT, any case
        ("OPEN /BIN/X: PERMISSION DENIED", 126),
        # the daemon's fault, not the command's
        ("cgroup: cannot enter cgroup: device or resource busy", None),
        ("mount overlay on /x: invalid argument", None),
        ("", None),
    ],
)
def test_classify_start_error(message: str, code: int | None) -> None:
    assert classify_start_error(message) == code


def test_runc_error_text_keeps_errors_once() -> None:
    fatal = "unable to start container process: exec: \"x\": executable file not found"
    raw = "\n".join([
        json.dumps({"level": "info", "msg": "starting"}),
        json.dumps({"level": "error", "msg": fatal}),
        json.dumps({"level": "warning", "msg": "ignored"}),
        "",
        fatal,  # printed bare as well
        json.dumps({"level": "fatal", "msg": "second"}),
        json.dumps(["valid", "json", "not", "a", "log", "entry"]),
        "plain \xff text",
    ]).encode("latin-1")
    assert runc_error_text(raw) == f"{fatal}; second; plain \ufffd text"
    assert runc_error_text(b"") == ""


def test_wait_exit_codes_of_our_children() -> None:
    async def main() -> tuple[int, int, int]:
        done = subprocess.Popen(["sh", "-c", "exit 3"])
        killed = subprocess.Popen(["sleep", "30"])
        killed.send_signal(signal.SIGKILL)
        codes = (await wait_exit(done.pid), await wait_exit(killed.pid))
        gone = await wait_exit(done.pid)  # already reaped: not ours to read any more
        return (*codes, gone)

    assert asyncio.run(main()) == (3, 128 + signal.SIGKILL, 255)


def test_detached_reaper_gives_each_code_once() -> None:
    async def main() -> tuple[int, int, object]:
        proc = subprocess.Popen(["sh", "-c", "exit 7"])
        key = object()
        reaper = DetachedReaper()
        reaper.reap_later(key, proc.pid)
        taken = reaper.take(key)
        assert taken is not None
        pid, task = taken
        return pid, await asyncio.wait_for(task, 10), reaper.take(key)

    pid, code, again = asyncio.run(main())
    assert code == 7 and again is None and pid > 0
