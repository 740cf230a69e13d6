"""Image routes: list, inspect, import (``fromSrc=-``), remove. nsnet never pulls."""

from __future__ import annotations

import re

from aiohttp import web

from nsnet.api import render
from nsnet.api.app import Router, error_response, json_response
from nsnet.api.backend import Backend
from nsnet.api.parse import qbool
from nsnet.errors import Invalid

Params = dict[str, str]


def register(router: Router, backend: Backend) -> None:
    async def listing(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return json_response([render.image_summary(i) for i in backend.list_images()])

    async def inspect(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        m = re.match(r"^/v(\d+)\.(\d+)/", req.rel_url.raw_path)
        legacy = m is not None and (int(m.group(1)), int(m.group(2))) < (1, 45)
        return json_response(render.image_json(backend.find_image(p["name"]), legacy))

    async def create(req: web.BaseRequest, p: Params) -> web.StreamResponse:
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
        img = await backend.import_image(req.content.iter_chunked(1 << 20), repo or None)
        return web.Response(body=(f'{{"status":"{img.id}"}}\r\n').encode(),
                            headers={"Content-Type": "application/json"})

    async def remove(req: web.BaseRequest, p: Params) -> web.StreamResponse:
        return json_response(backend.remove_image(p["name"], qbool(req, "force")))

    router.add("GET", "/images/json", listing)
    router.add("GET", "/images/{name:.+}/json", inspect)
    router.add("POST", "/images/create", create)
    router.add("DELETE", "/images/{name:.+}", remove)
