"""An exec whose client left keeps running: its output is dropped, never an error that would
end the session and hang up its terminal (``ExecSession._send``)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from nsnet.engine.sessions import ExecRecord, ExecSession


def test_output_after_the_client_left_is_dropped_not_raised() -> None:
    calls: list[bytes] = []

    async def gone(stream: int, data: bytes) -> None:
        calls.append(data)
        raise RuntimeError("Cannot call write() after write_eof()")

    session = ExecSession(ExecRecord(id="e", container_id="c", cmd=["sh"]),
                          cast(Any, object()))

    async def body() -> None:
        await session._send(gone, 1, b"first")
        await session._send(gone, 1, b"second")

    asyncio.run(body())
    assert calls == [b"first"]  # tried once, then nothing is sent to a gone client


def test_a_detach_stops_output_at_once() -> None:
    calls: list[bytes] = []

    async def sink(stream: int, data: bytes) -> None:
        calls.append(data)

    session = ExecSession(ExecRecord(id="e", container_id="c", cmd=["sh"]),
                          cast(Any, object()))
    session.detach()
    asyncio.run(session._send(sink, 1, b"x"))
    assert calls == []
