"""The Docker routes nsnet serves: each resource module registers its own over the backend."""

from __future__ import annotations

from nsnet.api import containers, execs, images, networks, nodes, system
from nsnet.api.app import Api
from nsnet.api.backend import Backend

# Registration order is match order: literal paths of a resource before its templates.
RESOURCES = (system, networks, images, containers, execs, nodes)


def build(backend: Backend) -> Api:
    api = Api()
    for resource in RESOURCES:
        resource.register(api.router, backend)
    return api
