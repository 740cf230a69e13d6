"""Network routes: list, inspect, create, remove, connect, disconnect, prune."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nsnet.api import render
from nsnet.api.app import Router, json_response
from nsnet.api.backend import Backend
from nsnet.api.parse import (
    as_bool,
    as_dict,
    as_str,
    as_str_dict,
    endpoint_request,
    filters,
    json_body,
)
from nsnet.engine.networks import NetworkCreate
from nsnet.errors import Invalid
from nsnet.model import IPAMPool

Params = dict[str, str]


def ipam_pools(ipam: dict[str, Any]) -> list[IPAMPool]:
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
    return pools


def network_create(b: dict[str, Any]) -> NetworkCreate:
    """A ``POST /networks/create`` body, checked to shape; the engine checks the meaning."""
    name = b.get("Name")
    if not isinstance(name, str):
        raise Invalid("invalid name: name is empty")
    ipam = as_dict(b.get("IPAM"), "IPAM")
    pools = ipam_pools(ipam)
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
    return nc


def _container_ref(b: dict[str, Any]) -> str:
    ctr = b.get("Container")
    if not isinstance(ctr, str) or not ctr:
        raise Invalid("missing Container in request body")
    return ctr


def register(router: Router, backend: Backend) -> None:
    async def listing(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return json_response([render.network_json(n, None)
                              for n in backend.list_networks(filters(req))])

    async def inspect(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        v = req.query.get("verbose", "false").lower()
        if v not in ("1", "0", "t", "f", "true", "false"):
            raise Invalid(f"invalid value for verbose: {v}")
        n = backend.find_network(p["id"])
        return json_response(render.network_json(n, backend.network_users(n)))

    async def create(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        net = await backend.create_network(network_create(await json_body(req)))
        return json_response({"Id": net.id, "Warning": ""}, status=201)

    async def remove(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        await backend.remove_network(p["id"])
        return web.Response(status=204)

    async def connect(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        b = await json_body(req)
        ctr = _container_ref(b)
        er = endpoint_request(b.get("EndpointConfig"), "EndpointConfig")
        await backend.connect(p["id"], ctr, er)
        return web.Response(status=200)

    async def disconnect(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        b = await json_body(req)
        ctr = _container_ref(b)
        backend.disconnect(p["id"], ctr, as_bool(b.get("Force"), "Force"))
        return web.Response(status=200)

    async def prune(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return json_response({"NetworksDeleted": await backend.prune_networks(filters(req))})

    router.add("GET", "/networks", listing)
    router.add("GET", "/networks/{id}", inspect)
    router.add("POST", "/networks/create", create)
    router.add("DELETE", "/networks/{id}", remove)
    router.add("POST", "/networks/{id}/connect", connect)
    router.add("POST", "/networks/{id}/disconnect", disconnect)
    router.add("POST", "/networks/prune", prune)
