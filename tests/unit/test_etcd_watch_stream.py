"""A watch stream the gateway ends with a CANCELED error (its member restarting: "grpc: the
client connection is closing") is a broken stream that resumes, not an error for the
watcher. Found once in a clean-clone CI run of tests/integration/test_etcd_kv.py; here a
fake gateway on loopback sends that message, then serves the stream again."""

from __future__ import annotations

import asyncio
import base64
import json

from aiohttp import web

from nsnet.store.etcd import EtcdKV


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


async def _serve(calls: list[int], done: asyncio.Event) -> tuple[web.AppRunner, str]:
    async def watch(req: web.Request) -> web.StreamResponse:
        calls.append(1)
        resp = web.StreamResponse()
        await resp.prepare(req)
        header = {"header": {"revision": "5"}}
        if len(calls) == 1:
            await resp.write(json.dumps({"result": {**header, "created": True}}).encode()
                             + b"\n")
            await resp.write(json.dumps({"error": {
                "grpc_code": 1, "http_code": 499,
                "message": "grpc: the client connection is closing"}}).encode() + b"\n")
            return resp
        event = {"kv": {"key": _b64("/w/after"), "value": _b64("2"), "mod_revision": "6",
                        "create_revision": "6", "version": "1"}}
        await resp.write(json.dumps({"result": {**header, "created": True}}).encode() + b"\n")
        await resp.write(json.dumps({"result": {"header": {"revision": "6"},
                                                "events": [event]}}).encode() + b"\n")
        await done.wait()  # the stream stays open until the test is over
        return resp

    app = web.Application()
    app.router.add_post("/v3/watch", watch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def test_a_canceled_watch_stream_resumes() -> None:
    async def body() -> None:
        calls: list[int] = []
        done = asyncio.Event()
        runner, url = await _serve(calls, done)
        kv = EtcdKV([url], watch_retry=5.0)
        try:
            watch = kv.watch("/w/", 5)
            events = await asyncio.wait_for(anext(watch), 5)
            assert [e.kv.key for e in events] == ["/w/after"] and len(calls) == 2
            await watch.aclose()  # type: ignore[attr-defined]
        finally:
            done.set()
            await kv.close()
            await runner.cleanup()

    asyncio.run(body())
