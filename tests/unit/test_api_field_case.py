"""Field names in request bodies match the way moby's Go decoder matches them: any case.

moby decodes a container or network create with encoding/json, which fills a struct field from
a key that equals its name case-insensitively (the last such key wins). So
``{"HostConfig": {"privileged": true}}`` gives a privileged container on Docker; nsnet read only
the exact spelling, answered 201 and ran the container unprivileged, the silent drop that
issue 8 item 5 forbids. Bodies go through the real ``json_body`` over HTTP here, then through
the same parsers the routes use; no backend, no root.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient

from nsnet.api.containers import container_create
from nsnet.api.execs import exec_config
from nsnet.api.networks import network_create
from nsnet.api.parse import json_body
from nsnet.api.unsupported import EXEC_CONFIG, refuse_unsupported
from nsnet.engine.sessions import ExecConfig
from nsnet.errors import NsnetError


def parse(convert: Callable[[dict[str, Any]], Any], body: str) -> tuple[int, Any]:
    """(200, the parsed request as a dict) or (the error's status, its message)."""

    async def handler(req: web.BaseRequest) -> web.StreamResponse:
        try:
            parsed = convert(await json_body(req))
        except NsnetError as e:
            return web.json_response({"message": e.message}, status=e.status)
        return web.json_response(dataclasses.asdict(parsed))

    async def main() -> tuple[int, Any]:
        client: TestClient[Any, Any] = TestClient(RawTestServer(handler))
        async with client:
            r = await client.post("/", data=body,
                                  headers={"Content-Type": "application/json"})
            data = await r.json()
            return r.status, data if r.status == 200 else data["message"]

    return asyncio.run(main())


def exec_request(b: dict[str, Any]) -> ExecConfig:
    """What ``POST /containers/{id}/exec`` reads of its body."""
    refuse_unsupported(b, EXEC_CONFIG)
    return exec_config(b)


def create(body: dict[str, Any] | str) -> tuple[int, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return parse(lambda b: container_create(b, ""), text)


def test_isolation_fields_in_any_case_are_refused() -> None:
    for hc in ({"privileged": True}, {"PRIVILEGED": True}, {"binds": ["/:/host"]},
               {"capAdd": ["SYS_ADMIN"]}, {"pidmode": "host"}, {"securityopt": ["x=y"]}):
        status, message = create({"Image": "busybox", "HostConfig": hc})
        assert status == 400, (hc, message)
        assert "not supported" in message, (hc, message)


def test_host_config_under_another_case_is_read_not_dropped() -> None:
    status, message = create({"Image": "busybox", "hostconfig": {"Privileged": True}})
    assert status == 400 and "HostConfig.Privileged" in message
    status, parsed = create({"Image": "busybox", "hostConfig": {"NetworkMode": "host"},
                             "env": ["A=1"], "cmd": ["true"]})
    assert status == 200
    assert (parsed["network_mode"], parsed["env"], parsed["cmd"]) == ("host", ["A=1"], ["true"])


def test_the_last_key_of_a_field_wins_as_in_go() -> None:
    status, message = create('{"Image": "busybox", '
                             '"HostConfig": {"Privileged": false, "privileged": true}}')
    assert status == 400 and "Privileged" in message
    status, parsed = create('{"Image": "busybox", "hostname": "one", "Hostname": "two"}')
    assert status == 200 and parsed["hostname"] == "two"


def test_map_keys_stay_case_sensitive() -> None:
    """Labels, options and network names are Go maps: "A" and "a" are two keys."""
    status, parsed = create({"Image": "busybox", "Labels": {"A": "1", "a": "2"}})
    assert status == 200 and parsed["labels"] == {"A": "1", "a": "2"}
    status, parsed = parse(network_create, json.dumps(
        {"Name": "n", "Options": {"Com.Docker.Network.Enable_IPv6": "true"}}))
    assert status == 200 and parsed["enable_ipv6"] is False


def test_network_and_exec_fields_in_any_case() -> None:
    status, parsed = parse(network_create, json.dumps(
        {"name": "n", "internal": True, "ipam": {"config": [{"subnet": "198.51.100.0/24"}]}}))
    assert status == 200
    assert (parsed["name"], parsed["internal"]) == ("n", True)
    assert [p["subnet"] for p in parsed["pools"]] == ["198.51.100.0/24"]
    status, message = parse(exec_request, json.dumps({"cmd": ["id"], "privileged": True}))
    assert status == 400 and "Privileged" in message
    status, parsed = parse(exec_request, json.dumps({"cmd": ["id"], "user": "nobody"}))
    assert status == 200 and (parsed["cmd"], parsed["user"]) == (["id"], "nobody")


def test_a_repeated_key_counts_at_its_last_place() -> None:
    status, message = create('{"Image": "busybox", "HostConfig": '
                             '{"privileged": true, "Privileged": false, "privileged": true}}')
    assert status == 400 and "Privileged" in message
