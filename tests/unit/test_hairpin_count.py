"""The bridge driver's count of who publishes in a network (its hairpin element comes with the
first publisher and goes with the last), checked where it can go wrong: a network with two
subnets of one family, a firewall that lost its elements, a publish that fails halfway."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from nsnet.drivers.base import PortMapping
from nsnet.drivers.bridge import BridgeDriver
from nsnet.engine.published_ports import PublishedPorts
from nsnet.engine.registry import Registry
from nsnet.engine.undo import Undo
from nsnet.errors import SystemError_
from nsnet.kernel.port_firewall import EndpointPorts, FakePortRules, Hairpin, parse_elements
from nsnet.model import Attachment, Container, Endpoint, IPAMPool, Network
from nsnet.testing.fake_kernel import FakeKernel
from nsnet.testing.fake_links import HOST, FakeLink
from nsnet.testing.fake_store import MemoryStore

NET_ID = "a" * 64


def _container(cid: str, ep: Endpoint) -> Container:
    c = Container(id=cid, name=f"c{cid[:4]}", image="busybox", image_id="i", created="")
    c.network_mode = "app"
    c.attachments = [Attachment(NET_ID, endpoint=ep)]
    c.port_bindings = {"80/tcp": [{"HostIp": "", "HostPort": ""}]}
    c.state.status = "running"
    return c


def _endpoint(eid: str, address: str, gateway: str) -> Endpoint:
    return Endpoint(id=eid, network_id=NET_ID, container_id=eid, ifname="eth0",
                    mac="02:42:ac:14:00:02", ipv4=address, ipv4_prefixlen=24, gateway=gateway,
                    default_route=True)


def _world(kernel: FakeKernel | None = None) -> tuple[PublishedPorts, FakePortRules, Network]:
    net = Network(id=NET_ID, name="app", driver="bridge", created="",
                  pools=[IPAMPool(subnet="10.1.0.0/24", gateway="10.1.0.1"),
                         IPAMPool(subnet="10.2.0.0/24", gateway="10.2.0.1")],
                  driver_state={"bridge": "br-aaaaaaaaaaaa"})
    registry = Registry(MemoryStore())
    registry.networks[net.id] = net
    rules = FakePortRules()
    return (PublishedPorts(registry, {"bridge": BridgeDriver(kernel or FakeKernel(), rules)}),
            rules, net)


def _hairpin_subnets(rules: FakePortRules) -> set[str]:
    return {h.key_subnet for h in rules.hairpins.values()}


def test_each_subnet_of_a_network_gets_its_hairpin_element() -> None:
    """Two IPv4 subnets on one bridge (``--subnet`` twice, a container in the second with
    ``--ip``): a container of the second reaches a published port of its neighbour in the
    second only if its own subnet's element is there, whoever published first."""
    svc, rules, _ = _world()
    c1 = _container("1" * 64, _endpoint("e1" * 32, "10.1.0.5", "10.1.0.1"))
    c2 = _container("2" * 64, _endpoint("e2" * 32, "10.2.0.5", "10.2.0.1"))
    svc.publish(c1, Undo())
    svc.publish(c2, Undo())
    assert _hairpin_subnets(rules) == {"10.1.0.0/24", "10.2.0.0/24"}
    svc.unpublish(c1)  # the first subnet's last publisher: its element goes, not the other's
    assert _hairpin_subnets(rules) == {"10.2.0.0/24"}
    svc.unpublish(c2)
    assert rules.hairpins == {}


def test_reconcile_puts_back_a_hairpin_element_the_firewall_lost() -> None:
    """`nsnet system reconcile` after the table went (``nft flush ruleset``, a firewall
    reload): the ports come back, and so must the network's hairpin element, though the
    driver still counts the container as its publisher."""
    svc, rules, _ = _world()
    c1 = _container("1" * 64, _endpoint("e1" * 32, "10.1.0.5", "10.1.0.1"))
    svc.registry.containers[c1.id] = c1
    svc.publish(c1, Undo())
    rules.remove_elements(rules.elements())  # the kernel lost them all
    assert rules.published == {} and rules.hairpins == {}
    svc.reconcile({})
    assert set(rules.published) == {"e1" * 32}
    assert _hairpin_subnets(rules) == {"10.1.0.0/24"}


def test_a_publish_that_fails_leaves_no_element_and_no_count() -> None:
    """The driver's publish raises after its transaction (hairpin mode on the port): the
    engine pushes no undo for a call that raised, so the driver must leave nothing itself,
    neither elements in the kernel nor a publisher in its count."""
    kernel = FakeKernel()
    svc, rules, _ = _world(kernel)
    ep = _endpoint("e1" * 32, "10.1.0.5", "10.1.0.1")
    ep.host_ifname = "vethabc1234"
    kernel.state.add_link(FakeLink(name=ep.host_ifname, kind="veth", ns=HOST))
    kernel.state.fail_on("set_hairpin", None, 0)
    c1 = _container("1" * 64, ep)
    with pytest.raises(SystemError_):
        svc.publish(c1, Undo())
    assert rules.published == {} and rules.hairpins == {}
    # A second container publishes later: the network's element must come with it.
    c2 = _container("2" * 64, _endpoint("e2" * 32, "10.1.0.6", "10.1.0.1"))
    svc.publish(c2, Undo())
    assert _hairpin_subnets(rules) == {"10.1.0.0/24"}


def test_a_hairpin_element_read_back_names_its_subnet() -> None:
    """What reconcile compares with the count: the kernel's listing spells the subnet as the
    driver does."""
    listing = ('{"nftables": [{"set": {"name": "hairpin6", "elem": [{"elem": {"val": {"concat":'
               ' [{"prefix": {"addr": "fd00:20::", "len": 64}}, {"prefix": {"addr": "fd00:20::",'
               ' "len": 64}}]}, "comment": "nsnet net aaaaaaaaaaaa"}}]}}]}')
    [el] = parse_elements(listing, 6, "hairpin6")
    assert (el.network_id, el.subnet) == ("a" * 12, Hairpin(NET_ID, "fd00:20::5/64").key_subnet)


class _RefusingRules(FakePortRules):
    """A firewall that refuses additions from some point on (nft failing mid-reconcile)."""

    refuse = False

    def publish(self, eps: Sequence[EndpointPorts], hairpins: Sequence[Hairpin] = ()) -> None:
        if self.refuse:
            raise SystemError_("nft: refused")
        super().publish(eps, hairpins)


def test_a_hairpin_element_that_cannot_be_put_back_does_not_stop_reconcile() -> None:
    """The rest of reconcile (links, namespaces, chains) runs after the ports: a failure to
    restore a lost element is logged and tried again next time, not raised."""
    rules = _RefusingRules()
    drv = BridgeDriver(FakeKernel(), rules)
    net = Network(id=NET_ID, name="app", driver="bridge", created="",
                  pools=[IPAMPool(subnet="10.1.0.0/24", gateway="10.1.0.1")],
                  driver_state={"bridge": "br-aaaaaaaaaaaa"})
    ep = _endpoint("e1" * 32, "10.1.0.5", "10.1.0.1")
    drv.publish(net, ep, [PortMapping("tcp", 80, 8080, "")])
    rules.hairpins.clear()  # the kernel lost it
    rules.refuse = True
    assert drv.remove_unowned_ports({ep.id}) == []
    rules.refuse = False
    drv.remove_unowned_ports({ep.id})
    assert _hairpin_subnets(rules) == {"10.1.0.0/24"}
