"""The bridge driver against the fake kernel: what it makes, what it undoes, what it refuses."""

from __future__ import annotations

import pytest

from nsnet.drivers.base import Sandbox
from nsnet.drivers.bridge import BridgeDriver
from nsnet.errors import SystemError_, Unavailable
from nsnet.kernel.port_firewall import FakePortRules
from nsnet.model import Endpoint, IPAMPool, Network
from nsnet.testing.fake_kernel import FakeKernel

NS = "/run/fake/sb1"
NET_ID = "ab" * 32


def _net(**opts: str) -> Network:
    return Network(id=NET_ID, name="front", driver="bridge", created="",
                   pools=[IPAMPool(subnet="10.7.0.0/24", gateway="10.7.0.1")], options=opts)


def _ep(ifname: str = "eth0") -> Endpoint:
    return Endpoint(id="e" * 64, network_id=NET_ID, container_id="c" * 64, ifname=ifname,
                    mac="02:42:0a:07:00:02", ipv4="10.7.0.2", ipv4_prefixlen=24,
                    gateway="10.7.0.1")


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.ns.create(NS)
    return k


def test_create_join_leave_delete(kernel: FakeKernel) -> None:
    before = kernel.objects()
    drv, net, ep = BridgeDriver(kernel), _net(), _ep()
    drv.create_network(net)
    bridge = kernel.link("br-" + NET_ID[:12])
    assert bridge is not None and bridge.kind == "bridge"
    assert bridge.addresses == ["10.7.0.1/24"] and bridge.alias == "nsnet:" + NET_ID
    assert kernel.objects().firewall_networks == {NET_ID[:12]}
    assert kernel.sysctls["net.ipv4.ip_forward"] == "1"
    drv.join(net, ep, Sandbox("c" * 64, NS))
    assert ep.host_ifname is not None
    assert kernel.links.ports(bridge.index) == [ep.host_ifname]
    inside = kernel.link("eth0", NS)
    assert inside is not None and inside.up and inside.addresses == ["10.7.0.2/24"]
    assert not inside.ipv6  # an IPv4-only endpoint gets no IPv6 at all
    assert kernel.announcer.sent == [("eth0", ["10.7.0.2/24"])]
    drv.leave(net, ep, Sandbox("c" * 64, NS))
    assert kernel.link("eth0", NS) is None
    drv.delete_network(net)
    assert kernel.objects() == before


def test_a_create_that_fails_halfway_leaves_nothing(kernel: FakeKernel) -> None:
    before = kernel.objects()
    kernel.fail_on("apply_network")
    with pytest.raises(SystemError_):
        BridgeDriver(kernel).create_network(_net())
    assert kernel.objects() == before


@pytest.mark.parametrize("restarted", [False, True], ids=["cached-index", "fresh-driver"])
def test_join_on_a_missing_bridge_fails_and_rebuilds_nothing(kernel: FakeKernel,
                                                             restarted: bool) -> None:
    """Reconcile rebuilds; a join names the network and the command to run instead. It used to
    re-create the bridge and its firewall inside the join (reconcile hiding in the hot path)."""
    drv, net = BridgeDriver(kernel), _net()
    drv.create_network(net)
    kernel.links.delete("br-" + NET_ID[:12])  # someone deleted it behind the daemon's back
    if restarted:
        drv = BridgeDriver(kernel)
    before = kernel.objects()
    calls = len(kernel.calls)
    with pytest.raises(Unavailable, match=r"front.*nsnet system reconcile"):
        drv.join(net, _ep(), Sandbox("c" * 64, NS))
    assert kernel.objects() == before
    assert "ensure_bridge" not in kernel.calls[calls:]
    # Reconcile's create_network is the place that makes it again.
    drv.create_network(net)
    drv.join(net, _ep(), Sandbox("c" * 64, NS))
    assert kernel.link("eth0", NS) is not None


def test_restore_remakes_a_deleted_pair_with_the_same_identity(kernel: FakeKernel) -> None:
    drv, net, ep = BridgeDriver(kernel), _net(), _ep()
    drv.create_network(net)
    ep.default_route = True
    drv.join(net, ep, Sandbox("c" * 64, NS))
    old = ep.host_ifname
    assert old is not None
    kernel.links.delete(old)
    drv.restore(net, ep, Sandbox("c" * 64, NS))
    assert ep.host_ifname != old and kernel.links.exists(ep.host_ifname or "")
    inside = kernel.link("eth0", NS)
    assert inside is not None and inside.mac == ep.mac
    assert (NS, "0.0.0.0/0", "eth0") in kernel.objects().routes


def test_stale_ports_are_the_unowned_veths_on_our_bridge(kernel: FakeKernel) -> None:
    drv, net, ep = BridgeDriver(kernel), _net(), _ep()
    drv.create_network(net)
    drv.join(net, ep, Sandbox("c" * 64, NS))
    assert ep.host_ifname is not None
    assert drv.stale_ports(net, {ep.host_ifname}) == []
    assert drv.stale_ports(net, set()) == [ep.host_ifname]


def test_over_the_fake_kernel_the_port_firewall_is_the_fakes() -> None:
    """Unit tests run in the machine's own namespace: a bridge driver over the fake kernel
    must never build a real port firewall (it wrote ``inet nsnet`` into the machine's
    ruleset at the first published port or reconcile)."""
    k = FakeKernel()
    drv = BridgeDriver(k)
    assert isinstance(k.ports, FakePortRules)
    assert drv._port_rules() is k.ports


def test_an_isolated_ipv6_bridge_has_ipv6_off(kernel: FakeKernel) -> None:
    """Gateway mode ``isolated``: not even the bridge's link-local address, through which the
    host reached the containers (tests/integration/test_isolated_ipv6.py)."""
    key = "net.ipv6.conf.br-" + NET_ID[:12] + ".disable_ipv6"
    net = _net(**{"com.docker.network.bridge.gateway_mode_ipv6": "isolated"})
    net.internal = True
    net.pools.append(IPAMPool(subnet="fd00:7::/64", gateway="fd00:7::1"))
    BridgeDriver(kernel).create_network(net)
    assert kernel.sysctls[key] == "1"
    bridge = kernel.link("br-" + NET_ID[:12])
    assert bridge is not None and bridge.addresses == ["10.7.0.1/24"]
    other = FakeKernel()
    BridgeDriver(other).create_network(_net())  # any other mode keeps the bridge's IPv6
    assert key not in other.sysctls
    # The user's own bridge (it was there before the network) is left as it is.
    users = FakeKernel()
    users.links.ensure_bridge("br-" + NET_ID[:12], None, None)
    net = _net(**{"com.docker.network.bridge.gateway_mode_ipv6": "isolated"})
    net.internal = True
    BridgeDriver(users).create_network(net)
    assert net.driver_state["owns_bridge"] == "0" and key not in users.sysctls


def test_route_localnet_is_set_on_every_bridge_made_again(kernel: FakeKernel) -> None:
    """Published ports reached from the host at 127.0.0.1 need ``route_localnet`` on the
    bridge. The driver remembered it by bridge name, so a bridge of the same name made again
    (a network re-created with ``com.docker.network.bridge.name``, or reconcile re-making a
    deleted bridge) never got it."""
    from nsnet.drivers.base import PortMapping

    rules = FakePortRules()
    drv = BridgeDriver(kernel, rules)
    name = "mybr0"
    key = f"net.ipv4.conf.{name}.route_localnet"
    for attempt in range(2):
        net = _net(**{"com.docker.network.bridge.name": name})
        net.id = f"{attempt}" * 64
        drv.create_network(net)
        drv.publish(net, _ep(), [PortMapping("tcp", 80, 8080, "")])
        assert kernel.sysctls.pop(key, None) == "1", attempt
        drv.unpublish(net, _ep(), [PortMapping("tcp", 80, 8080, "")])
        drv.delete_network(net)
        kernel.reaper.flush()
    # Reconcile re-making a bridge someone deleted while the network lives on.
    net = _net(**{"com.docker.network.bridge.name": name})
    drv.create_network(net)
    drv.publish(net, _ep(), [PortMapping("tcp", 80, 8080, "")])
    assert kernel.sysctls.pop(key, None) == "1"
    kernel.links.delete(name)
    drv.create_network(net)
    drv.publish(net, _ep(), [PortMapping("tcp", 80, 8081, "")])
    assert kernel.sysctls.get(key) == "1"
