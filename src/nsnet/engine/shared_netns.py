"""``--network container:<name|id>``: a container that lives in another one's network namespace.

Docker's model (moby ``initializeNetworking`` / ``getNetworkedContainer``): the dependent makes
no sandbox of its own. At start it joins the owner's namespace through the owner's process
(``/proc/<pid>/ns/net``, as moby's OCI spec does, so an owner in host mode or itself a
dependent works alike), takes the owner's hostname, domain name and ``/etc`` files, and has no
endpoints: its inspect shows no networks. Options that would configure a network it does not
have are refused at create with moby's words (``runconfig.validateNetContainerMode``).

The owner is found at create and recorded by ID (``container:<id>``, what compose sends for
``network_mode: "service:web"`` anyway), so a later rename of the owner changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nsnet.engine.registry import Registry
from nsnet.errors import Conflict, Invalid, NotFound
from nsnet.model import Container, EndpointRequest

if TYPE_CHECKING:
    from nsnet.engine.containers import ContainerCreate

PREFIX = "container:"


def joined_ref(mode: str) -> str | None:
    """The owner's name or ID in a ``container:`` network mode; None for any other mode."""
    return mode[len(PREFIX):] if mode.startswith(PREFIX) else None


def check_create(req: ContainerCreate, endpoints: dict[str, EndpointRequest]) -> None:
    """moby's create-time refusals, in its order; every one a 400 before anything is made."""
    ref = joined_ref(req.network_mode)
    if not ref:
        raise Invalid("Invalid network mode: invalid container format container:<name|id>")
    if req.hostname:
        raise Invalid("conflicting options: hostname and the network mode")
    if req.links:
        raise Invalid("conflicting options: container type network can't be used with links. "
                      "This would result in undefined behavior")
    if req.dns:
        raise Invalid("conflicting options: dns and the network mode")
    if req.extra_hosts:
        raise Invalid("conflicting options: custom host-to-IP mapping and the network mode")
    for key, er in endpoints.items():
        if er.mac_address:
            raise Invalid("conflicting options: mac-address and the network mode")
        if key != req.network_mode:
            raise Invalid("conflicting options: cannot attach both user-defined and "
                          f"non-user-defined network-modes ({req.network_mode} and {key})")
    if req.port_bindings or req.publish_all_ports:
        raise Invalid("conflicting options: port publishing and the container type network "
                      "mode")
    if req.exposed_ports:
        raise Invalid("conflicting options: port exposing and the container type network "
                      "mode")
    for er in endpoints.values():
        if er != EndpointRequest():
            # An alias, address or link on a network the container will not have: refused,
            # never dropped (architecture rule 7).
            raise Invalid(f"conflicting options: endpoint settings and the network mode "
                          f"{req.network_mode}")


def resolve_owner(registry: Registry, mode: str) -> str:
    """``container:<id>`` for the container ``mode`` names (by name, ID or ID prefix)."""
    ref = joined_ref(mode) or ""
    return PREFIX + registry.find_container(ref).id


def running_owner(registry: Registry, c: Container) -> Container:
    """moby's ``getNetworkedContainer`` at start: the owner, which must exist, be another
    container and run (a 409 otherwise, with moby's text)."""
    ref = joined_ref(c.network_mode) or ""
    owner = registry.find_container(ref)
    if owner.id == c.id:
        raise Invalid("cannot join own network")
    if owner.state.status != "running" or owner.state.pid <= 0:
        raise Conflict(f"cannot join network of a non running container: {ref}")
    return owner


def namespace_owner(registry: Registry, c: Container) -> Container:
    """The container whose namespace and ``/etc`` files ``c`` uses: ``c`` itself unless it
    is a dependent, else its owner's (followed along a chain; a missing owner ends it)."""
    seen = {c.id}
    while (ref := joined_ref(c.network_mode)) is not None:
        try:
            nxt = registry.find_container(ref)
        except NotFound:
            break
        if nxt.id in seen:
            break
        seen.add(nxt.id)
        c = nxt
    return c


def running_dependents(registry: Registry, owner: Container) -> list[Container]:
    """Running containers that live in ``owner``'s namespace (directly or along a chain):
    while one does, the namespace outlives the owner's own use of it."""
    return [o for o in registry.containers.values()
            if o.id != owner.id and o.state.status == "running" and
            joined_ref(o.network_mode) is not None and
            namespace_owner(registry, o).id == owner.id]
