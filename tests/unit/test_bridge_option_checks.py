"""Bridge network options and per-endpoint options, without root: what is taken, what is
refused (and with which words), and what the engine makes of them over the fake kernel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_engine_usecases import World

from nsnet.drivers.bridge import BridgeDriver, gateway_mode, host_binding_ipv4
from nsnet.engine.containers import ContainerCreate
from nsnet.engine.networks import NetworkCreate
from nsnet.engine.sandboxes import validate_endpoint_request
from nsnet.errors import Invalid
from nsnet.kernel.endpoint_sysctls import parse_endpoint_sysctls, sysctl_paths, write_sysctls
from nsnet.model import EndpointRequest, IPAMPool, Network
from nsnet.testing.fake_kernel import FakeKernel

B = "com.docker.network.bridge."
PREFIX = "com.docker.network.container_iface_prefix"
SYSCTLS = "com.docker.network.endpoint.sysctls"


def _net(**options: str) -> Network:
    return Network(id="ab" * 32, name="front", driver="bridge", created="",
                   pools=[IPAMPool(subnet="10.7.0.0/24", gateway="10.7.0.1")],
                   options=options)


def _validate(options: dict[str, str]) -> None:
    BridgeDriver(FakeKernel()).validate(_net(**options))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


# -- network options ---------------------------------------------------------------------------

def test_every_documented_option_is_taken() -> None:
    _validate({B + "name": "lab0", B + "enable_icc": "false",
               B + "enable_ip_masquerade": "true", B + "host_binding_ipv4": "127.0.0.1",
               B + "gateway_mode_ipv4": "routed", B + "gateway_mode_ipv6": "nat",
               B + "default_bridge": "false", "com.docker.network.driver.mtu": "1400",
               PREFIX: "lan", "com.docker.network.enable_ipv6": "false"})


@pytest.mark.parametrize("options,words", [
    ({"k": "v"}, "unknown bridge network option 'k'"),
    ({B + "inhibit_ipv4": "true"}, "unknown bridge network option"),
    ({B + "host_binding_ipv4": "localhost"}, "not an IP address"),
    ({B + "gateway_mode_ipv4": "natty"}, "must be one of nat, nat-unprotected, routed, "
                                          "isolated"),
    ({B + "gateway_mode_ipv6": "ROUTED"}, "must be one of nat"),
    ({B + "gateway_mode_ipv4": "isolated"}, "needs an internal network"),
    ({PREFIX: "eth/"}, "container_iface_prefix"),
    ({PREFIX: "averylongprefix"}, "container_iface_prefix"),
    ({PREFIX: "0eth"}, "container_iface_prefix"),
])
def test_bad_options_are_refused_not_ignored(options: dict[str, str], words: str) -> None:
    with pytest.raises(Invalid, match=words):
        _validate(options)


def test_every_gateway_mode_is_taken() -> None:
    for mode in ("nat", "nat-unprotected", "routed"):
        _validate({B + "gateway_mode_ipv4": mode, B + "gateway_mode_ipv6": mode})
    isolated = _net(**{B + "gateway_mode_ipv4": "isolated"})
    isolated.internal = True
    BridgeDriver(FakeKernel()).validate(isolated)


def test_an_isolated_family_puts_no_address_on_the_bridge() -> None:
    """``isolated``: the bridge has no gateway address in that family, so the host is not on
    the network (and the containers cannot reach the host)."""
    k = FakeKernel()
    net = _net(**{B + "gateway_mode_ipv4": "isolated"})
    net.internal = True
    net.pools.append(IPAMPool(subnet="fd00:7::/64", gateway="fd00:7::1"))
    BridgeDriver(k).create_network(net)
    [bridge] = [x for x in k.state.all_links() if x.kind == "bridge"]
    assert bridge.addresses == ["fd00:7::1/64"]


def test_option_accessors_and_their_defaults() -> None:
    assert host_binding_ipv4(_net()) == "0.0.0.0"
    assert host_binding_ipv4(_net(**{B + "host_binding_ipv4": "::1"})) == "::1"
    assert (gateway_mode(_net(), 4), gateway_mode(_net(), 6)) == ("nat", "nat")
    routed6 = _net(**{B + "gateway_mode_ipv6": "routed"})
    assert (gateway_mode(routed6, 4), gateway_mode(routed6, 6)) == ("nat", "routed")
    fw = BridgeDriver(FakeKernel()).firewall_of(routed6)
    assert (fw.routed4, fw.routed6) == (False, True)


def test_unknown_option_refused_by_network_create(world: World) -> None:
    before = world.snapshot()
    with pytest.raises(Invalid, match="unknown bridge network option"):
        world.run(world.engine.create_network(NetworkCreate(name="n", options={"x": "1"})))
    assert world.snapshot() == before


# -- container_iface_prefix -----------------------------------------------------------------

def test_interfaces_are_named_by_each_networks_prefix(world: World) -> None:
    world.run(world.engine.create_network(NetworkCreate(
        name="lan", pools=[IPAMPool(subnet="10.71.0.0/24")], options={PREFIX: "lan"})))
    world.run(world.engine.create_network(NetworkCreate(
        name="lan2", pools=[IPAMPool(subnet="10.72.0.0/24")], options={PREFIX: "lan"})))
    world.network("plain", "10.73.0.0/24")
    cid = world.running("c1", "lan")
    for net in ("plain", "lan2"):
        world.run(world.engine.connect(net, cid, EndpointRequest()))
    c = world.engine.registry.containers[cid]
    names = {world.engine.registry.networks[a.network_id].name: a.endpoint.ifname
             for a in c.attachments if a.endpoint is not None}
    # Numbered per prefix, as libnetwork does: lan0, lan1, and eth0 for the plain network.
    assert names == {"lan": "lan0", "lan2": "lan1", "plain": "eth0"}
    inside = {ln for ns, ln in world.kernel.objects().links if ns == c.sandbox_key}
    assert {"lan0", "lan1", "eth0"} <= inside


# -- com.docker.network.endpoint.sysctls ---------------------------------------------------

def test_sysctls_parse_moby_format() -> None:
    got = parse_endpoint_sysctls("net.ipv4.conf.IFNAME.log_martians=1,"
                                 "net.ipv6.conf.ifname.accept_ra=0, net.ipv4.neigh.IFNAME."
                                 "ucast_solicit=5")
    assert got == [("ipv4", "conf", "log_martians", "1"), ("ipv6", "conf", "accept_ra", "0"),
                   ("ipv4", "neigh", "ucast_solicit", "5")]
    assert sysctl_paths("lan0", "net.ipv4.conf.IFNAME.forwarding=1") == [
        ("net/ipv4/conf/lan0/forwarding", "1")]


@pytest.mark.parametrize("value", [
    "net.ipv4.conf.eth0.forwarding=1",          # the interface must be IFNAME
    "net.mpls.conf.IFNAME.input=1",             # not a family nsnet takes
    "net.ipv4.conf.all.forwarding=1",           # the whole namespace's, not the interface's
    "net.core.somaxconn.IFNAME.x=1",
    "net.ipv4.conf.IFNAME.forwarding",          # no value
    "net.ipv4.conf.IFNAME.../../../kernel/x=1",
    "net.ipv4.conf.IFNAME.forwarding=1\n2",
    "net.ipv4.route.IFNAME.flush=1",
    "kernel.ipv4.conf.IFNAME.forwarding=1",
])
def test_sysctls_refused_in_mobys_words(value: str) -> None:
    with pytest.raises(Invalid, match="unrecognised network interface sysctl"):
        parse_endpoint_sysctls(value)
    with pytest.raises(Invalid, match="invalid endpoint settings"):
        validate_endpoint_request(_net(), "front",
                                  EndpointRequest(driver_opts={SYSCTLS: value}))


def test_write_sysctls_under_a_root(tmp_path: Path) -> None:
    leaf = tmp_path / "net/ipv4/conf/eth1"
    leaf.mkdir(parents=True)
    (leaf / "forwarding").write_text("0")
    write_sysctls(sysctl_paths("eth1", "net.ipv4.conf.IFNAME.forwarding=1"), root=str(tmp_path))
    assert (leaf / "forwarding").read_text() == "1"
    with pytest.raises(Invalid, match="does not exist"):
        write_sysctls(sysctl_paths("eth1", "net.ipv4.conf.IFNAME.nosuch=1"), root=str(tmp_path))


def test_bad_sysctls_refused_at_create_before_anything(world: World) -> None:
    net = world.network("app", "10.74.0.0/24")
    before = world.snapshot()
    with pytest.raises(Invalid, match="unrecognised network interface sysctl"):
        world.engine.create_container(ContainerCreate(
            image="busybox", name="x", cmd=["true"], network_mode="app",
            endpoints={"app": EndpointRequest(driver_opts={SYSCTLS: "net.ipv4.conf.all.x=1"})}))
    assert world.snapshot() == before and net


def test_sysctls_written_in_the_sandbox_on_the_new_interface(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[tuple[str, list[tuple[str, str]]]] = []
    # The fake's call_in runs here: record instead of writing this process's /proc/sys.
    monkeypatch.setattr("nsnet.engine.sandboxes.write_sysctls",
                        lambda paths: written.append(("called", paths)))
    world.network("app", "10.75.0.0/24")
    c = world.engine.create_container(ContainerCreate(
        image="busybox", name="s", cmd=["sleep", "1"], network_mode="app",
        endpoints={"app": EndpointRequest(
            driver_opts={SYSCTLS: "net.ipv4.conf.IFNAME.log_martians=1"})}))
    world.run(world.engine.start_container(c.id))
    assert written == [("called", [("net/ipv4/conf/eth0/log_martians", "1")])]
    assert "call_in" in world.kernel.calls
