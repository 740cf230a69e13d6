"""Reading requests the way moby does: booleans, filters, JSON bodies."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from nsnet.errors import Invalid
from nsnet.model import EndpointRequest


def qbool(request: web.BaseRequest, key: str, default: bool = False) -> bool:
    """moby's httputils.BoolValue: false iff "", 0, no, false, none (trimmed, any case)."""
    if key not in request.query:
        return default
    return request.query[key].strip().lower() not in ("", "0", "no", "false", "none")


def filters(request: web.BaseRequest) -> dict[str, list[str]]:
    """Both encodings: the CLI's {"k": {"v": true}} and docker-py's {"k": ["v"]}."""
    raw = request.query.get("filters", "")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise Invalid(f"invalid filter: {e}") from None
    if not isinstance(data, dict):
        raise Invalid("invalid filter: must be a JSON object")
    out: dict[str, list[str]] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out[k] = [str(x) for x, on in v.items() if on]
        elif isinstance(v, list):
            out[k] = [str(x) for x in v]
        elif isinstance(v, str):
            out[k] = [v]
        else:
            raise Invalid(f"invalid filter value for {k!r}")
    return out


async def json_body(request: web.BaseRequest, required: bool = True) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise Invalid("missing request body: a JSON object is required")
        return {}
    ctype = request.headers.get("Content-Type", "")
    if ctype and not ctype.startswith("application/json"):
        raise Invalid(f"unsupported Content-Type header ({ctype}): must be 'application/json'")
    try:
        decoder = json.JSONDecoder()
        text = raw.decode()
        obj, end = decoder.raw_decode(text.lstrip())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Invalid(f"invalid JSON: {e}") from None
    if text.lstrip()[end:].strip():
        raise Invalid("unexpected content after JSON")
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise Invalid("invalid JSON: expected an object")
    return obj


def as_dict(v: Any, what: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise Invalid(f"invalid {what}: expected an object")
    return v


def as_str_dict(v: Any, what: str) -> dict[str, str]:
    d = as_dict(v, what)
    out = {}
    for k, x in d.items():
        if x is None:
            x = ""
        if not isinstance(x, str | int | float | bool):
            raise Invalid(f"invalid {what}: values must be strings")
        out[str(k)] = str(x).lower() if isinstance(x, bool) else str(x)
    return out


def as_str_list(v: Any, what: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise Invalid(f"invalid {what}: expected a list of strings")
    return list(v)


def as_bool(v: Any, what: str) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    raise Invalid(f"invalid {what}: expected a boolean")


def endpoint_request(v: Any, what: str) -> EndpointRequest:
    d = as_dict(v, what)
    ipam = as_dict(d.get("IPAMConfig"), f"{what}.IPAMConfig")
    gw = d.get("GwPriority") or 0
    if not isinstance(gw, int):
        raise Invalid(f"invalid {what}.GwPriority: expected a number")
    links = as_str_list(d.get("Links"), f"{what}.Links")
    return EndpointRequest(
        ipv4_address=ipam.get("IPv4Address") or None,
        ipv6_address=ipam.get("IPv6Address") or None,
        aliases=as_str_list(d.get("Aliases"), f"{what}.Aliases") or None,
        links=[ln if ":" in ln else f"{ln}:{ln}" for ln in links] or None,
        driver_opts=as_str_dict(d.get("DriverOpts"), f"{what}.DriverOpts") or None,
        mac_address=d.get("MacAddress") or None,
        gw_priority=gw,
    )
