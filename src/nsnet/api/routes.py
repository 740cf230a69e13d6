"""Handlers of the Docker routes nsnet serves, over the engine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nsnet import __version__
from nsnet.api import render
from nsnet.api.app import (
    API_VERSION,
    MIN_API_VERSION,
    Api,
    error_response,
    json_response,
    require_int,
    std_headers,
)
from nsnet.api.parse import (
    abs_path,
    as_bool,
    as_dict,
    as_str,
    as_str_dict,
    as_str_list,
    endpoint_request,
    env_list,
    extra_hosts,
    filters,
    hostname,
    json_body,
    links_list,
    mac_address,
    nameserver_list,
    qbool,
    word_list,
)
from nsnet.api.server import mark_hijacked
from nsnet.api.unsupported import CONFIG, EXEC_CONFIG, HOST_CONFIG, refuse_unsupported
from nsnet.engine.containers import ContainerCreate
from nsnet.engine.core import Engine
from nsnet.engine.filter_regex import FilterRegex, filter_budget, filter_regex
from nsnet.engine.networks import NetworkCreate, network_matches
from nsnet.errors import Conflict, Invalid, NotFound, NotModified, NsnetError, Unavailable
from nsnet.model import Container, EndpointRequest, IPAMPool, new_id

STDOUT, STDERR = 1, 2
CONTAINER_FILTERS = ("name", "id", "status", "network", "label", "exited", "ancestor")


def invalid_command(message: str) -> bool:
    """moby's isInvalidCommand and its EACCES check: why a container's command cannot run."""
    m = message.lower()
    return any(t in m for t in ("executable file not found", "no such file or directory",
                                "permission denied"))


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


@dataclass
class ExecRecord:
    id: str
    container_id: str
    cmd: list[str]
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    attach: bool = True
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    created: float = field(default_factory=time.time)


def exec_exit_code(code: int, stderr_tail: bytes) -> int:
    """runc exits 255 when it cannot start the command; Docker reports 127 (not found) or 126
    (not executable), which scripts test for."""
    if code != 255 or b"exec failed" not in stderr_tail:
        return code
    text = stderr_tail.decode(errors="replace").lower()
    if "not found" in text or "no such file" in text:
        return 127
    if "permission denied" in text or "not a directory" in text:
        return 126
    return code


def build(engine: Engine, metrics: Any = None) -> Api:
    api = Api()
    execs: dict[str, ExecRecord] = {}
    reapers: set[asyncio.Future[None]] = set()

    def reapers_cleanup() -> None:
        for t in [t for t in reapers if t.done()]:
            reapers.discard(t)

    r = api.route

    # -- system -------------------------------------------------------------------------------

    def ping_headers(resp: web.StreamResponse) -> web.StreamResponse:
        resp.headers["Builder-Version"] = "1"
        resp.headers["Swarm"] = "inactive"
        resp.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
        resp.headers["Pragma"] = "no-cache"
        return resp

    @r("GET", "/_ping")
    async def ping(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        body = b"" if req.method == "HEAD" else b"OK"
        resp = web.Response(body=body, headers={"Content-Type": "text/plain; charset=utf-8"})
        return ping_headers(resp)

    def version_info() -> dict[str, Any]:
        details = {
            "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "GitCommit": "nsnet",
            "GoVersion": "python" + platform.python_version(), "Os": "linux",
            "Arch": "amd64" if platform.machine() == "x86_64" else platform.machine(),
            "KernelVersion": platform.release(), "BuildTime": "2026-11-27T00:00:00.000000000+00:00",
            "Experimental": False,
        }
        # Component details are map[string]string in the Go client: no booleans there.
        str_details = {k: str(v).lower() if isinstance(v, bool) else str(v)
                       for k, v in details.items()}
        return {
            "Platform": {"Name": "nsnet"},
            "Components": [{"Name": "Engine", "Version": __version__, "Details": str_details}],
            "Version": __version__,
            **details,
        }

    @r("GET", "/version")
    async def version(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        return json_response(version_info())

    @r("GET", "/info")
    async def info(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        cs = list(engine.containers.values())
        running = sum(1 for c in cs if c.state.status == "running")
        mem = 0
        with contextlib.suppress(OSError), open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
        return json_response({
            "ID": engine.config.extra.get("daemon_id", ""), "Name": platform.node(),
            "ServerVersion": __version__, "OperatingSystem": "nsnet on " + platform.system(),
            "OSType": "linux", "OSVersion": "", "KernelVersion": platform.release(),
            "Architecture": platform.machine(), "NCPU": os.cpu_count() or 1, "MemTotal": mem,
            "Driver": "overlay", "DriverStatus": [], "DockerRootDir": str(engine.config.data_root),
            "Containers": len(cs), "ContainersRunning": running, "ContainersPaused": 0,
            "ContainersStopped": len(cs) - running, "Images": len(engine.images.list()),
            "Plugins": {"Volume": [], "Network": sorted({"null", *engine.drivers.keys()}),
                        "Authorization": None, "Log": ["json-file"]},
            "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs", "CgroupVersion": "1",
            "Runtimes": {"runc": {"path": "runc"}}, "DefaultRuntime": "runc",
            "ExperimentalBuild": False, "Debug": False, "LiveRestoreEnabled": True,
            "IndexServerAddress": "", "RegistryConfig": None, "Labels": [],
            "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False, "NodeID": "",
                      "Error": "", "RemoteManagers": None},
            "SecurityOptions": [], "Warnings": None,
            "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""},
            "ExecRoot": str(engine.config.exec_root),
        })

    @r("POST", "/swarm/{action:.*}")
    async def swarm(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        return error_response(503, "This node is not part of a swarm")

    @r("GET", "/swarm")
    async def swarm_get(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        return error_response(503, "This node is not part of a swarm")

    @r("GET", "/volumes/{name}")
    async def volume(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        return error_response(404, f"get {p['name']}: no such volume")

    @r("GET", "/plugins/{name:.+}/json")
    async def plugin(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        return error_response(404, f"plugin \"{p['name']}\" not found")

    @r("POST", "/nsnet/reconcile")
    async def reconcile(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        return json_response(await engine.reconcile())

    @r("GET", "/metrics")
    async def metrics_route(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        text = metrics() if callable(metrics) else ""
        return web.Response(body=text.encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4"})

    # -- networks ---------------------------------------------------------------------------

    def users(net_id: str) -> list[Container]:
        return [c for c in engine.containers.values()
                if (a := c.attachment(net_id)) is not None and a.endpoint is not None]

    @r("GET", "/networks")
    async def networks_list(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        f = filters(req)
        out = []
        with filter_budget():
            for n in sorted(engine.networks.values(), key=lambda n: n.name):
                if network_matches(n, f, bool(users(n.id))):
                    out.append(render.network_json(n, None))
        return json_response(out)

    @r("GET", "/networks/{id}")
    async def network_inspect(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        v = req.query.get("verbose", "false").lower()
        if v not in ("1", "0", "t", "f", "true", "false"):
            raise Invalid(f"invalid value for verbose: {v}")
        n = engine.find_network(p["id"])
        return json_response(render.network_json(n, users(n.id)))

    @r("POST", "/networks/create")
    async def network_create(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        b = await json_body(req)
        name = b.get("Name")
        if not isinstance(name, str):
            raise Invalid("invalid name: name is empty")
        ipam = as_dict(b.get("IPAM"), "IPAM")
        configs = ipam.get("Config") or []
        if not isinstance(configs, list):
            raise Invalid("invalid IPAM.Config: expected a list")
        pools = []
        for i, cfg in enumerate(configs):
            w = f"IPAM.Config[{i}]"
            cfg = as_dict(cfg, w)
            pools.append(IPAMPool(
                subnet=as_str(cfg.get("Subnet"), f"{w}.Subnet"),
                gateway=as_str(cfg.get("Gateway"), f"{w}.Gateway") or None,
                ip_range=as_str(cfg.get("IPRange"), f"{w}.IPRange") or None,
                aux_addresses=as_str_dict(cfg.get("AuxiliaryAddresses"),
                                          f"{w}.AuxiliaryAddresses")))
        options = as_str_dict(b.get("Options"), "Options")
        v6 = b.get("EnableIPv6")
        if v6 is None:
            v6 = options.get("com.docker.network.enable_ipv6", "false").lower() == "true"
        if not isinstance(v6, bool):
            raise Invalid("invalid EnableIPv6: expected a boolean")
        v4 = b.get("EnableIPv4")
        nc = NetworkCreate(
            name=name, driver=as_str(b.get("Driver"), "Driver") or "bridge",
            internal=as_bool(b.get("Internal"), "Internal"),
            attachable=as_bool(b.get("Attachable"), "Attachable"),
            enable_ipv4=True if v4 is None else as_bool(v4, "EnableIPv4"),
            enable_ipv6=v6, ipam_driver=as_str(ipam.get("Driver"), "IPAM.Driver") or "default",
            ipam_options=as_str_dict(ipam.get("Options"), "IPAM.Options") or None,
            pools=pools, options=options, labels=as_str_dict(b.get("Labels"), "Labels"),
            scope=as_str(b.get("Scope"), "Scope"),
        )
        if as_bool(b.get("ConfigOnly"), "ConfigOnly") or b.get("ConfigFrom"):
            raise Invalid("config-only networks are not supported by nsnet")
        if as_bool(b.get("Ingress"), "Ingress"):
            raise Invalid("ingress networks need a swarm: not supported by nsnet")
        net = engine.create_network(nc)
        return json_response({"Id": net.id, "Warning": ""}, status=201)

    @r("DELETE", "/networks/{id}")
    async def network_rm(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        engine.remove_network(p["id"])
        return web.Response(status=204)

    @r("POST", "/networks/{id}/connect")
    async def network_connect(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        b = await json_body(req)
        ctr = b.get("Container")
        if not isinstance(ctr, str) or not ctr:
            raise Invalid("missing Container in request body")
        er = endpoint_request(b.get("EndpointConfig"), "EndpointConfig")
        engine.connect(p["id"], ctr, er)
        return web.Response(status=200)

    @r("POST", "/networks/{id}/disconnect")
    async def network_disconnect(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        b = await json_body(req)
        ctr = b.get("Container")
        if not isinstance(ctr, str) or not ctr:
            raise Invalid("missing Container in request body")
        engine.disconnect(p["id"], ctr, as_bool(b.get("Force"), "Force"))
        return web.Response(status=200)

    @r("POST", "/networks/prune")
    async def network_prune(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        return json_response({"NetworksDeleted": engine.prune_networks(filters(req))})

    # -- images -----------------------------------------------------------------------------

    @r("GET", "/images/json")
    async def images_list(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        return json_response([render.image_summary(i) for i in engine.images.list()])

    @r("GET", "/images/{name:.+}/json")
    async def image_inspect(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        return json_response(render.image_json(engine.images.resolve(p["name"])))

    @r("POST", "/images/create")
    async def image_create(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        if req.query.get("fromImage"):
            name = req.query["fromImage"]
            tag = req.query.get("tag")
            ref = f"{name}:{tag}" if tag else name
            return error_response(404, f"pull access denied for {ref}, repository does not "
                                  "exist or may require 'docker login': nsnet does not pull "
                                  "images; import a root filesystem with 'docker import' or "
                                  "'nsnet image import'")
        if req.query.get("fromSrc") != "-":
            raise Invalid("only fromSrc=- (an uploaded tarball) is supported")
        repo = req.query.get("repo", "")
        tag = req.query.get("tag", "")
        if repo and tag and ":" not in repo.rsplit("/", 1)[-1]:
            repo = f"{repo}:{tag}"
        tmpdir = engine.config.data_root / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmpdir, suffix=".tar")
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in req.content.iter_chunked(1 << 20):
                    f.write(chunk)
            loop = asyncio.get_running_loop()
            img = await loop.run_in_executor(None, engine.images.import_tar, Path(tmp),
                                             repo or None)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return web.Response(body=(f'{{"status":"{img.id}"}}\r\n').encode(),
                            headers={"Content-Type": "application/json"})

    @r("DELETE", "/images/{name:.+}")
    async def image_rm(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        img = engine.images.resolve(p["name"])
        in_use = any(c.image_id == img.id for c in engine.containers.values())
        return json_response(engine.images.remove(p["name"], qbool(req, "force"), in_use))

    # -- containers -------------------------------------------------------------------------

    @r("POST", "/containers/create")
    async def container_create(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        b = await json_body(req)
        image = b.get("Image")
        if not isinstance(image, str) or not image:
            raise Invalid("config cannot be empty in order to create a container")
        hc = as_dict(b.get("HostConfig"), "HostConfig")
        # Nothing nsnet would silently drop: see nsnet.api.unsupported.
        refuse_unsupported(b, CONFIG)
        refuse_unsupported(hc, HOST_CONFIG, "HostConfig.")
        nc = as_dict(b.get("NetworkingConfig"), "NetworkingConfig")
        eps_raw = as_dict(nc.get("EndpointsConfig"), "EndpointsConfig")
        endpoints: dict[str, EndpointRequest] = {}
        for k, v in eps_raw.items():
            if v is None:
                raise Invalid(f"invalid config for network {k}: EndpointsConfig is nil")
            endpoints[k] = endpoint_request(v, f"EndpointsConfig[{k}]")
        mode = as_str(hc.get("NetworkMode"), "HostConfig.NetworkMode") or "default"
        if as_bool(b.get("NetworkDisabled"), "NetworkDisabled"):
            mode = "none"
        # API < 1.44 (docker-py's mac_address): the container-wide MAC belongs to the
        # NetworkMode network's endpoint, as moby migrates it.
        mac = mac_address(b.get("MacAddress"), "MacAddress")
        if mac:
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
        cmd = b.get("Cmd")
        entry = b.get("Entrypoint")
        cc = ContainerCreate(
            image=image, name=as_str(req.query.get("name"), "name"),
            cmd=as_str_list(cmd, "Cmd") if cmd is not None else None,
            entrypoint=as_str_list(entry, "Entrypoint") or None if entry is not None else None,
            env=env_list(b.get("Env")), working_dir=abs_path(b.get("WorkingDir"), "WorkingDir"),
            hostname=hostname(b.get("Hostname")),
            domainname=hostname(b.get("Domainname"), "Domainname"),
            user=as_str(b.get("User"), "User"), tty=as_bool(b.get("Tty"), "Tty"),
            labels=as_str_dict(b.get("Labels"), "Labels"), network_mode=mode,
            endpoints=endpoints, dns=nameserver_list(hc.get("Dns"), "HostConfig.Dns"),
            dns_search=word_list(hc.get("DnsSearch"), "HostConfig.DnsSearch"),
            dns_options=word_list(hc.get("DnsOptions"), "HostConfig.DnsOptions"),
            extra_hosts=extra_hosts(hc.get("ExtraHosts"), "HostConfig.ExtraHosts"),
            links=links_list(hc.get("Links"), "HostConfig.Links"),
            auto_remove=as_bool(hc.get("AutoRemove"), "HostConfig.AutoRemove"),
            port_bindings=as_dict(hc.get("PortBindings"), "HostConfig.PortBindings"),
        )
        if cc.tty:
            raise Invalid("a TTY (-t) is not supported by nsnet yet")
        c = engine.create_container(cc)
        return json_response({"Id": c.id, "Warnings": []}, status=201)

    @r("GET", "/containers/json")
    async def containers_list(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        show_all = qbool(req, "all")
        f = filters(req)
        # Checked up front, so a bad filter is a 400 whether or not any container exists.
        for k in f:
            if k not in CONTAINER_FILTERS:
                raise Invalid(f"invalid filter '{k}'")
        names = [filter_regex(v.lstrip("/"), "name") for v in f.get("name", [])]
        out = []
        with filter_budget():
            for c in sorted(engine.containers.values(), key=lambda c: c.created, reverse=True):
                if not show_all and c.state.status != "running" and "status" not in f:
                    continue
                if not container_matches(c, f, names):
                    continue
                out.append(render.container_summary(c, engine.networks))
        limit = require_int(req.query.get("limit"), "limit")
        if limit and limit > 0:
            out = out[:limit]
        return json_response(out)

    def container_matches(c: Container, f: dict[str, list[str]],
                          name_patterns: list[FilterRegex]) -> bool:
        for k, vals in f.items():
            if not vals:
                continue
            if k == "name":
                if not any(rx.search(c.name) for rx in name_patterns):
                    return False
            elif k == "id":
                if not any(c.id.startswith(v) for v in vals):
                    return False
            elif k == "status":
                if c.state.status not in vals:
                    return False
            elif k == "network":
                names: set[str] = set()
                for a in c.attachments:
                    n = engine.networks.get(a.network_id)
                    if n:
                        names.update((n.name, n.id))
                if c.network_mode in ("host", "none"):
                    names.add(c.network_mode)
                if not any(v in names or any(x.startswith(v) for x in names) for v in vals):
                    return False
            elif k == "label":
                from nsnet.engine.networks import label_match
                if not all(label_match(c.labels, v) for v in vals):
                    return False
            elif k == "exited":
                if c.state.status != "exited" or str(c.state.exit_code) not in vals:
                    return False
            elif k == "ancestor":
                if not any(v in (c.image, c.image_id) for v in vals):
                    return False
            else:
                raise Invalid(f"invalid filter '{k}'")
        return True

    @r("GET", "/containers/{id}/json")
    async def container_inspect(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        c = engine.find_container(p["id"])
        return json_response(render.container_json(c, engine.networks, None))

    @r("POST", "/containers/{id}/start")
    async def container_start(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        c = engine.find_container(p["id"])
        try:
            await engine.start_container(c.id)
        except NotModified:
            raise
        except Exception as e:
            # moby removes an auto-remove container whose start failed: `docker run --rm`
            # waits for condition=removed before it reports the start error.
            cur = engine.containers.get(c.id)
            if cur is not None and cur.auto_remove and cur.state.status != "running":
                with contextlib.suppress(NsnetError):
                    await engine.remove_container(c.id, force=True)
            if isinstance(e, NsnetError) and e.status >= 500 and invalid_command(e.message):
                # moby's setExitCodeFromError: a command that cannot run is the caller's error.
                raise Invalid(e.message) from e
            raise
        return web.Response(status=204)

    @r("POST", "/containers/{id}/stop")
    async def container_stop(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        t = require_int(req.query.get("t") or req.query.get("timeout"), "timeout")
        await engine.stop_container(p["id"], t, req.query.get("signal"))
        return web.Response(status=204)

    @r("POST", "/containers/{id}/restart")
    async def container_restart(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        t = require_int(req.query.get("t"), "timeout")
        await engine.restart_container(p["id"], t)
        return web.Response(status=204)

    @r("POST", "/containers/{id}/kill")
    async def container_kill(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        await engine.kill_container(p["id"], req.query.get("signal"))
        return web.Response(status=204)

    @r("POST", "/containers/{id}/wait")
    async def container_wait(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        c = engine.find_container(p["id"])
        cond = req.query.get("condition", "not-running")
        if cond not in ("", "not-running", "next-exit", "removed"):
            raise Invalid(f"invalid condition: {cond!r}")
        waiter = asyncio.ensure_future(engine.wait_container(c.id, cond))
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

    @r("DELETE", "/containers/{id}")
    async def container_rm(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        await engine.remove_container(p["id"], qbool(req, "force"))
        return web.Response(status=204)

    def log_sizes(c: Container) -> dict[int, int]:
        out_path, err_path = engine.runc.log_paths(c.id)
        sizes = {}
        for s, path in ((STDOUT, out_path), (STDERR, err_path)):
            try:
                sizes[s] = path.stat().st_size
            except OSError:
                sizes[s] = 0
        return sizes

    async def stream_logs(resp: web.StreamResponse, c: Container, stdout: bool, stderr: bool,
                          follow: bool, tail: int | None,
                          offsets: dict[int, int] | None = None) -> None:
        """Send log frames; with ``offsets``, only what was written after them."""
        out_path, err_path = engine.runc.log_paths(c.id)
        wanted = [(STDOUT, out_path)] if stdout else []
        if stderr:
            wanted.append((STDERR, err_path))
        pos: dict[int, int] = {}
        for s, path in wanted:
            start = offsets.get(s, 0) if offsets else 0
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except OSError:
                data = b""
            pos[s] = start + len(data)
            if tail is not None and tail >= 0:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail else b""
            if data:
                await resp.write(frame(s, data))
        if not follow:
            return
        while True:
            cur = engine.containers.get(c.id)
            done = cur is None or cur.state.status not in ("running", "created")
            for s, path in wanted:
                try:
                    with open(path, "rb") as f:
                        f.seek(pos[s])
                        data = f.read()
                except OSError:
                    data = b""
                if data:
                    pos[s] += len(data)
                    await resp.write(frame(s, data))
            if done:
                return
            await asyncio.sleep(0.02)

    @r("GET", "/containers/{id}/logs")
    async def container_logs(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        c = engine.find_container(p["id"])
        so, se = qbool(req, "stdout"), qbool(req, "stderr")
        if not so and not se:
            raise Invalid("Bad parameters: you must choose at least one stream")
        tail_s = req.query.get("tail", "all")
        tail = None if tail_s in ("", "all") else require_int(tail_s, "tail")
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "application/vnd.docker.multiplexed-stream"})
        std_headers(resp)
        await resp.prepare(req)
        await stream_logs(resp, c, so, se, qbool(req, "follow"), tail)
        await resp.write_eof()
        return resp

    async def hijack(req: web.BaseRequest) -> web.StreamResponse:
        upgrade = "upgrade" in req.headers.get("Connection", "").lower()
        if upgrade:
            resp = web.StreamResponse(status=101, reason="UPGRADED", headers={
                "Content-Type": "application/vnd.docker.multiplexed-stream",
                "Connection": "Upgrade", "Upgrade": "tcp"})
        else:
            resp = web.StreamResponse(status=200, headers={
                "Content-Type": "application/vnd.docker.raw-stream"})
        resp.force_close()
        std_headers(resp)
        mark_hijacked(req.protocol)
        # Headers in their own flushed write: docker-py loses frames that share their read.
        await resp.prepare(req)
        await resp.drain() if hasattr(resp, "drain") else None
        return resp

    @r("POST", "/containers/{id}/attach")
    async def container_attach(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        c = engine.find_container(p["id"])
        so, se = qbool(req, "stdout"), qbool(req, "stderr")
        resp = await hijack(req)
        if qbool(req, "logs"):
            await stream_logs(resp, c, so, se, False, None)
        if qbool(req, "stream"):
            # Follow from where the logs end now: a foreground run attaches before it starts.
            offsets = log_sizes(c)
            engine.readers[c.id] = engine.readers.get(c.id, 0) + 1
            try:
                while engine.containers.get(c.id) is not None and \
                        engine.containers[c.id].state.status == "created":
                    await asyncio.sleep(0.01)
                await stream_logs(resp, c, so, se, True, None, offsets)
            finally:
                engine.readers[c.id] -= 1
                if engine.readers[c.id] <= 0:
                    engine.readers.pop(c.id, None)
        await resp.write_eof()
        return resp

    # -- exec -------------------------------------------------------------------------------

    @r("POST", "/containers/{id}/exec")
    async def exec_create(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        c = engine.find_container(p["id"])
        b = await json_body(req)
        cmd = as_str_list(b.get("Cmd"), "Cmd")
        if not cmd:
            raise Invalid("No exec command specified")
        if c.state.status != "running":
            raise Conflict(f"container {c.id} is not running")
        if as_bool(b.get("Tty"), "Tty"):
            raise Invalid("a TTY (-t) is not supported by nsnet yet")
        refuse_unsupported(b, EXEC_CONFIG)
        e = ExecRecord(id=new_id(), container_id=c.id, cmd=cmd,
                       env=env_list(b.get("Env")),
                       workdir=abs_path(b.get("WorkingDir"), "WorkingDir"),
                       user=as_str(b.get("User"), "User"),
                       attach=as_bool(b.get("AttachStdout"), "AttachStdout") or
                       as_bool(b.get("AttachStderr"), "AttachStderr"))
        execs[e.id] = e
        return json_response({"Id": e.id}, status=201)

    @r("POST", "/exec/{id}/start")
    async def exec_start(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        e = execs.get(p["id"])
        if e is None:
            raise NotFound(f"No such exec instance: {p['id']}")
        if e.running or e.exit_code is not None:
            raise Conflict(f"exec {e.id} has already been started")
        b = await json_body(req, required=False)
        detach = bool(b.get("Detach"))
        e.running = True
        try:
            proc = await engine.exec_process(e.container_id, e.cmd, e.env, e.workdir, e.user,
                                             detach)
        except BaseException:
            e.running = False
            e.exit_code = 126
            raise
        e.pid = proc.pid or 0
        if detach:
            detached = engine.runc.take_detached(proc)

            async def reap() -> None:
                if detached is None:
                    e.exit_code = await proc.wait()
                else:
                    # The command itself, not runc (which returned as soon as it started).
                    e.pid, task = detached
                    e.exit_code = await asyncio.shield(task)
                e.running = False
            reapers.add(asyncio.ensure_future(reap()))
            reapers_cleanup()
            return web.Response(status=200)
        resp = await hijack(req)

        err_tail = bytearray()

        async def pump(stream: asyncio.StreamReader | None, kind: int) -> None:
            if stream is None:
                return
            while True:
                data = await stream.read(65536)
                if not data:
                    return
                if kind == STDERR:
                    err_tail.extend(data)
                    del err_tail[:-512]
                await resp.write(frame(kind, data))

        try:
            await asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
            e.exit_code = exec_exit_code(await proc.wait(), bytes(err_tail))
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            e.running = False
        await resp.write_eof()
        return resp

    @r("GET", "/exec/{id}/json")
    async def exec_inspect(req: web.BaseRequest, p: dict[str, str]) -> web.StreamResponse:
        e = execs.get(p["id"])
        if e is None:
            raise NotFound(f"No such exec instance: {p['id']}")
        return json_response({
            "ID": e.id, "Running": e.running, "ExitCode": e.exit_code,
            "ProcessConfig": {"tty": False, "entrypoint": e.cmd[0], "arguments": e.cmd[1:],
                              "privileged": False, "user": e.user},
            "OpenStdin": False, "OpenStderr": e.attach, "OpenStdout": e.attach,
            "CanRemove": False, "ContainerID": e.container_id, "DetachKeys": "",
            "Pid": e.pid,
        })

    _ = Unavailable  # error kinds are mapped in app.dispatch
    return api
