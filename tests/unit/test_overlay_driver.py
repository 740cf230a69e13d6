"""The overlay driver against the fake kernel: this host's data plane of a global network.

What it makes (a namespace per VNI with ovbr0 and vx-<vni>, a veth per endpoint into the
bridge), what it refuses, what a failure leaves (nothing), and the peer entries it programs.
"""

from __future__ import annotations

import pytest

from nsnet.drivers.base import Peer, ProgramsPeers, Restorable, Sandbox
from nsnet.drivers.overlay import OPT_MTU, OPT_VNI, OverlayDriver
from nsnet.errors import Invalid, NotFound, SystemError_, Unavailable
from nsnet.kernel.api import OverlayPeer
from nsnet.model import Endpoint, IPAMPool, Network
from nsnet.testing.fake_kernel import FakeKernel

NS = "/run/fake/sb1"
NET_ID = "0f" * 32
VTEP = "192.0.2.11"
VNI = 4096


def _net(vni: int | None = VNI, **opts: str) -> Network:
    options = dict(opts)
    if vni is not None:
        options[OPT_VNI] = str(vni)
    return Network(id=NET_ID, name="ovnet", driver="overlay", created="", scope="global",
                   pools=[IPAMPool(subnet="10.0.0.0/24", gateway="10.0.0.1")], options=options)


def _ep(ifname: str = "eth0", ip: str = "10.0.0.2") -> Endpoint:
    return Endpoint(id="e" * 64, network_id=NET_ID, container_id="c" * 64, ifname=ifname,
                    mac="02:42:0a:00:00:02", ipv4=ip, ipv4_prefixlen=24, gateway="10.0.0.1")


def _ov_ns(k: FakeKernel, vni: int = VNI) -> str:
    return k.overlays.path(vni)


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.ns.create(NS)
    return k


@pytest.fixture
def sites() -> list[str]:
    return []


@pytest.fixture
def drv(kernel: FakeKernel, sites: list[str]) -> OverlayDriver:
    return OverlayDriver(kernel, VTEP, on_site=lambda net: sites.append(net.id))


def test_it_has_the_peer_and_restore_capabilities(drv: OverlayDriver) -> None:
    assert isinstance(drv, ProgramsPeers) and isinstance(drv, Restorable)
    assert drv.name == "overlay" and drv.has_endpoints and not drv.provides_gateway


@pytest.mark.parametrize(("opts", "enable_ipv6", "words"), [
    ({"encrypted": ""}, False, "does not support option 'encrypted'"),
    ({"com.docker.network.bridge.name": "x"}, False, "does not support option"),
    ({OPT_MTU: "abc"}, False, "not a number"),
    ({OPT_MTU: "40"}, False, "between 68 and 65535"),
    ({OPT_VNI: "4096,4097"}, False, "no valid VXLAN id"),
    ({OPT_VNI: str(1 << 24)}, False, "no valid VXLAN id"),
    ({}, True, "IPv4 only"),
])
def test_validate_refuses_with_a_message(drv: OverlayDriver, opts: dict[str, str],
                                         enable_ipv6: bool, words: str) -> None:
    net = _net(None, **opts)
    net.enable_ipv6 = enable_ipv6
    with pytest.raises(Invalid, match=words):
        drv.validate(net)


def test_validate_takes_mtu_and_vni(drv: OverlayDriver) -> None:
    drv.validate(_net(None))  # before the cluster gave it a VNI
    drv.validate(_net(VNI, **{OPT_MTU: "1400"}))


def test_create_makes_the_namespace_bridge_and_vxlan(kernel: FakeKernel, drv: OverlayDriver,
                                                      sites: list[str]) -> None:
    net = _net()
    drv.create_network(net)
    ns = _ov_ns(kernel)
    br, vx = kernel.link("ovbr0", ns), kernel.link(f"vx-{VNI}", ns)
    assert br is not None and vx is not None
    assert vx.master == br.index and br.mtu == vx.mtu == 1450  # underlay 1500 - 50
    assert br.addresses == []  # no gateway on the overlay bridge (module docstring)
    assert kernel.link("ovbr0") is None  # nothing in the daemon's own namespace
    assert net.driver_state["vni"] == str(VNI)
    assert sites == [NET_ID]
    objects = kernel.objects()
    drv.create_network(net)  # reconcile and the global mirror call it again: idempotent
    assert kernel.objects() == objects
    assert sites == [NET_ID, NET_ID]  # and the peers are synced into it again


def test_create_with_an_mtu_over_the_underlay_leaves_nothing(kernel: FakeKernel,
                                                             drv: OverlayDriver,
                                                             sites: list[str]) -> None:
    before = kernel.objects()
    with pytest.raises(Invalid, match="does not fit"):
        drv.create_network(_net(**{OPT_MTU: "1451"}))
    assert kernel.objects() == before and sites == []


def test_join_puts_a_veth_into_the_overlay_bridge(kernel: FakeKernel,
                                                  drv: OverlayDriver) -> None:
    net, ep = _net(**{OPT_MTU: "1400"}), _ep()
    drv.create_network(net)
    drv.join(net, ep, Sandbox("c" * 64, NS))
    ns = _ov_ns(kernel)
    assert ep.host_ifname is not None
    port = kernel.link(ep.host_ifname, ns)
    br = kernel.link("ovbr0", ns)
    assert port is not None and br is not None and port.master == br.index
    assert kernel.link(ep.host_ifname) is None  # not in the daemon's namespace
    inside = kernel.link("eth0", NS)
    assert inside is not None and inside.up and inside.mac == ep.mac
    assert inside.addresses == ["10.0.0.2/24"] and inside.mtu == 1400
    assert not inside.ipv6
    assert kernel.state.routes[NS] == {}  # the default route goes via the gateway bridge
    assert kernel.announcer.sent == [("eth0", ["10.0.0.2/24"])]
    drv.leave(net, ep, Sandbox("c" * 64, NS))
    assert kernel.link("eth0", NS) is None and kernel.link(ep.host_ifname, ns) is None


def test_first_join_on_a_host_makes_its_data_plane(kernel: FakeKernel, drv: OverlayDriver,
                                                    sites: list[str]) -> None:
    net, ep = _net(), _ep()
    drv.join(net, ep, Sandbox("c" * 64, NS))
    assert kernel.overlays.exists(VNI) and sites == [NET_ID]
    assert kernel.link("eth0", NS) is not None


def test_a_join_that_fails_leaves_no_veth(kernel: FakeKernel, drv: OverlayDriver) -> None:
    net = _net()
    drv.create_network(net)
    before = kernel.objects()
    kernel.fail_on("configure_endpoint")
    with pytest.raises(SystemError_):
        drv.join(net, _ep(), Sandbox("c" * 64, NS))
    assert kernel.objects() == before


def test_a_missing_bridge_is_unavailable_not_rebuilt(kernel: FakeKernel,
                                                     drv: OverlayDriver) -> None:
    net = _net()
    drv.create_network(net)
    kernel.overlays.links(VNI).delete("ovbr0")
    with pytest.raises(Unavailable, match="reconcile"):
        drv.join(net, _ep(), Sandbox("c" * 64, NS))
    assert kernel.link("eth0", NS) is None


def test_host_namespace_containers_cannot_join(drv: OverlayDriver) -> None:
    with pytest.raises(Invalid):
        drv.join(_net(), _ep(), Sandbox("c" * 64, None))


def test_delete_takes_everything_and_is_idempotent(kernel: FakeKernel,
                                                   drv: OverlayDriver) -> None:
    before = kernel.objects()
    net = _net()
    drv.join(net, _ep(), Sandbox("c" * 64, NS))
    drv.delete_network(net)
    drv.delete_network(net)
    assert kernel.objects() == before
    assert not kernel.overlays.exists(VNI)
    drv.leave(net, _ep(), Sandbox("c" * 64, NS))  # after the namespace went: nothing to do


def test_restore_remakes_a_deleted_veth(kernel: FakeKernel, drv: OverlayDriver) -> None:
    net, ep = _net(), _ep()
    drv.join(net, ep, Sandbox("c" * 64, NS))
    assert ep.host_ifname is not None
    kernel.overlays.links(VNI).delete(ep.host_ifname)  # takes the sandbox end with it
    assert kernel.link("eth0", NS) is None
    drv.restore(net, ep, Sandbox("c" * 64, NS))
    inside = kernel.link("eth0", NS)
    assert inside is not None and inside.addresses == ["10.0.0.2/24"]
    port = kernel.link(ep.host_ifname, _ov_ns(kernel))
    assert port is not None and port.master is not None


PEER_A = Peer("a" * 64, "10.0.0.5", "02:42:0a:00:00:05", "192.0.2.12")
PEER_B = Peer("b" * 64, "10.0.0.6", "02:42:0a:00:00:06", "192.0.2.13")


def test_peers_are_entries_on_this_hosts_vxlan(kernel: FakeKernel,
                                                drv: OverlayDriver) -> None:
    net = _net()
    drv.add_peer(net, PEER_A)  # no data plane here yet: nothing to program, no error
    assert drv.peers(net) == [] and drv.sync_peers(net, [PEER_A]) == (0, 0)
    drv.create_network(net)
    drv.add_peer(net, PEER_A)
    drv.add_peer(net, PEER_A)  # idempotent
    assert kernel.overlays.peers(VNI) == {OverlayPeer(PEER_A.mac, PEER_A.address,
                                                      PEER_A.vtep)}
    moved = Peer(PEER_A.endpoint_id, PEER_A.address, PEER_A.mac, "192.0.2.14")
    drv.add_peer(net, moved)
    assert [p.vtep for p in drv.peers(net)] == ["192.0.2.14"]
    assert drv.sync_peers(net, [PEER_B]) == (1, 1)  # the stray goes, the missing one comes
    assert [(p.address, p.mac) for p in drv.peers(net)] == [(PEER_B.address, PEER_B.mac)]
    drv.remove_peer(net, PEER_B)
    drv.remove_peer(net, PEER_B)
    assert drv.peers(net) == []


def test_a_bad_peer_is_refused(drv: OverlayDriver) -> None:
    net = _net()
    drv.create_network(net)
    with pytest.raises(Invalid):
        drv.add_peer(net, Peer("x", "10.0.0.9", "not-a-mac", "192.0.2.12"))
    with pytest.raises(Invalid):
        drv.sync_peers(net, [Peer("x", "fd00::9", "02:42:0a:00:00:09", "192.0.2.12")])


def test_a_network_without_vni_is_refused_everywhere(drv: OverlayDriver) -> None:
    with pytest.raises(Invalid):
        drv.create_network(_net(None))
    drv.delete_network(_net(None))  # idempotent: nothing was made


def test_overlay_calls_on_an_absent_vni_are_not_found(kernel: FakeKernel) -> None:
    with pytest.raises(NotFound):
        kernel.overlays.links(VNI)
    with pytest.raises(NotFound):
        kernel.overlays.peers(VNI)
