"""Container routes: create, list, inspect, the lifecycle, wait, logs and attach, and the
control calls (rename, pause/unpause, top, resize)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from nsnet.api import detach_keys, render
from nsnet.api.app import Router, json_response, require_int, std_headers
from nsnet.api.backend import Backend
from nsnet.api.parse import (
    abs_path,
    as_bool,
    as_dict,
    as_str,
    as_str_dict,
    as_str_list,
    endpoint_request,
    env_list,
    exposed_ports,
    extra_hosts,
    filters,
    hostname,
    json_body,
    links_list,
    mac_address,
    nameserver_list,
    port_bindings,
    qbool,
    word_list,
)
from nsnet.api.streams import MULTIPLEXED, RAW, InputSink, hijack, sink_to
from nsnet.api.unsupported import CONFIG, HOST_CONFIG, refuse_unsupported
from nsnet.engine.containers import ContainerCreate
from nsnet.errors import Invalid
from nsnet.model import EndpointRequest

Params = dict[str, str]
WAIT_CONDITIONS = ("", "not-running", "next-exit", "removed")


def _endpoints(b: dict[str, Any]) -> dict[str, EndpointRequest]:
    nc = as_dict(b.get("NetworkingConfig"), "NetworkingConfig")
    eps_raw = as_dict(nc.get("EndpointsConfig"), "EndpointsConfig")
    endpoints: dict[str, EndpointRequest] = {}
    for k, v in eps_raw.items():
        if v is None:
            raise Invalid(f"invalid config for network {k}: EndpointsConfig is nil")
        endpoints[k] = endpoint_request(v, f"EndpointsConfig[{k}]")
    return endpoints


def _container_mac(b: dict[str, Any], mode: str,
                   endpoints: dict[str, EndpointRequest]) -> None:
    """API < 1.44 (docker-py's mac_address): the container-wide MAC belongs to the
    NetworkMode network's endpoint, as moby migrates it."""
    mac = mac_address(b.get("MacAddress"), "MacAddress")
    if not mac:
        return
    if mode in ("host", "none") or mode.startswith("container:"):
        raise Invalid(f"conflicting options: MacAddress and the network mode {mode}")
    key = mode
    if mode == "default" and "default" not in endpoints:
        key = "bridge"
    er = endpoints.setdefault(key, EndpointRequest())
    if er.mac_address and er.mac_address.lower() != mac.lower():
        raise Invalid(f"conflicting MacAddress ({mac}) and EndpointsConfig[{key}]."
                      f"MacAddress ({er.mac_address})")
    er.mac_address = mac


def container_create(b: dict[str, Any], name: str) -> ContainerCreate:
    """A ``POST /containers/create`` body, checked to shape; nothing nsnet would silently
    drop (see nsnet.api.unsupported)."""
    image = b.get("Image")
    if not isinstance(image, str) or not image:
        raise Invalid("config cannot be empty in order to create a container")
    hc = as_dict(b.get("HostConfig"), "HostConfig")
    refuse_unsupported(b, CONFIG)
    refuse_unsupported(hc, HOST_CONFIG, "HostConfig.")
    endpoints = _endpoints(b)
    mode = as_str(hc.get("NetworkMode"), "HostConfig.NetworkMode") or "default"
    if as_bool(b.get("NetworkDisabled"), "NetworkDisabled"):
        mode = "none"
    _container_mac(b, mode, endpoints)
    cmd = b.get("Cmd")
    entry = b.get("Entrypoint")
    cc = ContainerCreate(
        image=image, name=as_str(name, "name"),
        cmd=as_str_list(cmd, "Cmd") if cmd is not None else None,
        entrypoint=as_str_list(entry, "Entrypoint") or None if entry is not None else None,
        env=env_list(b.get("Env")), working_dir=abs_path(b.get("WorkingDir"), "WorkingDir"),
        hostname=hostname(b.get("Hostname")),
        domainname=hostname(b.get("Domainname"), "Domainname"),
        user=as_str(b.get("User"), "User"), tty=as_bool(b.get("Tty"), "Tty"),
        open_stdin=as_bool(b.get("OpenStdin"), "OpenStdin"),
        stdin_once=as_bool(b.get("StdinOnce"), "StdinOnce"),
        labels=as_str_dict(b.get("Labels"), "Labels"), network_mode=mode,
        endpoints=endpoints, dns=nameserver_list(hc.get("Dns"), "HostConfig.Dns"),
        dns_search=word_list(hc.get("DnsSearch"), "HostConfig.DnsSearch"),
        dns_options=word_list(hc.get("DnsOptions"), "HostConfig.DnsOptions"),
        extra_hosts=extra_hosts(hc.get("ExtraHosts"), "HostConfig.ExtraHosts"),
        links=links_list(hc.get("Links"), "HostConfig.Links"),
        auto_remove=as_bool(hc.get("AutoRemove"), "HostConfig.AutoRemove"),
        port_bindings=port_bindings(hc.get("PortBindings")),
        exposed_ports=exposed_ports(b.get("ExposedPorts")),
        publish_all_ports=as_bool(hc.get("PublishAllPorts"), "HostConfig.PublishAllPorts"),
    )
    return cc


def register(router: Router, backend: Backend) -> None:
    _register_lifecycle(router, backend)
    _register_output(router, backend)
    _register_control(router, backend)


def resize_value(raw: str | None, what: str) -> int:
    """moby's Uint32Value: a decimal number that fits 32 bits, nothing else."""
    s = raw or ""
    if not (s.isascii() and s.isdigit()) or int(s) >= 1 << 32:
        raise Invalid(f"invalid resize {what} {s[:40]!r}: a number from 0 to 4294967295 "
                      "is expected")
    return int(s)


def _register_control(router: Router, backend: Backend) -> None:
    """rename, pause/unpause, top and the resize calls (issue 11)."""

    async def rename(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        await backend.rename_container(p["id"], req.query.get("name", ""))
        return web.Response(status=204)

    async def pause(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        await backend.pause_container(p["id"])
        return web.Response(status=204)

    async def unpause(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        await backend.unpause_container(p["id"])
        return web.Response(status=204)

    async def top(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        titles, procs = await backend.top_container(p["id"], req.query.get("ps_args", ""))
        return json_response({"Titles": titles, "Processes": procs})

    async def resize(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        h = resize_value(req.query.get("h"), "height")
        w = resize_value(req.query.get("w"), "width")
        backend.resize_container(p["id"], h, w)
        return web.Response(status=200)

    async def exec_resize(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        h = resize_value(req.query.get("h"), "height")
        w = resize_value(req.query.get("w"), "width")
        backend.resize_exec(p["id"], h, w)
        return web.Response(status=200)

    router.add("POST", "/containers/{id}/rename", rename)
    router.add("POST", "/containers/{id}/pause", pause)
    router.add("POST", "/containers/{id}/unpause", unpause)
    router.add("GET", "/containers/{id}/top", top)
    router.add("POST", "/containers/{id}/resize", resize)
    router.add("POST", "/exec/{id}/resize", exec_resize)


def _register_lifecycle(router: Router, backend: Backend) -> None:
    async def create(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        b = await json_body(req)
        c = backend.create_container(container_create(b, req.query.get("name", "")))
        return json_response({"Id": c.id, "Warnings": []}, status=201)

    async def listing(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        cs = backend.list_containers(qbool(req, "all"), filters(req))
        nets = backend.network_table()
        out = [render.container_summary(c, dict(nets)) for c in cs]
        limit = require_int(req.query.get("limit"), "limit")
        if limit and limit > 0:
            out = out[:limit]
        return json_response(out)

    async def inspect(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        c = backend.find_container(p["id"])
        return json_response(render.container_json(c, dict(backend.network_table()), None))

    async def start(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        await backend.start_container(p["id"])
        return web.Response(status=204)

    async def stop(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        t = require_int(req.query.get("t") or req.query.get("timeout"), "timeout")
        await backend.stop_container(p["id"], t, req.query.get("signal"))
        return web.Response(status=204)

    async def restart(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        t = require_int(req.query.get("t"), "timeout")
        await backend.restart_container(p["id"], t)
        return web.Response(status=204)

    async def kill(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        await backend.kill_container(p["id"], req.query.get("signal"))
        return web.Response(status=204)

    router.add("POST", "/containers/create", create)
    router.add("GET", "/containers/json", listing)
    router.add("GET", "/containers/{id}/json", inspect)
    router.add("POST", "/containers/{id}/start", start)
    router.add("POST", "/containers/{id}/stop", stop)
    router.add("POST", "/containers/{id}/restart", restart)
    router.add("POST", "/containers/{id}/kill", kill)


def _register_output(router: Router, backend: Backend) -> None:
    async def wait(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        c = backend.find_container(p["id"])
        cond = req.query.get("condition", "not-running")
        if cond not in WAIT_CONDITIONS:
            raise Invalid(f"invalid condition: {cond!r}")
        waiter = asyncio.ensure_future(backend.wait_container(c.id, cond))
        # docker run blocks on these headers before it starts the container: send them now.
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        std_headers(resp)
        await resp.prepare(req)
        try:
            code = await waiter
        finally:
            waiter.cancel()
        try:
            await resp.write(f'{{"Error":null,"StatusCode":{code}}}\n'.encode())
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client left before the condition was met (docker run -d does)
        return resp

    async def remove(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        await backend.remove_container(p["id"], qbool(req, "force"))
        return web.Response(status=204)

    async def logs(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        c = backend.find_container(p["id"])
        so, se = qbool(req, "stdout"), qbool(req, "stderr")
        if not so and not se:
            raise Invalid("Bad parameters: you must choose at least one stream")
        tail_s = req.query.get("tail", "all")
        tail = None if tail_s in ("", "all") else require_int(tail_s, "tail")
        # A TTY's log is one raw stream, as Docker sends it (the docker CLI reads it raw).
        resp = web.StreamResponse(status=200, headers={"Content-Type":
                                                       RAW if c.tty else MULTIPLEXED})
        std_headers(resp)
        await resp.prepare(req)
        await backend.stream_logs(c.id, sink_to(resp, raw=c.tty), so, se, qbool(req, "follow"),
                                  tail)
        await resp.write_eof()
        return resp

    async def attach(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        c = backend.find_container(p["id"])
        so, se = qbool(req, "stdout"), qbool(req, "stderr")
        # stdin=1: the connection's input goes to the container's terminal, or to its stdin
        # pipe when it was created with OpenStdin; otherwise it is read and dropped.
        keys = detach_keys.parse(req.query.get("detachKeys"))  # a 400 before the hijack
        source = InputSink(req, raw=c.tty, detach_keys=keys) if qbool(req, "stdin") else None
        resp = await hijack(req, tty=c.tty)
        sink = source.start(resp) if source else sink_to(resp, raw=c.tty)
        session = asyncio.ensure_future(
            backend.attach(c.id, sink, so, se, qbool(req, "logs"), qbool(req, "stream")))
        if source is None:
            await session
        else:
            # The detach keys end the session; the container goes on (moby's detach).
            detached = asyncio.ensure_future(source.detached.wait())
            try:
                await asyncio.wait({session, detached}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (session, detached):
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
        await resp.write_eof()
        return resp

    router.add("POST", "/containers/{id}/wait", wait)
    router.add("DELETE", "/containers/{id}", remove)
    router.add("GET", "/containers/{id}/logs", logs)
    router.add("POST", "/containers/{id}/attach", attach)
