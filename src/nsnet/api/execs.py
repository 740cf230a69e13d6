"""Exec routes: create an exec instance, start it (attached or detached), inspect it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nsnet.api.app import Router, json_response
from nsnet.api.backend import Backend
from nsnet.api.parse import abs_path, as_bool, as_str, as_str_list, env_list, json_body
from nsnet.api.streams import hijack, sink_to
from nsnet.api.unsupported import EXEC_CONFIG, refuse_unsupported
from nsnet.engine.sessions import ExecConfig, ExecRecord
from nsnet.errors import Conflict, Invalid

Params = dict[str, str]


def exec_config(b: dict[str, Any]) -> ExecConfig:
    cmd = as_str_list(b.get("Cmd"), "Cmd")
    if not cmd:
        raise Invalid("No exec command specified")
    return ExecConfig(cmd=cmd, env=env_list(b.get("Env")),
                      workdir=abs_path(b.get("WorkingDir"), "WorkingDir"),
                      user=as_str(b.get("User"), "User"),
                      attach=as_bool(b.get("AttachStdout"), "AttachStdout") or
                      as_bool(b.get("AttachStderr"), "AttachStderr"))


def exec_json(e: ExecRecord) -> dict[str, Any]:
    return {
        "ID": e.id, "Running": e.running, "ExitCode": e.exit_code,
        "ProcessConfig": {"tty": False, "entrypoint": e.cmd[0], "arguments": e.cmd[1:],
                          "privileged": False, "user": e.user},
        "OpenStdin": False, "OpenStderr": e.attach, "OpenStdout": e.attach,
        "CanRemove": False, "ContainerID": e.container_id, "DetachKeys": "",
        "Pid": e.pid,
    }


def register(router: Router, backend: Backend) -> None:
    async def create(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        c = backend.find_container(p["id"])
        b = await json_body(req)
        cmd = as_str_list(b.get("Cmd"), "Cmd")
        if not cmd:
            raise Invalid("No exec command specified")
        if c.state.status != "running":
            raise Conflict(f"container {c.id} is not running")
        if as_bool(b.get("Tty"), "Tty"):
            raise Invalid("a TTY (-t) is not supported by nsnet yet")
        refuse_unsupported(b, EXEC_CONFIG)
        e = backend.create_exec(c.id, exec_config(b))
        return json_response({"Id": e.id}, status=201)

    async def start(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        e = backend.find_exec(p["id"])
        if e.running or e.exit_code is not None:
            raise Conflict(f"exec {e.id} has already been started")
        b = await json_body(req, required=False)
        session = await backend.start_exec(p["id"], as_bool(b.get("Detach"), "Detach"))
        if session is None:
            return web.Response(status=200)
        resp = await hijack(req)
        await session.pump(sink_to(resp))
        await resp.write_eof()
        return resp

    async def inspect(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return json_response(exec_json(backend.find_exec(p["id"])))

    router.add("POST", "/containers/{id}/exec", create)
    router.add("POST", "/exec/{id}/start", start)
    router.add("GET", "/exec/{id}/json", inspect)
