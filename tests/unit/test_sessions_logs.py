"""Logs are the container's to size: read and sent in chunks, tail found from the end.

Before: the whole remainder of a log file was read into memory on the event loop for every
``logs``/``attach`` call, so a container writing gigabytes made each call a multi-gigabyte
allocation and a long stall of the loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nsnet.engine import sessions
from nsnet.engine.sessions import _send_from, _tail_start


def collect(path: Path, start: int) -> tuple[list[bytes], int]:
    got: list[bytes] = []

    async def sink(stream: int, data: bytes) -> None:
        got.append(data)

    end = asyncio.run(_send_from(path, start, 1, sink))
    return got, end


def test_a_big_log_goes_out_in_bounded_chunks(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "CHUNK", 1000)
    log = tmp_path / "stdout.log"
    log.write_bytes(b"x" * 10_500)
    chunks, end = collect(log, 500)
    assert end == 10_500 and b"".join(chunks) == b"x" * 10_000
    assert max(len(c) for c in chunks) <= 1000


@pytest.mark.parametrize(("text", "tail", "want"), [
    (b"a\nb\nc\n", 2, b"b\nc\n"),
    (b"a\nb\nc", 2, b"b\nc"),
    (b"a\nb\nc\n", 0, b""),
    (b"a\nb\nc\n", 10, b"a\nb\nc\n"),
    (b"", 3, b""),
    (b"\n\n\n", 2, b"\n\n"),
])
def test_tail_matches_splitlines(tmp_path: Path, text: bytes, tail: int, want: bytes) -> None:
    log = tmp_path / "l"
    log.write_bytes(text)
    assert text[_tail_start(log, tail):] == want
    lines = text.splitlines(keepends=True)
    assert want == (b"".join(lines[-tail:]) if tail else b"")


def test_tail_across_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "CHUNK", 7)
    text = b"".join(f"line {i}\n".encode() for i in range(200))
    log = tmp_path / "l"
    log.write_bytes(text)
    for tail in (1, 5, 37, 199, 200, 500):
        assert text[_tail_start(log, tail):] == b"".join(text.splitlines(True)[-tail:])


def test_exec_records_go_with_their_container() -> None:
    """Before: every exec create added a record that nothing ever removed."""
    from typing import Any, cast

    from nsnet.engine.registry import Readers, Registry
    from nsnet.engine.sessions import ExecConfig, Sessions
    from nsnet.model import Container, ContainerState
    from nsnet.testing.fake_store import MemoryStore

    registry = Registry(MemoryStore())
    s = Sessions(registry, cast(Any, None), Readers())
    c = Container(id="c" * 64, name="a", image="busybox", image_id="", created="",
                  state=ContainerState(status="running"))
    registry.containers[c.id] = c
    first = [s.create_exec(c.id, ExecConfig(cmd=["true"])).id for _ in range(3)]
    d = Container(id="d" * 64, name="b", image="busybox", image_id="", created="",
                  state=ContainerState(status="running"))
    registry.containers[d.id] = d
    del registry.containers[c.id]  # removed
    kept = s.create_exec(d.id, ExecConfig(cmd=["true"])).id
    assert set(s.execs) == {kept}
    assert not set(first) & set(s.execs)
