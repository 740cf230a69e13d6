"""Published ports without root: the nftables text over the option matrix (golden files), the
request parsing, the socket reservations, the driver's one-transaction contract, and the
shapes Docker clients read back.

After an intended change to the plans, regenerate and read the diff::

    NSNET_REGOLD=1 .venv/bin/python -m pytest -q tests/unit/test_port_firewall.py
    git diff tests/unit/golden_ports/
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from nsnet.api.parse import exposed_ports, port_bindings
from nsnet.api.render import ports_list, ports_map
from nsnet.cli.port import port_lines
from nsnet.drivers.base import PortMapping
from nsnet.drivers.bridge import BridgeDriver
from nsnet.engine.published_ports import (
    PortRequest,
    PublishedPorts,
    Reservations,
    check_request,
    requests_of,
)
from nsnet.engine.registry import Registry
from nsnet.engine.undo import Undo
from nsnet.errors import Conflict, Forbidden, Invalid
from nsnet.kernel.port_firewall import (
    EndpointPorts,
    FakePortRules,
    Hairpin,
    PortRule,
    base_plan,
    chains_plan,
    parse_elements,
    publish_plan,
    unpublish_plan,
)
from nsnet.model import Attachment, Container, Endpoint, IPAMPool, Network
from nsnet.testing.fake_kernel import FakeKernel
from nsnet.testing.fake_store import MemoryStore

GOLDEN = Path(__file__).parent / "golden_ports"
EP_ID = "e" * 12 + "0123456789abcdef" * 3 + "ffff"
NET_ID = "n" * 64
ADDR = "172.20.0.2"
HAIRPIN = Hairpin(NET_ID, "172.20.0.0/16")


def _check(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.nft"
    if os.environ.get("NSNET_REGOLD") == "1":
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with NSNET_REGOLD=1"
    assert text == path.read_text(), f"{path.name} differs (NSNET_REGOLD=1 to regenerate)"


def _rule(proto: str, host_ip: str, host_port: int, port: int) -> PortRule:
    return PortRule(proto, host_ip, host_port, ADDR, port)


CASES: dict[str, tuple[PortRule, ...]] = {
    "tcp_any_address": (_rule("tcp", "", 8080, 80),),
    "udp_any_address": (_rule("udp", "", 5353, 53),),
    "sctp_any_address": (_rule("sctp", "", 9000, 9000),),
    "tcp_loopback_only": (_rule("tcp", "127.0.0.1", 8080, 80),),
    "tcp_and_udp_same_port": (_rule("tcp", "", 8053, 53), _rule("udp", "", 8053, 53)),
    "range": tuple(_rule("tcp", "", 8000 + i, 80 + i) for i in range(3)),
    "mixed_addresses": (_rule("tcp", "", 8080, 80), _rule("tcp", "192.0.2.7", 8443, 443)),
}

ADDR6 = "fd00:20::2"
CASES6: dict[str, tuple[PortRule, ...]] = {
    "v6_any_address": (PortRule("tcp", "::", 8080, ADDR6, 80),
                       PortRule("udp", "::", 5353, ADDR6, 53)),
    "v6_one_address": (PortRule("tcp", "2001:db8:1::1", 8443, ADDR6, 443),),
}


def test_base_plan_golden() -> None:
    _check("base_v4", base_plan(4) + chains_plan((4,)))


def test_the_ipv6_hook_is_the_same_plan_with_another_family() -> None:
    """Dual stack adds its maps and rules by family, nothing else changes."""
    v6 = base_plan(6) + chains_plan((4, 6))
    _check("base_v4_v6", v6)
    assert "ports6" in v6 and "dnat ip6 to" in v6 and "@hairpin6" in v6
    ep = EndpointPorts(EP_ID, "fd00:20::2",
                       (PortRule("tcp", "", 8080, "fd00:20::2", 80),))
    assert "add element inet nsnet ports6 { tcp . 8080" in publish_plan([ep])


@pytest.mark.parametrize("case", sorted(CASES))
def test_publish_plan_golden(case: str) -> None:
    ep = EndpointPorts(EP_ID, ADDR, CASES[case])
    text = publish_plan([ep], [HAIRPIN]) + "# removal\n" + \
        "\n".join(unpublish_plan([ep], [HAIRPIN])) + "\n"
    _check(f"publish_{case}", text)
    # One element per rule plus the network's hairpin one, each removed by one command.
    assert text.count("add element") == len(CASES[case]) + 1
    assert text.count("delete element") == len(CASES[case]) + 1
    # A later container of the network adds and removes only its own elements.
    assert publish_plan([ep]).count("add element") == len(CASES[case])
    assert "hairpin4" not in publish_plan([ep]) + "".join(unpublish_plan([ep]))


@pytest.mark.parametrize("case", sorted(CASES6))
def test_publish_plan_golden_v6(case: str) -> None:
    """``[::]`` is IPv6's every address (the ``ports6`` map), one address the ``ports6_ip``
    map; the hairpin element is the network's IPv6 subnet."""
    ep = EndpointPorts(EP_ID, ADDR6, CASES6[case])
    hp = Hairpin(NET_ID, "fd00:20::/64")
    text = publish_plan([ep], [hp]) + "# removal\n" + \
        "\n".join(unpublish_plan([ep], [hp])) + "\n"
    _check(f"publish_{case}", text)
    assert text.count("add element") == len(CASES6[case]) + 1
    assert text.count("delete element") == len(CASES6[case]) + 1
    assert " ports4" not in text and "hairpin4" not in text


def test_no_golden_file_is_stale() -> None:
    wanted = {"base_v4.nft", "base_v4_v6.nft"} | {f"publish_{c}.nft" for c in CASES}
    wanted |= {f"publish_{c}.nft" for c in CASES6} | {"publish_routed_direct.nft"}
    assert {p.name for p in GOLDEN.glob("*.nft")} == wanted


@pytest.mark.parametrize("bad", [
    EndpointPorts(EP_ID, ADDR, (_rule("icmp", "", 1, 1),)),
    EndpointPorts(EP_ID, ADDR, (_rule("tcp", "", 0, 80),)),
    EndpointPorts(EP_ID, ADDR, (_rule("tcp", "", 80, 65536),)),
    EndpointPorts(EP_ID, ADDR, (_rule("tcp", "::1", 80, 80),)),
    EndpointPorts('x" ; flush ruleset', ADDR, ()),
])
def test_bad_specs_never_become_plan_text(bad: EndpointPorts) -> None:
    with pytest.raises(ValueError):
        publish_plan([bad])
    with pytest.raises(ValueError):
        publish_plan([], [Hairpin('n" ; flush ruleset', "172.20.0.0/16")])


def test_a_routed_family_opens_the_container_ports_to_direct_routing() -> None:
    """moby's routed mode: published container ports are reached at the container's own
    address; two host ports to one container port open it once."""
    ep = EndpointPorts(EP_ID, ADDR, (_rule("tcp", "", 8080, 80), _rule("tcp", "", 8081, 80),
                                     _rule("udp", "", 5353, 53)), direct=True)
    text = publish_plan([ep]) + "# removal\n" + "\n".join(unpublish_plan([ep])) + "\n"
    _check("publish_routed_direct", text)
    assert text.count("add element inet nsnet open4 { 172.20.0.2 . tcp . 80 comment") == 1
    assert text.count("delete element inet nsnet open4 {") == 2
    assert "open4" not in publish_plan([EndpointPorts(EP_ID, ADDR, ep.rules)])


def test_dual_stack_is_one_plan() -> None:
    """Both families of a container in one transaction: nothing half-published."""
    v4 = EndpointPorts(EP_ID, ADDR, (_rule("tcp", "", 8080, 80),))
    v6 = EndpointPorts(EP_ID, ADDR6, (PortRule("tcp", "::", 8080, ADDR6, 80),))
    plan = publish_plan([v4, v6], [HAIRPIN, Hairpin(NET_ID, "fd00:20::/64")])
    assert "ports4 { tcp . 8080" in plan and "ports6 { tcp . 8080" in plan
    assert "hairpin4 { 172.20.0.0/16 . 172.20.0.0/16 comment \"nsnet net nnnnnnnnnnnn\" }" \
        in plan and "hairpin6 { fd00:20::/64 . fd00:20::/64 comment" in plan


def test_elements_are_read_back_with_their_owner() -> None:
    listing = ('{"nftables": [{"map": {"name": "ports4", "elem": [[{"elem": {"val": {"concat":'
               ' ["tcp", 8080]}, "comment": "nsnet ep eeeeeeeeeeee"}}, {"concat": ['
               '"172.20.0.2", 80]}]]}}]}')
    [el] = parse_elements(listing, 4, "ports4")
    assert el.endpoint_id == "eeeeeeeeeeee"
    assert el.delete_command == "delete element inet nsnet ports4 { tcp . 8080 }"
    hp = ('{"nftables": [{"set": {"name": "hairpin4", "elem": [{"elem": {"val": {"concat": '
          '[{"prefix": {"addr": "172.20.0.0", "len": 16}}, {"prefix": {"addr": "172.20.0.0", '
          '"len": 16}}]}, "comment": "nsnet net nnnnnnnnnnnn"}}]}}]}')
    [el] = parse_elements(hp, 4, "hairpin4")
    assert (el.endpoint_id, el.network_id) == ("", "nnnnnnnnnnnn")
    assert el.delete_command == \
        "delete element inet nsnet hairpin4 { 172.20.0.0/16 . 172.20.0.0/16 }"


# -- parsing ---------------------------------------------------------------------------------


def test_port_bindings_are_read_into_moby_canonical_forms() -> None:
    got = port_bindings({"80": [{"HostPort": 8080}], "53/udp": None,
                         "90/tcp": [{"HostIp": "[127.0.0.1]", "HostPort": "8000-8010"}]})
    assert got == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}],
                   "53/udp": [{"HostIp": "", "HostPort": ""}],
                   "90/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000-8010"}]}
    assert exposed_ports({"443/tcp": {}, "80": {}}) == ["443/tcp", "80/tcp"]


@pytest.mark.parametrize("bad", [
    {"80/icmp": []}, {"0/tcp": []}, {"x": []}, {"80/tcp": {"HostPort": "1"}},
    {"80/tcp": [{"HostPort": "70000"}]}, {"80/tcp": [{"HostPort": "9-8"}]},
    {"80/tcp": [{"HostIp": "not-an-ip"}]}, {"80/tcp": ["8080"]},
])
def test_bad_port_bindings_are_400s(bad: dict[str, object]) -> None:
    with pytest.raises(Invalid):
        port_bindings(bad)


def _container(**kw: object) -> Container:
    c = Container(id="c" * 64, name="web", image="busybox", image_id="i", created="")
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_publish_all_adds_every_exposed_port_not_bound() -> None:
    c = _container(port_bindings={"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                   exposed_ports=["80/tcp", "443/tcp", "53/udp"], publish_all_ports=True)
    assert requests_of(c) == [PortRequest("tcp", 80, "", 8080, 8080),
                              PortRequest("udp", 53, "", 0, 0),
                              PortRequest("tcp", 443, "", 0, 0)]


def test_refusals_before_anything_is_made() -> None:
    bound = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    with pytest.raises(Invalid, match="network mode host"):
        check_request(_container(port_bindings=bound, network_mode="host"), [])
    with pytest.raises(Invalid, match="container type network mode"):
        check_request(_container(port_bindings=bound, network_mode="container:x"), [])
    internal = Network(id="n" * 64, name="back", driver="bridge", created="", internal=True)
    with pytest.raises(Forbidden, match="internal network back"):
        check_request(_container(port_bindings=bound, network_mode="back"), [internal])
    check_request(_container(network_mode="back"), [internal])  # nothing asked: fine


# -- reservations ----------------------------------------------------------------------------


def test_a_port_held_is_already_allocated_for_the_next_asker() -> None:
    res = Reservations()
    try:
        port = res.reserve(PortRequest("tcp", 80, "127.0.0.1", 0, 0))
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        assert lo <= port <= hi  # the kernel's ephemeral range
        with pytest.raises(Conflict, match=f"Bind for 127.0.0.1:{port} failed: port is "
                                           "already allocated"):
            res.reserve(PortRequest("tcp", 80, "127.0.0.1", port, port))
        # Another program cannot take it either, even with SO_REUSEADDR.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            s.bind(("127.0.0.1", port))
        s.close()
        # The same number over UDP is another port.
        assert res.reserve(PortRequest("udp", 53, "127.0.0.1", port, port)) == port
        # A range takes its next free port.
        assert res.reserve(PortRequest("tcp", 81, "127.0.0.1", port, port + 1)) == port + 1
        res.release("tcp", "127.0.0.1", port)
        assert res.reserve(PortRequest("tcp", 82, "127.0.0.1", port, port)) == port
    finally:
        res.close()
    assert res.held == {}


def test_a_port_another_program_holds_is_refused() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    res = Reservations()
    try:
        with pytest.raises(Conflict, match="port is already allocated"):
            res.reserve(PortRequest("tcp", 80, "127.0.0.1", port, port))
        assert res.held == {}
    finally:
        s.close()
        res.close()


# -- the use-case over the bridge driver ------------------------------------------------------


def _world(internal: bool = False) -> tuple[PublishedPorts, FakePortRules, Container, Network]:
    net = Network(id=NET_ID, name="app", driver="bridge", created="", internal=internal,
                  pools=[IPAMPool(subnet="172.20.0.0/16", gateway="172.20.0.1")],
                  driver_state={"bridge": "br-nnnnnnnnnnnn"})
    registry = Registry(MemoryStore())
    registry.networks[net.id] = net
    rules = FakePortRules()
    kernel = FakeKernel()
    drivers = {"bridge": BridgeDriver(kernel, rules)}
    ep = Endpoint(id=EP_ID, network_id=net.id, container_id="c" * 64, ifname="eth0",
                  mac="02:42:ac:14:00:02", ipv4=ADDR, ipv4_prefixlen=16,
                  gateway="172.20.0.1", default_route=True)
    c = _container(network_mode="app", attachments=[Attachment(net.id, endpoint=ep)],
                   port_bindings={"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
                                  "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
                   exposed_ports=["53/udp", "80/tcp", "443/tcp"])
    c.state.status = "running"
    return PublishedPorts(registry, drivers), rules, c, net


def test_publish_is_one_driver_change_and_unpublish_removes_exactly_it() -> None:
    svc, rules, c, _ = _world()
    undo = Undo()
    svc.publish(c, undo)
    assert len(rules.plans) == 1  # one transaction for the container
    [plan] = rules.plans
    assert plan.count("add element") == 3  # two ports and the hairpin element
    assert {(p["protocol"], p["container_port"]) for p in c.ports} == {("tcp", 80),
                                                                      ("udp", 53)}
    assert len(svc.reservations.held) == 2
    shown = ports_map(c)
    assert shown["443/tcp"] is None
    tcp = shown["80/tcp"]
    assert tcp is not None and tcp[0]["HostIp"] == "127.0.0.1"
    assert {"PrivatePort": 443, "Type": "tcp"} in ports_list(c)
    line = port_lines(shown, "80")
    assert line == [f"127.0.0.1:{tcp[0]['HostPort']}"]
    svc.unpublish(c)
    assert rules.published == {} and svc.reservations.held == {} and c.ports == []
    assert rules.plans[1].count("delete element") == 3
    svc.unpublish(c)  # idempotent
    assert len(rules.plans) == 2


def test_a_failed_start_undoes_the_ports() -> None:
    svc, rules, c, _ = _world()
    undo = Undo()
    svc.publish(c, undo)
    undo.rollback()
    assert rules.published == {} and svc.reservations.held == {}


def test_a_conflict_leaves_nothing_behind() -> None:
    svc, rules, c, _ = _world()
    first = Undo()
    svc.publish(c, first)
    port = int(c.ports[0]["host_port"])
    proto = c.ports[0]["protocol"]
    other = _container(id="d" * 64, network_mode="app", attachments=c.attachments,
                       port_bindings={f"{c.ports[0]['container_port']}/{proto}": [
                           {"HostIp": "127.0.0.1", "HostPort": str(port)}]})
    undo = Undo()
    with pytest.raises(Conflict, match=f"Bind for 127.0.0.1:{port} failed: port is already "
                                       "allocated"):
        try:
            svc.publish(other, undo)
        except BaseException:
            undo.rollback()
            raise
    assert len(rules.plans) == 1 and len(svc.reservations.held) == 2
    svc.unpublish(c)


def test_an_internal_network_refuses_at_start() -> None:
    svc, rules, c, _ = _world(internal=True)
    with pytest.raises(Forbidden, match="internal network app"):
        svc.publish(c, Undo())
    assert rules.plans == [] and svc.reservations.held == {}


def test_reconcile_binds_again_and_drops_strays() -> None:
    svc, rules, c, net = _world()
    svc.publish(c, Undo())
    svc.registry.containers[c.id] = c
    # A daemon restart: the sockets died with the process; a stray element is left.
    svc.reservations.close()
    stray = EndpointPorts("f" * 64, "172.20.0.9", (PortRule("tcp", "", 9999, "172.20.0.9", 80),))
    rules.publish([stray], [Hairpin("0" * 64, "172.30.0.0/16")])  # and a gone network's
    report: dict[str, object] = {}
    svc.reconcile(report)
    assert len(svc.reservations.held) == 2
    assert set(rules.published) == {EP_ID}
    assert list(rules.hairpins) == [(NET_ID, "172.20.0.0/16")]
    assert report["ports_removed"] == ["f" * 12]
    drv = svc.drivers["bridge"]
    assert isinstance(drv, BridgeDriver)
    assert drv.published(net) == {EP_ID: [PortMapping(p["protocol"], p["container_port"],
                                                      p["host_port"], p["host_ip"])
                                          for p in c.ports]}
    svc.unpublish(c)


def test_the_network_host_binding_address_is_the_default() -> None:
    """``-o com.docker.network.bridge.host_binding_ipv4=127.0.0.1``: a ``-p`` without an
    address publishes there, one with an address keeps it."""
    svc, rules, c, net = _world()
    net.options["com.docker.network.bridge.host_binding_ipv4"] = "127.0.0.1"
    c.port_bindings = {"80/tcp": [{"HostIp": "", "HostPort": ""}]}
    svc.publish(c, Undo())
    assert [p["host_ip"] for p in c.ports] == ["127.0.0.1"]
    assert "ports4_ip { 127.0.0.1 . tcp" in rules.plans[0]
    svc.unpublish(c)


def test_a_start_after_a_failed_teardown_publishes_afresh() -> None:
    svc, rules, c, _ = _world()
    svc.publish(c, Undo())
    svc.publish(c, Undo())  # the previous run's ports were never unpublished
    assert len(svc.reservations.held) == 2 and set(rules.published) == {EP_ID}
    assert len(rules.plans) == 3 and rules.plans[1].count("delete element") == 3
    svc.unpublish(c)


def test_a_disconnect_takes_the_endpoint_ports_along() -> None:
    """The hook a disconnect calls: the rules and sockets of that endpoint go at once, so the
    maps never point at an address IPAM may hand to another container."""
    svc, rules, c, _ = _world()
    svc.publish(c, Undo())
    svc.endpoint_leaving(c, c.attachments[0])
    assert rules.published == {} and svc.reservations.held == {} and c.ports == []
    svc.endpoint_leaving(c, c.attachments[0])  # nothing left: a no-op
    assert len(rules.plans) == 2


# -- IPv6 and dual stack ----------------------------------------------------------------------


def _dual_world(ipv4: bool = True) -> tuple[PublishedPorts, FakePortRules, Container]:
    svc, rules, c, _ = _world()
    ep = c.attachments[0].endpoint
    assert ep is not None
    ep.ipv6, ep.ipv6_prefixlen = ADDR6, 64
    if not ipv4:
        ep.ipv4, ep.ipv4_prefixlen = None, 0
    c.port_bindings = {"80/tcp": [{"HostIp": "", "HostPort": ""}]}
    return svc, rules, c


def test_a_port_without_host_address_is_published_on_both_families() -> None:
    """Docker's dual stack: ``-p 80`` is ``0.0.0.0:P`` and ``[::]:P``, the same ``P``, each
    held by its own socket (the IPv6 one IPV6_V6ONLY, so it does not hold the IPv4 port)."""
    svc, rules, c = _dual_world()
    svc.publish(c, Undo())
    assert sorted(p["host_ip"] for p in c.ports) == ["", "::"]
    [port] = {p["host_port"] for p in c.ports}
    [plan] = rules.plans  # one transaction for both families
    assert f"ports4 {{ tcp . {port} " in plan and f"ports6 {{ tcp . {port} comment" in plan
    assert f": {ADDR6} . 80" in plan and "fd00:20::/64 . fd00:20::/64" in plan
    v6 = svc.reservations.held[("tcp", "::", port)]
    assert v6.family == socket.AF_INET6
    assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    assert svc.reservations.held[("tcp", "", port)].family == socket.AF_INET
    shown = ports_map(c)
    assert shown["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(port)},
                               {"HostIp": "::", "HostPort": str(port)}]
    assert port_lines(shown, None) == [f"80/tcp -> 0.0.0.0:{port}", f"80/tcp -> [::]:{port}"]
    svc.unpublish(c)
    assert rules.published == {} and rules.hairpins == {} and svc.reservations.held == {}
    assert rules.plans[1].count("delete element") == 4  # two ports, two hairpin elements


def test_a_dual_stack_port_taken_on_one_family_is_already_allocated() -> None:
    svc, rules, c = _dual_world()
    other = socket.socket(socket.AF_INET6)
    other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    other.bind(("::", 0))
    other.listen(1)
    port = other.getsockname()[1]
    try:
        c.port_bindings = {"80/tcp": [{"HostIp": "", "HostPort": str(port)}]}
        with pytest.raises(Conflict, match=f"Bind for 0.0.0.0:{port} failed: port is already "
                                           "allocated"):
            svc.publish(c, Undo())
        assert svc.reservations.held == {} and rules.plans == []  # the IPv4 socket let go
        # A range moves both families to the next port free in both.
        c.port_bindings = {"80/tcp": [{"HostIp": "", "HostPort": f"{port}-{port + 1}"}]}
        svc.publish(c, Undo())
        assert {p["host_port"] for p in c.ports} == {port + 1}
        svc.unpublish(c)
    finally:
        other.close()


@pytest.mark.parametrize(("host_ip", "families"), [
    ("0.0.0.0", [""]), ("::", ["::"]), ("[::]", ["::"]), ("127.0.0.1", ["127.0.0.1"]),
])
def test_a_host_address_publishes_on_its_family_only(host_ip: str,
                                                      families: list[str]) -> None:
    svc, rules, c = _dual_world()
    c.port_bindings = {"80/tcp": [{"HostIp": host_ip, "HostPort": ""}]}
    svc.publish(c, Undo())
    assert [p["host_ip"] for p in c.ports] == families and len(rules.plans) == 1
    svc.unpublish(c)


def test_an_ipv6_only_network_publishes_on_ipv6_only() -> None:
    svc, rules, c = _dual_world(ipv4=False)
    svc.publish(c, Undo())
    assert [p["host_ip"] for p in c.ports] == ["::"] and "ports6 {" in rules.plans[0]
    svc.unpublish(c)
    c.port_bindings = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    with pytest.raises(Invalid, match="no IPv4 address on network app"):
        svc.publish(c, Undo())
    assert svc.reservations.held == {}


def test_an_ipv4_only_endpoint_refuses_an_ipv6_host_address() -> None:
    svc, rules, c, _ = _world()
    c.port_bindings = {"80/tcp": [{"HostIp": "2001:db8::1", "HostPort": "8080"}]}
    with pytest.raises(Invalid, match=r"cannot publish on \[2001:db8::1\]: the container has "
                                      "no IPv6 address"):
        svc.publish(c, Undo())
    assert rules.plans == [] and svc.reservations.held == {}


def test_the_ipv6_loopback_is_refused_with_the_reason() -> None:
    """The kernel drops a ::1-sourced packet leaving by a bridge (no route_localnet in IPv6):
    only moby's userland proxy serves ``[::1]``, and nsnet runs no proxy."""
    c = _container(port_bindings={"80/tcp": [{"HostIp": "::1", "HostPort": "8080"}]})
    with pytest.raises(Invalid, match="::1 is not supported: the kernel cannot DNAT"):
        check_request(c, [])
    c.port_bindings = {"80/tcp": [{"HostIp": "fe80::1", "HostPort": "8080"}]}
    with pytest.raises(Invalid, match="link-local address fe80::1 is not supported"):
        check_request(c, [])
    # The dead rule is not written: no masquerade for a ::1 source.
    assert "::1" not in chains_plan((4, 6)) and "127.0.0.0/8" in chains_plan((4, 6))



def test_reconcile_holds_both_families_again_and_republishes_them() -> None:
    svc, rules, c = _dual_world()
    svc.publish(c, Undo())
    svc.registry.containers[c.id] = c
    svc.reservations.close()  # a daemon restart: the sockets died with the process
    report: dict[str, object] = {}
    svc.reconcile(report)
    [port] = {p["host_port"] for p in c.ports}
    assert set(svc.reservations.held) == {("tcp", "", port), ("tcp", "::", port)}
    assert svc.reservations.held[("tcp", "::", port)].family == socket.AF_INET6
    assert f"ports6 {{ tcp . {port} " in rules.plans[-1]
    svc.unpublish(c)


def test_a_host_binding_default_of_0_0_0_0_keeps_dual_stack() -> None:
    """``host_binding_ipv4=0.0.0.0`` is moby's default spelled out: still both families;
    an IPv4 address there makes the ports IPv4-only (there is no IPv6 default to use)."""
    svc, rules, c = _dual_world()
    net = svc.registry.networks[c.attachments[0].network_id]
    net.options["com.docker.network.bridge.host_binding_ipv4"] = "0.0.0.0"
    svc.publish(c, Undo())
    assert sorted(p["host_ip"] for p in c.ports) == ["", "::"]
    svc.unpublish(c)
    net.options["com.docker.network.bridge.host_binding_ipv4"] = "127.0.0.1"
    svc.publish(c, Undo())
    assert [p["host_ip"] for p in c.ports] == ["127.0.0.1"]
    assert "ports4_ip { 127.0.0.1 . tcp" in rules.plans[-1] and "ports6" not in rules.plans[-1]
    svc.unpublish(c)


def test_the_hairpin_element_is_the_networks_first_to_last_publisher() -> None:
    """One hairpin element per network and family, not per container (a per-container one
    made every start's commit slower with the number of publishing containers): the first
    container to publish adds it, the last to go removes it, in their own transactions."""
    svc, rules, c, net = _world()
    assert c.attachments[0].endpoint is not None
    ep2 = Endpoint(id="f" * 64, network_id=net.id, container_id="d" * 64, ifname="eth0",
                   mac="02:42:ac:14:00:03", ipv4="172.20.0.3", ipv4_prefixlen=16,
                   gateway="172.20.0.1", default_route=True)
    c2 = _container(id="d" * 64, network_mode="app",
                    attachments=[Attachment(net.id, endpoint=ep2)],
                    port_bindings={"80/tcp": [{"HostIp": "", "HostPort": ""}]})
    c2.state.status = "running"
    svc.publish(c, Undo())
    svc.publish(c2, Undo())
    assert [p.count("hairpin4") for p in rules.plans] == [1, 0]
    assert list(rules.hairpins) == [(NET_ID, "172.20.0.0/16")]
    svc.unpublish(c)
    assert "hairpin4" not in rules.plans[-1]
    assert list(rules.hairpins) == [(NET_ID, "172.20.0.0/16")]
    svc.unpublish(c2)
    assert "delete element inet nsnet hairpin4 { 172.20.0.0/16 . 172.20.0.0/16 }" in \
        rules.plans[-1]
    assert rules.hairpins == {} and rules.published == {}
    # Reconcile after a restart: a network element nobody publishes in is a stray.
    rules.publish([], [HAIRPIN])
    report: dict[str, object] = {}
    svc.reconcile(report)
    assert rules.hairpins == {}
