"""The macvlan driver against the fake kernel: what a create makes, and what a failed one
leaves (nothing)."""

from __future__ import annotations

import pytest

from nsnet.drivers.base import Sandbox
from nsnet.drivers.macvlan import OPT_HOST_ACCESS, OPT_PARENT, MacvlanDriver
from nsnet.errors import Invalid, NotFound, Unavailable
from nsnet.model import Endpoint, IPAMPool, Network
from nsnet.testing.fake_kernel import FakeKernel

NS = "/run/fake/sb1"
NET_ID = "cd" * 32


def _net(**opts: str) -> Network:
    return Network(id=NET_ID, name="lan", driver="macvlan", created="", options=opts,
                   pools=[IPAMPool(subnet="10.8.0.0/24", gateway="10.8.0.1")])


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.ns.create(NS)
    k.add_host_link("eth0")
    return k


def test_parentless_network_gets_a_private_parent_and_joins_on_it(kernel: FakeKernel) -> None:
    before = kernel.objects()
    drv, net = MacvlanDriver(kernel, list), _net()
    drv.create_network(net)
    assert drv.owned_links(net) >= {f"nsm-{NET_ID[:8]}", f"nsm-{NET_ID[:8]}p"}
    ep = Endpoint(id="e" * 64, network_id=NET_ID, container_id="c" * 64, ifname="eth0",
                  mac="02:42:0a:08:00:02", ipv4="10.8.0.2", ipv4_prefixlen=24)
    drv.join(net, ep, Sandbox("c" * 64, NS))
    inside = kernel.link("eth0", NS)
    parent = kernel.link(f"nsm-{NET_ID[:8]}")
    assert inside is not None and parent is not None and inside.parent == parent.index
    drv.leave(net, ep, Sandbox("c" * 64, NS))
    drv.delete_network(net)
    assert kernel.objects() == before


def test_a_kernel_without_the_link_kind_leaves_nothing(kernel: FakeKernel) -> None:
    before = kernel.objects()
    kernel.fail_on("add_macvlan_into", Unavailable("no macvlan links"))
    with pytest.raises(Unavailable):
        MacvlanDriver(kernel, list).create_network(_net())
    assert kernel.objects() == before


def test_a_missing_parent_is_not_found(kernel: FakeKernel) -> None:
    before = kernel.objects()
    with pytest.raises(NotFound):
        MacvlanDriver(kernel, list).create_network(_net(**{OPT_PARENT: "eth9"}))
    assert kernel.objects() == before


def test_host_access_on_a_routed_subnet_leaves_no_shim(kernel: FakeKernel) -> None:
    """bug: the shim was made before its route was refused and stayed behind (the engine
    pushes no undo for a create that raised)."""
    kernel.links.add_route("10.8.0.0/24", "eth0")  # the host's own LAN route
    before = kernel.objects()
    with pytest.raises(Invalid, match="already routes"):
        MacvlanDriver(kernel, list).create_network(
            _net(**{OPT_PARENT: "eth0", OPT_HOST_ACCESS: "true"}))
    assert kernel.objects() == before


def test_a_bad_interface_prefix_is_refused_at_create(kernel: FakeKernel) -> None:
    drv = MacvlanDriver(kernel, lambda: [])
    with pytest.raises(Invalid, match="container_iface_prefix"):
        drv.validate(_net(**{"com.docker.network.container_iface_prefix": "9/x"}))
    drv.validate(_net(**{"com.docker.network.container_iface_prefix": "lan"}))
