"""System routes: ping, version, info, metrics, reconcile, events, and Docker's
swarm/volume/plugin answers for what nsnet does not have."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from typing import Any

from aiohttp import web

from nsnet import __version__
from nsnet.api.app import (
    API_VERSION,
    MIN_API_VERSION,
    Router,
    error_response,
    json_response,
    std_headers,
)
from nsnet.api.backend import Backend
from nsnet.api.parse import filters
from nsnet.engine.events import Event, check_filters, check_range, parse_timestamp

Params = dict[str, str]


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


def _mem_total() -> int:
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return mem


def info_json(backend: Backend) -> dict[str, Any]:
    i = backend.info()
    return {
        "ID": i.daemon_id, "Name": platform.node(),
        "ServerVersion": __version__, "OperatingSystem": "nsnet on " + platform.system(),
        "OSType": "linux", "OSVersion": "", "KernelVersion": platform.release(),
        "Architecture": platform.machine(), "NCPU": os.cpu_count() or 1,
        "MemTotal": _mem_total(), "Driver": "overlay", "DriverStatus": [],
        "DockerRootDir": str(i.data_root), "Containers": i.containers,
        "ContainersRunning": i.running, "ContainersPaused": 0,
        "ContainersStopped": i.containers - i.running, "Images": i.images,
        "Plugins": {"Volume": [], "Network": list(i.network_drivers),
                    "Authorization": None, "Log": ["json-file"]},
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs", "CgroupVersion": "1",
        "Runtimes": {"runc": {"path": "runc"}}, "DefaultRuntime": "runc",
        "ExperimentalBuild": False, "Debug": False, "LiveRestoreEnabled": True,
        "IndexServerAddress": "", "RegistryConfig": None, "Labels": [],
        "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False, "NodeID": "",
                  "Error": "", "RemoteManagers": None},
        "SecurityOptions": [], "Warnings": None,
        "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""},
        "ExecRoot": str(i.exec_root),
        # Docker's pre-23.0 names for the same flags; empty outside a cluster.
        "ClusterStore": i.cluster["ClusterStore"] if i.cluster else "",
        "ClusterAdvertise": i.cluster["ClusterAdvertise"] if i.cluster else "",
        # nsnet's own: this host's node id, whether etcd answers, how many nodes are live.
        "ClusterNode": ({"ID": i.cluster["NodeID"], "StoreReachable": i.cluster["StoreReachable"],
                         "Nodes": i.cluster["Nodes"]} if i.cluster else None),
    }


# How often a quiet stream checks that its client is still there: aiohttp does not cancel a
# handler whose peer left, and a subscriber must not outlive its connection.
EVENTS_POLL = 1.0


def _line(ev: Event) -> bytes:
    return json.dumps(ev.message()).encode() + b"\n"


async def stream_events(req: web.BaseRequest, backend: Backend) -> web.StreamResponse:
    """``GET /events``: everything is checked before the 200 goes; then the ring's events
    from ``since``, then live ones, until ``until`` passes, the client leaves, or the client
    falls a full queue behind (the bus closed it)."""
    q = req.query
    since = parse_timestamp(q.get("since", ""))
    until = parse_timestamp(q.get("until", ""))
    check_range(since, until)
    flt = filters(req)
    check_filters(flt)
    past, sub = backend.subscribe_events(flt, since, until)
    try:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        std_headers(resp)
        await resp.prepare(req)  # the docker CLI waits for the headers before it prints
        for old in past:
            await resp.write(_line(old))
        while True:
            wait = EVENTS_POLL
            if until is not None:
                left = until / 1e9 - time.time()
                if left <= 0:
                    break
                wait = min(wait, left)
            ev = await sub.next(wait)
            if ev is not None:
                await resp.write(_line(ev))
            elif sub.closed or req.transport is None or req.transport.is_closing():
                break
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp
    finally:
        backend.unsubscribe_events(sub)


def register(router: Router, backend: Backend) -> None:
    async def ping(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        body = b"" if req.method == "HEAD" else b"OK"
        resp = web.Response(body=body, headers={"Content-Type": "text/plain; charset=utf-8"})
        resp.headers["Builder-Version"] = "1"
        resp.headers["Swarm"] = "inactive"
        resp.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
        resp.headers["Pragma"] = "no-cache"
        return resp

    async def version(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return json_response(version_info())

    async def info(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return json_response(info_json(backend))

    async def no_swarm(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return error_response(503, "This node is not part of a swarm")

    async def volume(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return error_response(404, f"get {p['name']}: no such volume")

    async def plugin(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return error_response(404, f"plugin \"{p['name']}\" not found")

    async def reconcile(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return json_response(await backend.reconcile())

    async def metrics(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return web.Response(body=backend.metrics_text().encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4"})

    router.add("GET", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)
    router.add("POST", "/swarm/{action:.*}", no_swarm)
    router.add("GET", "/swarm", no_swarm)
    router.add("GET", "/volumes/{name}", volume)
    router.add("GET", "/plugins/{name:.+}/json", plugin)
    router.add("POST", "/nsnet/reconcile", reconcile)
    router.add("GET", "/metrics", metrics)

    async def events(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return await stream_events(req, backend)

    router.add("GET", "/events", events)
