"""Exec routes: create an exec instance, start it (attached or detached), inspect it.

``Tty`` runs the command on a pty (its output one raw stream); ``AttachStdin`` makes the
hijacked connection its input, with or without a TTY (docker-compose's ``exec -T`` sets it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from nsnet.api import detach_keys
from nsnet.api.app import Router, json_response
from nsnet.api.backend import Backend
from nsnet.api.parse import abs_path, as_bool, as_str, as_str_list, env_list, json_body
from nsnet.api.streams import InputSink, hijack, sink_to
from nsnet.api.unsupported import EXEC_CONFIG, refuse_unsupported
from nsnet.engine.sessions import ExecConfig, ExecRecord
from nsnet.errors import Conflict, Invalid

Params = dict[str, str]


def console_size(v: Any, what: str = "ConsoleSize") -> tuple[int, int]:
    """Docker's ``[height, width]``; null or absent is (0, 0), the kernel's default."""
    if v is None:
        return 0, 0
    if not (isinstance(v, list) and len(v) == 2 and
            all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 32
                for n in v)):
        raise Invalid(f"{what} must be [height, width], two numbers from 0 to 4294967295")
    return v[0], v[1]


def exec_config(b: dict[str, Any]) -> ExecConfig:
    cmd = as_str_list(b.get("Cmd"), "Cmd")
    if not cmd:
        raise Invalid("No exec command specified")
    rows, cols = console_size(b.get("ConsoleSize"))
    return ExecConfig(cmd=cmd, env=env_list(b.get("Env")),
                      workdir=abs_path(b.get("WorkingDir"), "WorkingDir"),
                      user=as_str(b.get("User"), "User"),
                      attach=as_bool(b.get("AttachStdout"), "AttachStdout") or
                      as_bool(b.get("AttachStderr"), "AttachStderr"),
                      tty=as_bool(b.get("Tty"), "Tty"),
                      stdin=as_bool(b.get("AttachStdin"), "AttachStdin"),
                      rows=rows, cols=cols, detach_keys=_detach_keys(b.get("DetachKeys")))


def _detach_keys(v: Any) -> str:
    """Checked now (moby's 400 at create), used when the exec is started with stdin."""
    keys = as_str(v, "DetachKeys")
    detach_keys.parse(keys)
    return keys


def exec_json(e: ExecRecord) -> dict[str, Any]:
    return {
        "ID": e.id, "Running": e.running, "ExitCode": e.exit_code,
        "ProcessConfig": {"tty": e.tty, "entrypoint": e.cmd[0], "arguments": e.cmd[1:],
                          "privileged": False, "user": e.user},
        "OpenStdin": e.stdin, "OpenStderr": e.attach, "OpenStdout": e.attach,
        "CanRemove": False, "ContainerID": e.container_id, "DetachKeys": e.detach_keys,
        "Pid": e.pid,
    }


def register(router: Router, backend: Backend) -> None:
    pumps: set[asyncio.Future[None]] = set()

    async def create(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        c = backend.find_container(p["id"])
        b = await json_body(req)
        cmd = as_str_list(b.get("Cmd"), "Cmd")
        if not cmd:
            raise Invalid("No exec command specified")
        if c.state.status != "running":
            raise Conflict(f"container {c.id} is not running")
        refuse_unsupported(b, EXEC_CONFIG)
        cfg = exec_config(b)
        e = backend.create_exec(c.id, cfg)
        return json_response({"Id": e.id}, status=201)

    async def start(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        e = backend.find_exec(p["id"])
        if e.running or e.exit_code is not None:
            raise Conflict(f"exec {e.id} has already been started")
        b = await json_body(req, required=False)
        console_size(b.get("ConsoleSize"))  # checked as Docker checks it; create's size is used
        session = await backend.start_exec(p["id"], as_bool(b.get("Detach"), "Detach"))
        if session is None:
            return web.Response(status=200)
        keys = detach_keys.parse(e.detach_keys)
        source = InputSink(req, raw=e.tty, detach_keys=keys) if e.stdin else None
        resp = await hijack(req, tty=e.tty)
        # The session outlives this request: a client that leaves or detaches leaves the
        # command running (ExecSession.detach), so the pump is not cancelled with it.
        pump = asyncio.ensure_future(
            session.pump(source.start(resp) if source else sink_to(resp, raw=e.tty)))
        pumps.add(pump)
        pump.add_done_callback(pumps.discard)
        try:
            if source is None:
                await asyncio.shield(pump)
            else:
                detached = asyncio.ensure_future(source.detached.wait())
                try:
                    await asyncio.wait({pump, detached}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    detached.cancel()
                if not pump.done():
                    session.detach()
                else:
                    pump.result()
        except asyncio.CancelledError:
            session.detach()
            raise
        await resp.write_eof()
        return resp

    async def inspect(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return json_response(exec_json(backend.find_exec(p["id"])))

    router.add("POST", "/containers/{id}/exec", create)
    router.add("POST", "/exec/{id}/start", start)
    router.add("GET", "/exec/{id}/json", inspect)
