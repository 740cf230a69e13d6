"""Docker's interface order and default-route choice for a container on several networks
(issue 11), over the fake kernel: libnetwork's endpoint order (``epHeap.Less``) decides which
network gets ``eth0`` at start and which one gives the default route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_engine_usecases import World

from nsnet.engine.containers import ContainerCreate
from nsnet.engine.networks import NetworkCreate
from nsnet.engine.sandboxes import route_order_key
from nsnet.errors import NsnetError
from nsnet.model import EndpointRequest, IPAMPool, Network


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def _net(world: World, name: str, subnet: str, internal: bool = False) -> str:
    return world.run(world.engine.create_network(NetworkCreate(
        name=name, internal=internal, pools=[IPAMPool(subnet=subnet)]))).id


def _start(world: World, first: str, others: dict[str, EndpointRequest]) -> tuple[
        dict[str, str], tuple[str, str] | None]:
    """Create on ``first``, connect ``others`` before the start (as compose does); the
    interface of each network and the (link, gateway) of the sandbox's default route."""
    c = world.engine.create_container(ContainerCreate(image="busybox", name="c1",
                                                      cmd=["sleep", "1"], network_mode=first))
    for name, req in others.items():
        world.run(world.engine.connect(name, c.id, req))
    world.run(world.engine.start_container(c.id))
    c = world.engine.find_container(c.id)
    ifnames = {world.engine.registry.networks[a.network_id].name: a.endpoint.ifname
               for a in c.attachments if a.endpoint is not None}
    route = world.kernel.state.routes.get(c.sandbox_key, {}).get("0.0.0.0/0")
    return ifnames, (route[0], route[1] or "") if route else None


def test_compose_frontend_and_internal_backend_gets_eth0_and_route_on_frontend(
        world: World) -> None:
    # The case: created on the internal network (it sorts first by name), the
    # non-internal one connected before the start.
    _net(world, "backend", "10.91.0.0/24", internal=True)
    _net(world, "frontend", "10.92.0.0/24")
    ifnames, route = _start(world, "backend", {"frontend": EndpointRequest()})
    assert ifnames == {"frontend": "eth0", "backend": "eth1"}
    assert route == ("eth0", "10.92.0.1")


def test_name_order_decides_between_equal_networks(world: World) -> None:
    _net(world, "zeta", "10.93.0.0/24")
    _net(world, "alpha", "10.94.0.0/24")
    ifnames, route = _start(world, "zeta", {"alpha": EndpointRequest()})
    assert ifnames == {"alpha": "eth0", "zeta": "eth1"}
    assert route == ("eth0", "10.94.0.1")


def test_priority_beats_name_and_internal_stays_last(world: World) -> None:
    _net(world, "alpha", "10.95.0.0/24")
    _net(world, "beta", "10.96.0.0/24")
    _net(world, "aaa-internal", "10.97.0.0/24", internal=True)
    ifnames, route = _start(world, "alpha", {"beta": EndpointRequest(gw_priority=10),
                                             "aaa-internal": EndpointRequest(gw_priority=99)})
    assert ifnames == {"beta": "eth0", "alpha": "eth1", "aaa-internal": "eth2"}
    assert route == ("eth0", "10.96.0.1")


def test_only_internal_networks_give_no_default_route(world: World) -> None:
    _net(world, "in1", "10.98.0.0/24", internal=True)
    _net(world, "in2", "10.99.0.0/24", internal=True)
    ifnames, route = _start(world, "in2", {"in1": EndpointRequest()})
    assert ifnames == {"in1": "eth0", "in2": "eth1"}
    assert route is None


def test_connect_to_a_running_container_keeps_eth_numbering_and_route(world: World) -> None:
    # A running container's new interface takes the next free name, as on Docker, and the
    # route moves to the new first network in libnetwork's order (getGatewayEndpoint).
    _net(world, "zeta", "10.100.0.0/24")
    _net(world, "alpha", "10.101.0.0/24")
    cid = world.running("c1", "zeta")
    world.run(world.engine.connect("alpha", cid, EndpointRequest()))
    c = world.engine.find_container(cid)
    ifnames = {world.engine.registry.networks[a.network_id].name: a.endpoint.ifname
               for a in c.attachments if a.endpoint is not None}
    assert ifnames == {"zeta": "eth0", "alpha": "eth1"}
    assert world.kernel.state.routes[c.sandbox_key]["0.0.0.0/0"][:2] == ("eth1", "10.101.0.1")


def test_gw_priority_on_connect_moves_the_route_and_a_failure_puts_it_back(
        world: World) -> None:
    _net(world, "alpha", "10.102.0.0/24")
    _net(world, "beta", "10.103.0.0/24")
    _net(world, "gamma", "10.104.0.0/24")
    cid = world.running("c1", "alpha")
    key = world.engine.find_container(cid).sandbox_key

    def route() -> tuple[str, str]:
        r = world.kernel.state.routes[key]["0.0.0.0/0"]
        return r[0], r[1]

    world.run(world.engine.connect("gamma", cid, EndpointRequest()))
    assert route() == ("eth0", "10.102.0.1")  # alpha sorts first: the route stays
    world.kernel.fail_on("configure_endpoint")
    with pytest.raises(NsnetError):
        world.run(world.engine.connect("beta", cid, EndpointRequest(gw_priority=5)))
    assert route() == ("eth0", "10.102.0.1")
    world.run(world.engine.connect("beta", cid, EndpointRequest(gw_priority=5)))
    assert route() == ("eth2", "10.103.0.1")
    c = world.engine.find_container(cid)
    holders = [world.engine.registry.networks[a.network_id].name for a in c.attachments
               if a.endpoint is not None and a.endpoint.default_route]
    assert holders == ["beta"]
    world.engine.disconnect("beta", cid, False)
    assert route() == ("eth0", "10.102.0.1")


def test_route_order_key_follows_libnetwork_less() -> None:
    def net(name: str, internal: bool = False) -> Network:
        return Network(id=name * 8, name=name, driver="bridge", created="", internal=internal)

    keys = {
        "gw-bridge": route_order_key(net("a"), True, 100, gateway_only=True),
        "internal": route_order_key(net("b", internal=True), True, 100, False),
        "v4-only-prio": route_order_key(net("c"), False, 100, False),
        "dual-z": route_order_key(net("z"), True, 0, False),
        "dual-y-prio": route_order_key(net("y"), True, 5, False),
        "dual-x": route_order_key(net("x"), True, 0, False),
    }
    assert sorted(keys, key=keys.__getitem__) == [
        "dual-y-prio", "dual-x", "dual-z", "v4-only-prio", "internal", "gw-bridge"]
