"""``POST /exec/{id}/start`` reads ``Detach`` as a boolean: moby's decoder refuses a string.

Before, ``{"Detach": "no"}`` (or "false", 0 is fine) was truthy in Python: the exec ran
detached and the client that asked for its output got an empty 200. Bad input is a 400.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import RawTestServer, TestClient

from nsnet.api.app import Api
from nsnet.api.execs import register
from nsnet.engine.sessions import ExecRecord, ExecSession
from nsnet.errors import NotFound


class Backend:
    """The two methods the start route reaches; ``started`` records each start's detach."""

    def __init__(self) -> None:
        self.record = ExecRecord(id="e1", container_id="c1", cmd=["true"])
        self.started: list[bool] = []

    def find_exec(self, exec_id: str) -> ExecRecord:
        if exec_id != self.record.id:
            raise NotFound(f"No such exec instance: {exec_id}")
        return self.record

    async def start_exec(self, exec_id: str, detach: bool) -> ExecSession | None:
        self.started.append(detach)
        return None


def start(body: str) -> tuple[int, Any, list[bool]]:
    backend = Backend()

    async def main() -> tuple[int, Any]:
        api = Api()
        register(api.router, backend)  # type: ignore[arg-type]
        client: TestClient[Any, Any] = TestClient(RawTestServer(api.dispatch))
        async with client:
            r = await client.post("/exec/e1/start", data=body,
                                  headers={"Content-Type": "application/json"})
            return r.status, await r.read()

    status, raw = asyncio.run(main())
    return status, raw, backend.started


def test_detach_that_is_not_a_boolean_is_a_400_that_starts_nothing() -> None:
    for body in ('{"Detach": "no"}', '{"Detach": "false"}', '{"Detach": 1}'):
        status, raw, started = start(body)
        assert status == 400 and b"Detach" in raw, (body, status, raw)
        assert started == [], body


def test_detach_true_and_absent() -> None:
    assert start('{"Detach": true}')[2] == [True]
    assert start('{"Detach": null}')[2] == [False]
