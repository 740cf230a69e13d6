"""The API as a translator, against a fake backend: no engine, no root, no socket.

Each test sends real HTTP through aiohttp's test server to ``nsnet.api.routes.build(fake)``
and checks both sides: what the backend was asked (typed requests, parsed filters, streams)
and what the client got (status, JSON, frames). A bad request must reach no backend method.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.test_utils import RawTestServer, TestClient

from nsnet.api.backend import Backend, Sink
from nsnet.api.routes import build
from nsnet.engine.containers import ContainerCreate
from nsnet.engine.core import EngineInfo
from nsnet.engine.events import Event, EventBus, Subscription
from nsnet.engine.networks import NetworkCreate
from nsnet.engine.sessions import ExecConfig, ExecRecord, ExecSession
from nsnet.errors import NotFound
from nsnet.model import Container, EndpointRequest, Image, Network, new_id

T = TypeVar("T")


class FakeSession(ExecSession):
    def __init__(self, record: ExecRecord, chunks: list[tuple[int, bytes]]) -> None:
        self.record = record
        self.chunks = chunks

    async def pump(self, sink: Sink) -> None:
        for kind, data in self.chunks:
            await sink(kind, data)
        self.record.exit_code = 0


class FakeBackend:
    """Holds what it is given; ``calls`` names every backend method reached, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.networks: dict[str, Network] = {}
        self.containers: dict[str, Container] = {}
        self.execs: dict[str, ExecRecord] = {}
        self.seen: dict[str, Any] = {}
        self.output: list[tuple[int, bytes]] = [(1, b"out\n"), (2, b"err\n")]
        self.events = EventBus()  # issue 11, GET /events

    def _call(self, name: str, **kw: Any) -> None:
        self.calls.append(name)
        self.seen[name] = kw

    def info(self) -> EngineInfo:
        self._call("info")
        return EngineInfo("id", len(self.containers), 0, 1, ["bridge", "null"],
                          Path("/data"), Path("/run"))

    def metrics_text(self) -> str:
        return "nsnet_up 1\n"

    async def reconcile(self) -> dict[str, Any]:
        self._call("reconcile")
        return {"links_removed": []}

    # GET /events (issue 11): the engine's own bus, which is pure.
    def subscribe_events(self, filters: dict[str, list[str]], since: int | None,
                         until: int | None) -> tuple[list[Event], Subscription]:
        self._call("subscribe_events", filters=filters, since=since, until=until)
        return self.events.subscribe(filters, since, until)

    def unsubscribe_events(self, sub: Subscription) -> None:
        self.events.unsubscribe(sub)

    def network_table(self) -> Mapping[str, Network]:
        return self.networks

    def find_network(self, ref: str) -> Network:
        for n in self.networks.values():
            if ref in (n.id, n.name):
                return n
        raise NotFound(f"network {ref} not found")

    def network_users(self, net: Network) -> list[Container]:
        return []

    def list_networks(self, filters: dict[str, list[str]]) -> list[Network]:
        self._call("list_networks", filters=filters)
        return list(self.networks.values())

    async def create_network(self, req: NetworkCreate) -> Network:
        self._call("create_network", req=req)
        n = Network(id=new_id(), name=req.name, driver=req.driver, created="2026-01-01T00:00:00Z")
        self.networks[n.id] = n
        return n

    async def remove_network(self, ref: str) -> None:
        self._call("remove_network", ref=ref)

    async def prune_networks(self, filters: dict[str, list[str]]) -> list[str]:
        self._call("prune_networks", filters=filters)
        return ["old"]

    async def connect(self, net_ref: str, c_ref: str, req: EndpointRequest) -> None:
        self._call("connect", net=net_ref, container=c_ref, req=req)

    def disconnect(self, net_ref: str, c_ref: str, force: bool) -> None:
        self._call("disconnect", net=net_ref, container=c_ref, force=force)

    def list_images(self) -> list[Image]:
        return []

    def find_image(self, ref: str) -> Image:
        raise NotFound(f"No such image: {ref}")

    async def import_image(self, chunks: AsyncIterable[bytes], repo: str | None) -> Image:
        data = b"".join([c async for c in chunks])
        self._call("import_image", data=data, repo=repo)
        return Image(id="sha256:" + "a" * 64, repo_tags=[repo or ""], created="x")

    def remove_image(self, ref: str, force: bool) -> list[dict[str, str]]:
        return [{"Deleted": ref}]

    def find_container(self, ref: str) -> Container:
        for c in self.containers.values():
            if ref in (c.id, c.name):
                return c
        raise NotFound(f"No such container: {ref}")

    def list_containers(self, show_all: bool,
                        filters: dict[str, list[str]]) -> list[Container]:
        self._call("list_containers", show_all=show_all, filters=filters)
        return list(self.containers.values())

    def create_container(self, req: ContainerCreate) -> Container:
        self._call("create_container", req=req)
        c = Container(id=new_id(), name=req.name or "c", image=req.image, image_id="",
                      created="2026-01-01T00:00:00Z")
        self.containers[c.id] = c
        return c

    async def start_container(self, ref: str) -> None:
        self._call("start_container", ref=ref)

    async def stop_container(self, ref: str, timeout: float | None = None,
                             sig: str | None = None) -> None:
        self._call("stop_container", ref=ref, timeout=timeout, sig=sig)

    async def restart_container(self, ref: str, timeout: float | None = None) -> None:
        self._call("restart_container", ref=ref, timeout=timeout)

    async def kill_container(self, ref: str, sig: str | None = None) -> None:
        self._call("kill_container", ref=ref, sig=sig)

    async def wait_container(self, ref: str, condition: str = "not-running") -> int:
        self._call("wait_container", ref=ref, condition=condition)
        return 3

    async def remove_container(self, ref: str, force: bool = False) -> None:
        self._call("remove_container", ref=ref, force=force)

    # rename, pause/unpause, top, resize (issue 11)

    async def rename_container(self, ref: str, new_name: str) -> None:
        self._call("rename_container", ref=ref, new_name=new_name)

    async def pause_container(self, ref: str) -> None:
        self._call("pause_container", ref=ref)
        self.find_container(ref).state.paused = True  # the engine's mark, rendered by the API

    async def unpause_container(self, ref: str) -> None:
        self._call("unpause_container", ref=ref)
        self.find_container(ref).state.paused = False

    def container_paused(self, c: Container) -> bool:
        return c.state.paused

    async def top_container(self, ref: str,
                            ps_args: str) -> tuple[list[str], list[list[str]]]:
        self._call("top_container", ref=ref, ps_args=ps_args)
        return ["UID", "PID", "CMD"], [["root", "7", "sleep 60"]]

    def resize_container(self, ref: str, height: int, width: int) -> None:
        self._call("resize_container", ref=ref, height=height, width=width)

    def resize_exec(self, exec_id: str, height: int, width: int) -> None:
        self._call("resize_exec", exec_id=exec_id, height=height, width=width)
        self.find_exec(exec_id)

    async def stream_logs(self, ref: str, sink: Sink, stdout: bool, stderr: bool,
                          follow: bool, tail: int | None) -> None:
        self._call("stream_logs", ref=ref, stdout=stdout, stderr=stderr, follow=follow,
                   tail=tail)
        for kind, data in self.output:
            if (kind == 1 and stdout) or (kind == 2 and stderr):
                await sink(kind, data)

    async def attach(self, ref: str, sink: Sink, stdout: bool, stderr: bool, logs: bool,
                     stream: bool) -> None:
        self._call("attach", ref=ref, logs=logs, stream=stream)
        for kind, data in self.output:
            await sink(kind, data)

    def create_exec(self, ref: str, cfg: ExecConfig) -> ExecRecord:
        self._call("create_exec", ref=ref, cfg=cfg)
        e = ExecRecord(id=new_id(), container_id=ref, cmd=cfg.cmd, env=cfg.env,
                       workdir=cfg.workdir, user=cfg.user, attach=cfg.attach)
        self.execs[e.id] = e
        return e

    def find_exec(self, exec_id: str) -> ExecRecord:
        e = self.execs.get(exec_id)
        if e is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return e

    async def start_exec(self, exec_id: str, detach: bool) -> ExecSession | None:
        self._call("start_exec", exec_id=exec_id, detach=detach)
        e = self.find_exec(exec_id)
        e.running = not detach
        return None if detach else FakeSession(e, self.output)


def _backend(fake: FakeBackend) -> Backend:
    return fake  # the fake must satisfy the protocol (checked by mypy)


def serve(fake: FakeBackend, body: Callable[[TestClient[Any, Any]], Awaitable[T]]) -> T:
    async def main() -> T:
        api = build(_backend(fake))
        client: TestClient[Any, Any] = TestClient(RawTestServer(api.dispatch))
        async with client:
            return await body(client)

    return asyncio.run(main())


def frames(raw: bytes) -> list[tuple[int, bytes]]:
    out = []
    while raw:
        kind, size = struct.unpack(">BxxxL", raw[:8])
        out.append((kind, raw[8:8 + size]))
        raw = raw[8 + size:]
    return out


def _running(fake: FakeBackend) -> Container:
    c = fake.create_container(ContainerCreate(image="busybox", name="web"))
    c.state.status = "running"
    fake.calls.clear()
    return c


# -- tests ------------------------------------------------------------------------------------


def test_network_create_translates_the_body_into_one_typed_request() -> None:
    fake = FakeBackend()
    body = {"Name": "n1", "Driver": "bridge", "Internal": True, "Labels": {"a": "b"},
            "Options": {"com.docker.network.enable_ipv6": "true"},
            "IPAM": {"Config": [{"Subnet": "198.51.100.0/24", "Gateway": "198.51.100.1",
                                 "AuxiliaryAddresses": None}]}}

    async def go(client: TestClient[Any, Any]) -> tuple[int, Any]:
        r = await client.post("/v1.45/networks/create", json=body)
        return r.status, await r.json()

    status, answer = serve(fake, go)
    assert status == 201 and answer["Warning"] == ""
    req: NetworkCreate = fake.seen["create_network"]["req"]
    assert (req.name, req.internal, req.enable_ipv6, req.labels) == ("n1", True, True,
                                                                     {"a": "b"})
    assert [(p.subnet, p.gateway, p.aux_addresses) for p in req.pools] == [
        ("198.51.100.0/24", "198.51.100.1", {})]
    assert answer["Id"] in fake.networks


def test_bad_bodies_are_400s_that_reach_no_backend_method() -> None:
    fake = FakeBackend()
    c = _running(fake)
    bad = [("/networks/create", {"Name": 5}),
           ("/networks/create", {"Name": "n", "IPAM": {"Config": {"Subnet": "x"}}}),
           ("/networks/n/connect", {"EndpointConfig": {}}),
           (f"/containers/{c.id}/exec", {"Cmd": ["sh"], "ConsoleSize": [24]}),
           ("/containers/create", {"Image": "busybox", "HostConfig": {"Privileged": True}}),
           (f"/containers/{c.id}/exec", {"Cmd": []})]

    async def go(client: TestClient[Any, Any]) -> list[tuple[int, Any]]:
        out = []
        for path, b in bad:
            r = await client.post(path, data=json.dumps(b),
                                  headers={"Content-Type": "application/json"})
            out.append((r.status, await r.json()))
        return out

    for status, answer in serve(fake, go):
        assert status == 400 and answer["message"]
    assert fake.calls == []


def test_container_list_passes_filters_and_applies_the_limit() -> None:
    fake = FakeBackend()
    for _ in range(3):
        fake.create_container(ContainerCreate(image="busybox"))

    async def go(client: TestClient[Any, Any]) -> Any:
        r = await client.get("/containers/json", params={
            "all": "1", "limit": "2", "filters": json.dumps({"label": {"a=b": True}})})
        assert r.status == 200
        return await r.json()

    answer = serve(fake, go)
    assert len(answer) == 2
    assert fake.seen["list_containers"] == {"show_all": True, "filters": {"label": ["a=b"]}}


def test_engine_errors_map_to_their_status() -> None:
    fake = FakeBackend()

    async def go(client: TestClient[Any, Any]) -> list[tuple[int, Any]]:
        out = []
        for method, path in (("GET", "/networks/nope"), ("DELETE", "/containers/nope/x"),
                             ("GET", "/v1.10/info"), ("PUT", "/info")):
            r = await client.request(method, path)
            out.append((r.status, (await r.json())["message"]))
        return out

    assert serve(fake, go) == [
        (404, "network nope not found"), (404, "page not found"),
        (400, "client version 1.10 is too old. Minimum supported API version is 1.24, "
              "please upgrade your client to a newer version"),
        (405, "method not allowed")]


def test_logs_are_framed_per_stream() -> None:
    fake = FakeBackend()
    c = _running(fake)

    async def go(client: TestClient[Any, Any]) -> tuple[int, bytes]:
        r = await client.get(f"/containers/{c.name}/logs",
                             params={"stdout": "1", "stderr": "0", "tail": "5"})
        return r.status, await r.read()

    status, raw = serve(fake, go)
    assert status == 200 and frames(raw) == [(1, b"out\n")]
    assert fake.seen["stream_logs"] == {"ref": c.id, "stdout": True, "stderr": False,
                                        "follow": False, "tail": 5}


def test_exec_create_start_inspect_through_the_backend() -> None:
    fake = FakeBackend()
    c = _running(fake)

    async def go(client: TestClient[Any, Any]) -> tuple[bytes, Any, int]:
        r = await client.post(f"/containers/{c.id}/exec",
                              json={"Cmd": ["echo", "hi"], "AttachStdout": True})
        assert r.status == 201
        eid = (await r.json())["Id"]
        r = await client.post(f"/exec/{eid}/start", json={"Detach": False})
        raw = await r.read()
        info = await (await client.get(f"/exec/{eid}/json")).json()
        again = await client.post(f"/exec/{eid}/start", json={})
        return raw, info, again.status

    raw, info, again = serve(fake, go)
    assert frames(raw) == fake.output
    assert info["ExitCode"] == 0 and info["ProcessConfig"]["arguments"] == ["hi"]
    assert again == 409
    cfg: ExecConfig = fake.seen["create_exec"]["cfg"]
    assert cfg.cmd == ["echo", "hi"] and cfg.attach


def test_image_import_streams_the_upload_to_the_backend() -> None:
    fake = FakeBackend()
    payload = b"x" * (3 << 20)

    async def go(client: TestClient[Any, Any]) -> tuple[int, bytes]:
        r = await client.post("/images/create",
                              params={"fromSrc": "-", "repo": "mine", "tag": "v1"},
                              data=payload)
        return r.status, await r.read()

    status, body = serve(fake, go)
    assert status == 200 and b"sha256:" in body
    assert fake.seen["import_image"] == {"data": payload, "repo": "mine:v1"}


def test_wait_sends_headers_then_the_exit_code() -> None:
    fake = FakeBackend()
    c = _running(fake)

    async def go(client: TestClient[Any, Any]) -> Any:
        r = await client.post(f"/containers/{c.id}/wait", params={"condition": "next-exit"})
        return await r.json()

    assert serve(fake, go) == {"Error": None, "StatusCode": 3}
    assert fake.seen["wait_container"] == {"ref": c.id, "condition": "next-exit"}


def test_every_route_is_registered_once() -> None:
    routes = build(_backend(FakeBackend())).router.routes()
    assert len(routes) == len(set(routes)) > 30
